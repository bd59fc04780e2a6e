package handoff

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// adopt is what the new image of an upgraded baton does with a parked
// peer: a copy of its socket and its state, in a router of its own.
func adopt(t *testing.T, r *Router, p *Peer) *Peer {
	t.Helper()
	f, err := p.Conn().File()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return r.Adopt(c.(*net.UnixConn), p.State())
}

// While baton upgrades itself, its router's peers are parked: a
// connection a draining generation sends meanwhile stays in the socket,
// and the router of the new image, which adopts the peers with what they
// knew (the listeners each generation takes), passes it to the serving
// generation.
func TestRouter_pauseThenAdopt(t *testing.T) {
	r := NewRouter(hclog.NewNullLogger())
	old, cur := attach(t, r, 1), attach(t, r, 2)
	pOld, pCur := port(t, old, "http"), port(t, cur, "http")
	r.SetCurrent(cur.peer)
	resume := r.Pause()
	if st := cur.peer.State(); st.Gen != 2 || !slices.Equal(st.Takes, []string{"http"}) {
		t.Fatalf("the serving peer's state: %+v", st)
	}
	client, server := tcpPair(t)
	send(t, pOld, server)
	select {
	case a := <-arrivals(pCur):
		t.Fatalf("a parked router passed a connection on: %v", a)
	case <-time.After(50 * time.Millisecond): // nothing may come; not a synchronisation
	}

	// The new image: the old one's readers are gone (here: their
	// sockets closed, then let go, so that they end).
	// The serving generation first: the others' readers may pass it
	// connections at once.
	r2 := NewRouter(hclog.NewNullLogger())
	a2 := adopt(t, r2, cur.peer)
	r2.SetCurrent(a2)
	a1 := adopt(t, r2, old.peer)
	old.peer.conn.Close()
	cur.peer.conn.Close()
	resume()
	<-old.peer.Done()
	<-cur.peer.Done()

	a := next(t, pCur)
	defer a.Conn.Close()
	if a.Returned {
		t.Fatal("want the connection moved to the serving generation, have it returned")
	}
	io.WriteString(client, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a.Conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the moved connection: %q %v", buf, err)
	}
	if !pOld.Drain(5 * time.Second) {
		t.Fatal("the adopted router did not answer the old generation's DRAIN with HANDOVER")
	}
	// The generations end: so do the adopted peers' readers.
	pOld.Close()
	pCur.Close()
	old.end.Close()
	cur.end.Close()
	<-a1.Done()
	<-a2.Done()
}

// arrivals reports the next connection that arrives at p, if any.
func arrivals(p *Port) <-chan Arrival {
	c := make(chan Arrival, 1)
	go func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.queue) > 0 {
			c <- p.queue[0]
		}
	}()
	return c
}
