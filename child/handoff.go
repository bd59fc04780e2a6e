package child

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/handoff"
	"golang.org/x/sys/unix"
)

// handoffState is a Server's part in moving idle connections between
// generations: the port of its listener on the process's handoff socket,
// and every plaintext connection it serves, wrapped so that it can tell
// whether the server read a byte of a next request.
//
// A connection moves only when the server's read of it was stopped with
// nothing read since it became idle (or new), into an empty buffer: then
// no byte of a next request is in this process, and the kernel's socket
// holds whatever the client sends meanwhile, for whoever owns it next.
// Everything else finishes under the drain, as without baton.
type handoffState struct {
	port *handoff.Port
	// idleTimeout bounds the wait of a connection passed in for its first
	// byte, as http.Server bounds an idle one (0: no bound).
	idleTimeout time.Duration

	moving atomic.Bool // the drain was told HANDOVER

	mu    sync.Mutex
	conns map[*movableConn]struct{}

	moved, drained, returned atomic.Int64
	draining                 *atomic.Bool // the Server's
}

// openPort opens the port of the server's listener on the process's
// handoff socket, when it has one, the switch is on and srv does not
// serve TLS; otherwise it returns nil. New calls it, so that baton's
// acknowledgement of the HELLO comes while the application starts up,
// not between serving and READY=1.
func (s *Server) openPort(srv *http.Server) *handoff.Port {
	if s.cfg.DisableIdleHandoff || s.endpoint == nil || servesTLS(srv) {
		return nil
	}
	port, err := s.endpoint.Open(s.cfg.Listener, s.ln.Addr())
	if err != nil {
		s.log.Warn("idle connections cannot move to the next generation; they will drain", "error", err)
		return nil
	}
	return port
}

// openHandoff returns the server's part in moving idle connections: with
// the port New opened (or opens now), when the server serves plaintext
// and the switch is on; otherwise nil, and connections drain as before.
func (s *Server) openHandoff(srv *http.Server) *handoffState {
	port := s.port
	if servesTLS(srv) {
		if port != nil {
			// A TLSConfig set after New: take the HELLO back (DRAIN),
			// so that baton never passes this process a connection.
			port.Drain(s.cfg.CloseTimeout)
			port.Close()
		}
		return nil
	}
	if port == nil {
		if port = s.openPort(srv); port == nil {
			return nil
		}
	}
	idle := srv.IdleTimeout
	if idle == 0 {
		idle = srv.ReadTimeout
	}
	return &handoffState{port: port, idleTimeout: idle, conns: map[*movableConn]struct{}{}, draining: &s.draining}
}

// servesTLS reports whether srv serves TLS (see tlsListener).
func servesTLS(srv *http.Server) bool {
	if srv == nil {
		return false
	}
	c := srv.TLSConfig
	return c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil)
}

// wrap makes c movable, unless it is not a socket of this process.
func (h *handoffState) wrap(c net.Conn, movedIn, pinned bool) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	mc := &movableConn{Conn: c, raw: raw, h: h, idle: true, movedIn: movedIn, pinned: pinned}
	if movedIn {
		// Until its first byte, the idle timeout: none, or the server's.
		if h.idleTimeout > 0 {
			mc.applied = time.Now().Add(h.idleTimeout)
		}
		c.SetReadDeadline(mc.applied) // also clears a stop's deadline of a connection that comes back
	}
	h.mu.Lock()
	h.conns[mc] = struct{}{}
	h.mu.Unlock()
	return mc
}

// state follows http.Server's ConnState: a new or idle connection may
// move; once the server is told to hand over, it is stopped at once.
func (h *handoffState) state(c net.Conn, st http.ConnState) {
	mc, ok := c.(*movableConn)
	if !ok {
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		mc.markIdle()
		if h.moving.Load() || mc.isShared() {
			mc.stop()
		}
	case http.StateActive:
		mc.markActive()
	case http.StateHijacked:
		mc.pin() // the handler's now
	}
}

// closesAfter reports whether the response to r, written during the
// drain, asks its client to close the connection: unless the connection
// moves once idle, to the next generation, where the client goes on.
func (s *Server) closesAfter(r *http.Request) bool {
	h := s.hand
	if h == nil || !h.moving.Load() {
		return true
	}
	c, ok := r.Context().Value(connKey{}).(*movableConn)
	return !ok || c.isPinned()
}

// share gives the generation that bakes beside this one half of this
// process's connections, as the drain gives all of them to the next one:
// each is stopped once idle, with nothing of a next request read, and
// passed on; baton sends it to the generation baking. The clients see
// nothing. Connections made afterwards stay; a busy one goes when its
// response ended. It returns how many it picked.
func (h *handoffState) share() int {
	h.mu.Lock()
	var cs []*movableConn
	i := 0
	for c := range h.conns { // a map's order: which half is chance
		if i++; i%2 == 1 && c.markShared() {
			cs = append(cs, c)
		}
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.stop() // an idle one now; a busy one once idle (state)
	}
	return len(cs)
}

// watchShares shares connections each time baton says a new generation
// bakes beside this one, until stop is closed.
func (s *Server) watchShares(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-s.hand.port.Shared():
			n := s.hand.share()
			s.log.Info("a new generation bakes beside this one: half of the connections move to it", "connections", n)
		}
	}
}

// markShared marks c to move to the generation baking, unless it never
// moves; it reports whether it did.
func (c *movableConn) markShared() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned || c.closed {
		return false
	}
	c.shared = true
	return true
}

func (c *movableConn) isShared() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shared
}

func (c *movableConn) isPinned() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pinned
}

// moveIdle stops every idle connection; each leaves for the next
// generation as its server lets it go. Connections that become idle
// later (their response ended) follow. h.moving is set.
func (h *handoffState) moveIdle() {
	h.mu.Lock()
	cs := make([]*movableConn, 0, len(h.conns))
	for c := range h.conns {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
}

func (h *handoffState) forget(c *movableConn, moved bool) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	if !moved && h.draining.Load() {
		h.drained.Add(1)
	}
}

// send passes c's descriptor on. When baton is gone, the connection
// comes back to this server instead, never closed for nothing.
func (h *handoffState) send(c *movableConn) bool {
	var serr error
	err := c.raw.Control(func(fd uintptr) { serr = h.port.Send(int(fd)) })
	if err == nil && serr == nil {
		c.Conn.Close() // the in-flight message holds the socket: no FIN
		h.moved.Add(1)
		return true
	}
	return h.port.Requeue(c.Conn) // counted as returned when it arrives
}

// arrivals is the listener of the connections passed to this process.
type arrivals struct{ h *handoffState }

func (a arrivals) Accept() (net.Conn, error) {
	ar, err := a.h.port.Next()
	if err != nil {
		return nil, err
	}
	if ar.Returned {
		a.h.returned.Add(1)
	}
	return a.h.wrap(ar.Conn, true, ar.Returned), nil
}

func (a arrivals) Close() error   { return a.h.port.Close() }
func (a arrivals) Addr() net.Addr { return a.h.port.Addr() }

// movingListener wraps the connections its listener accepts.
type movingListener struct {
	net.Listener
	h *handoffState
}

func (l movingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.h.wrap(c, false, false), nil
}

// errMoved is what the server's read of a connection that moves returns:
// a timeout, which http.Server takes for a quiet end (no reply).
var errMoved = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

// h2cPreface is how an HTTP/2 client without TLS begins (RFC 9113, 3.4),
// as far as it tells it from HTTP/1.1: the method.
var h2cPreface = []byte("PRI")

// aLongTimeAgo stops a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// movableConn is a plaintext connection the server reads through. It
// sees every read of http.Server (the server reads only through the
// net.Conn it accepted), and so knows whether a read began into an empty
// buffer since the connection became idle and returned no byte.
type movableConn struct {
	net.Conn
	raw syscall.RawConn
	h   *handoffState

	mu sync.Mutex
	// bufSize is the length of the server's first read, made into its
	// empty buffer; a later read of that length begins into an empty
	// buffer too (net/http reads through a bufio.Reader, whose read
	// asks for the room it has).
	bufSize int
	idle    bool // new or idle, and no read began since
	// waiting: the read under way (or the next) is the first of an idle
	// period, into an empty buffer, and returned nothing yet.
	waiting  bool
	inRead   bool
	reads    uint64     // reads begun: stop waits for one read, not the next
	readDone *sync.Cond // signalled when a read returns, for stop
	stopping bool       // asked to move: its idle read is being stopped
	move     bool       // stopped with nothing read: Close passes it on
	pinned   bool       // never moves: it came back, was hijacked, or speaks h2c
	shared   bool       // moves to the generation baking once idle
	closed   bool
	spoke    bool // the client's first bytes were read
	// movedIn: passed in from the previous generation, no byte read
	// yet. The server's header timeout starts at the first byte, as it
	// does on an idle connection.
	movedIn bool
	applied time.Time // the read deadline in force for the server
	hdrAt   time.Time // movedIn: when the server asked for hdr
	hdr     time.Time // movedIn: the deadline it asked for
}

func (c *movableConn) markIdle() {
	c.mu.Lock()
	c.idle, c.waiting = true, false
	c.mu.Unlock()
}

func (c *movableConn) markActive() {
	c.mu.Lock()
	c.idle, c.waiting = false, false
	c.mu.Unlock()
}

func (c *movableConn) pin() {
	c.mu.Lock()
	c.pinned = true
	c.mu.Unlock()
}

// stop asks an idle connection to move: its read in progress (or its
// next) returns at once with nothing read. A busy one stays. When a read
// was in progress, stop waits until it returned: a byte the client sends
// after stop returned is not read by this process (a read system call
// already under way could take it, past the deadline). It waits for that
// read only: when the read took bytes after all, the stop was given up,
// and the server's next read, under its own deadline, may wait for the
// client as long as it likes without holding up the drain.
func (c *movableConn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned || c.closed || c.stopping || c.move || !(c.idle || (c.inRead && c.waiting)) {
		return
	}
	c.stopping = true
	if c.inRead {
		c.Conn.SetReadDeadline(aLongTimeAgo)
		if c.readDone == nil {
			c.readDone = sync.NewCond(&c.mu)
		}
		for r := c.reads; c.inRead && c.reads == r; {
			c.readDone.Wait()
		}
	}
}

// unstopLocked gives up a stop that came too late (a byte came first):
// the server's own deadline comes back.
func (c *movableConn) unstopLocked() {
	c.stopping = false
	c.Conn.SetReadDeadline(c.applied)
}

func (c *movableConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.bufSize == 0 {
		c.bufSize = len(p)
	}
	if c.idle {
		c.idle = false
		c.waiting = len(p) == c.bufSize
	}
	if c.stopping {
		if c.waiting && !c.pinned {
			c.move = true
			c.mu.Unlock()
			return 0, errMoved
		}
		c.unstopLocked()
	}
	first := c.movedIn && c.waiting
	c.inRead = true
	c.reads++
	c.mu.Unlock()

	var n int
	var err error
	if first {
		err = c.waitFirstByte()
	}
	if err == nil {
		n, err = c.Conn.Read(p)
	}

	c.mu.Lock()
	c.inRead = false
	if c.readDone != nil {
		c.readDone.Broadcast()
	}
	if n > 0 {
		if !c.spoke {
			// HTTP/2 without TLS (h2c) begins with "PRI * HTTP/2.0",
			// a method no HTTP/1.1 request has. Its frames mean nothing
			// to the next generation as HTTP/1.1, and GOAWAY closes it.
			// (A first read shorter than "PRI" is taken for HTTP/1.1.)
			c.spoke = true
			c.pinned = c.pinned || bytes.HasPrefix(p[:n], h2cPreface)
		}
		c.waiting, c.movedIn = false, false
	}
	if c.stopping {
		var ne net.Error
		if c.waiting && n == 0 && errors.As(err, &ne) && ne.Timeout() && !c.pinned {
			c.move = true
		} else {
			c.unstopLocked()
		}
	}
	c.mu.Unlock()
	return n, err
}

// waitFirstByte waits, under the idle timeout, until a connection passed
// in has a byte to read, without taking it; then the server's header
// deadline starts.
func (c *movableConn) waitFirstByte() error {
	var b [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		_, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return e != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.movedIn = false
	c.applied = time.Time{}
	if !c.hdr.IsZero() {
		c.applied = time.Now().Add(c.hdr.Sub(c.hdrAt))
	}
	if !c.stopping {
		c.Conn.SetReadDeadline(c.applied)
	}
	return nil
}

func (c *movableConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.movedIn {
		c.hdr, c.hdrAt = t, time.Now()
		return nil
	}
	c.applied = t
	if c.stopping {
		return nil // the stop's deadline stays until its read returned
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *movableConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// Close passes a connection that was stopped with nothing read on to the
// next generation; any other it closes.
func (c *movableConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.Conn.Close()
	}
	c.closed = true
	move := c.move
	c.mu.Unlock()
	moved := move && c.h.send(c)
	c.h.forget(c, moved)
	if moved {
		return nil
	}
	return c.Conn.Close()
}

// CloseWrite keeps http.Server's half-close of a connection it rejects.
func (c *movableConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps sendfile for responses copied from files.
func (c *movableConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// NetConn returns the connection of the operating system under c.
func (c *movableConn) NetConn() net.Conn { return c.Conn }
