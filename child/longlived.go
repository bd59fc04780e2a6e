package child

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
)

// ErrDraining is the cause of a context from DrainContext that was
// cancelled because the drain began, rather than because the client went
// away: context.Cause(ctx) tells the two apart.
var ErrDraining = errors.New("child: draining: say goodbye and let the client reconnect")

type serverKey struct{}

// connKey holds the connection of a request, set by the server's
// ConnContext: once per connection, never per request.
type connKey struct{}

// DrainContext returns a copy of ctx that is also cancelled, with cause
// ErrDraining, when the drain of the Server that serves ctx begins. It is
// the one signal a long-lived handler (a WebSocket, a Server-Sent Events
// stream, a long poll) needs: when it fires, send the protocol's goodbye
// (WebSocket Close 1001 Going Away, an SSE "retry:" with the last event
// id) and return, and the client reconnects to the next generation.
//
// ctx is a request's context, r.Context(), or one derived from it; the
// copy ends with the request. A ctx that no Server serves is returned
// unchanged. Plain requests need not call it: they finish under the drain
// as they are.
//
// The HTTP/1.1 connection of a request that was told is closed as soon as
// its response ends, rather than kept for the client's next request: the
// response began before the drain, without "Connection: close", and the
// client, which is about to reconnect, would otherwise reuse it to reach
// this draining process once more. An HTTP/2 connection got GOAWAY when
// the drain began; it closes once its streams ended and were sent.
func DrainContext(ctx context.Context) context.Context {
	s, ok := ctx.Value(serverKey{}).(*Server)
	if !ok {
		return ctx
	}
	out, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.drainCtx, func() {
		if c, ok := ctx.Value(connKey{}).(net.Conn); ok {
			s.conns.closeWhenIdle(c)
		}
		cancel(ErrDraining)
	})
	// Forget the drain's callback when the request ends first, so that
	// a server with many short long-polls holds nothing for them.
	context.AfterFunc(out, func() { stop() })
	return out
}

// hijackedConn is a connection a handler took over (a WebSocket). It
// stays in the drain's connection count until the handler closes it.
type hijackedConn struct {
	net.Conn
	conns *connCounter
	raw   net.Conn
	once  sync.Once
}

func (c *hijackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.conns.release(c.raw) })
	return err
}

// configureHTTP2 sets up srv's HTTP/2 (over TLS, and h2c when
// srv.Protocols enables it) so that the drain can send GOAWAY to every
// HTTP/2 connection at its start, and returns the function that does so,
// or nil when srv does not serve HTTP/2 or its application set up its
// own protocols (srv.TLSNextProto).
//
// http.Server runs the HTTP/2 server's graceful-shutdown hook only from
// Shutdown, which also closes idle HTTP/1.1 connections at once: the race
// with clients sending on them that the drain exists to avoid. So the
// HTTP/2 server is configured on a second http.Server, which holds the
// hook and nothing else, and its protocol handlers are given to srv (they
// take the serving http.Server as an argument). Shutdown of the holder,
// which has no listener and no connection of its own, only sends the
// GOAWAYs: clients finish their streams in flight and open their next
// ones on a new connection, to the next generation.
func configureHTTP2(srv *http.Server) (goaway func()) {
	if srv.TLSNextProto != nil {
		return nil
	}
	if p := srv.Protocols; p != nil && !p.HTTP2() && !p.UnencryptedHTTP2() {
		return nil
	}
	holder := &http.Server{Protocols: srv.Protocols, IdleTimeout: srv.IdleTimeout, ReadTimeout: srv.ReadTimeout}
	// Serve configures HTTP/2 on holder, then returns at once: the
	// listener fails its first Accept.
	holder.Serve(failingListener{})
	if _, ok := holder.TLSNextProto["h2"]; !ok {
		return nil
	}
	srv.TLSNextProto = holder.TLSNextProto
	return func() { holder.Shutdown(context.Background()) }
}

// failingListener is a listener that is closed from the start.
type failingListener struct{}

func (failingListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (failingListener) Close() error              { return nil }
func (failingListener) Addr() net.Addr            { return &net.TCPAddr{} }

// tlsListener wraps l in TLS when srv has a TLS configuration with a
// certificate, offering HTTP/2 when srv serves it; otherwise it returns
// l.
func tlsListener(l net.Listener, srv *http.Server) net.Listener {
	c := srv.TLSConfig
	if c == nil || (len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil) {
		return l
	}
	c = c.Clone()
	_, h2 := srv.TLSNextProto["h2"]
	if h2 && (srv.Protocols == nil || srv.Protocols.HTTP2()) && !slices.Contains(c.NextProtos, "h2") {
		c.NextProtos = append([]string{"h2"}, c.NextProtos...)
	}
	if !slices.Contains(c.NextProtos, "http/1.1") {
		c.NextProtos = append(c.NextProtos, "http/1.1")
	}
	return tls.NewListener(l, c)
}
