package supervisor

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/baton-run/baton/internal/pause"
)

// upgradeServersWait bounds the wait for the requests baton's own
// servers have under way before the exec of an upgrade (a `baton logs
// -f` never ends).
const upgradeServersWait = time.Second

// ownServers are baton's own HTTP servers: the control socket, metrics
// and health. Before the exec of an upgrade they stop accepting, and the
// requests they accepted are answered; their sockets stay open, so the
// connections that come meanwhile wait in the backlog for the new image:
// a load balancer's /readyz or a CLI never meets a connection cut by the
// exec. Only idle keep-alive connections are cut, which clients open
// again (Go's Transport retries an idempotent request on one).
//
// Not http.Server.Shutdown: it drops a request it reads after the
// shutdown began, on a connection it had accepted.
type ownServers struct {
	mu   sync.Mutex
	list []*ownServer
}

type ownServer struct {
	served net.Listener  // what serve got
	held   *heldListener // inside it
	mu     sync.Mutex
	conns  map[net.Conn]http.ConnState // accepted and not closed
	change chan struct{}               // closed and replaced when conns changes
}

// heldListener is a listener whose Accept parks while an upgrade holds
// it: a read deadline in the past wakes an Accept under way.
type heldListener struct {
	net.Listener
	pause *pause.Reader
}

func (l *heldListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil && l.pause.Park(err) {
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			l.pause.End()
		}
		return c, err
	}
}

// serveOwn serves l with serve, which reports its server (started), on a
// background goroutine.
func (s *Supervisor) serveOwn(l net.Listener, serve func(net.Listener)) {
	e := &ownServer{conns: map[net.Conn]http.ConnState{}, change: make(chan struct{})}
	inner := l
	if pl, ok := l.(*peerListener); ok {
		inner = pl.Listener
	}
	deadline := func(time.Time) error { return nil }
	if d, ok := inner.(interface{ SetDeadline(time.Time) error }); ok {
		deadline = d.SetDeadline
	}
	e.held = &heldListener{Listener: inner, pause: pause.New(deadline)}
	e.served = e.held
	if pl, ok := l.(*peerListener); ok {
		e.served = &peerListener{Listener: e.held, uid: pl.uid, root: pl.root}
	}
	s.own.mu.Lock()
	s.own.list = append(s.own.list, e)
	s.own.mu.Unlock()
	s.background(func() { serve(e.served) })
}

// started follows the connections of srv, which serves l; call it
// before srv.Serve.
func (o *ownServers) started(l net.Listener, srv *http.Server) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.list {
		if e.served == l {
			srv.ConnState = e.track
		}
	}
}

func (e *ownServer) track(c net.Conn, st http.ConnState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(e.conns, c)
	} else {
		e.conns[c] = st
	}
	close(e.change)
	e.change = make(chan struct{})
}

// busy reports whether a connection it accepted waits for its request or
// is being answered, and the channel that tells the next change.
func (e *ownServer) busy() (bool, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, st := range e.conns {
		if st == http.StateNew || st == http.StateActive {
			return true, e.change
		}
	}
	return false, e.change
}

// holdServers stops baton's own servers from accepting and waits, up to
// upgradeServersWait, until what they accepted was answered; release lets
// them accept again, when the exec failed.
func (s *Supervisor) holdServers() (release func()) {
	s.own.mu.Lock()
	list := append([]*ownServer(nil), s.own.list...)
	s.own.mu.Unlock()
	for _, e := range list {
		<-e.held.pause.Pause()
	}
	deadline := time.After(upgradeServersWait)
	for _, e := range list {
		for {
			busy, change := e.busy()
			if !busy {
				break
			}
			select {
			case <-change:
				continue
			case <-deadline:
			}
			break
		}
	}
	return func() {
		for _, e := range list {
			e.held.pause.Resume()
		}
	}
}
