package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gen is one generation of a test: baton's peer and the process's
// endpoint, in this process.
type gen struct {
	peer *Peer
	end  *Endpoint
}

func attach(t *testing.T, r *Router, n int) *gen {
	t.Helper()
	peer, f, err := r.Attach(n)
	if err != nil {
		t.Fatal(err)
	}
	end, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		end.Close()
		peer.Release()
		<-peer.Done()
	})
	return &gen{peer, end}
}

func port(t *testing.T, g *gen, listener string) *Port {
	t.Helper()
	p, err := g.end.Open(listener, &net.TCPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitAck(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// tcpPair returns a connected client and the server side's descriptor
// (a dup: the caller closes it).
func tcpPair(t *testing.T) (client net.Conn, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); s.Close() })
	return client, s.(*net.TCPConn)
}

// send passes c's descriptor through p and closes c, as a draining
// server does.
func send(t *testing.T, p *Port, c *net.TCPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = p.Send(int(fd)) }); err != nil || serr != nil {
		t.Fatalf("send: %v %v", err, serr)
	}
	c.Close()
}

func next(t *testing.T, p *Port) Arrival {
	t.Helper()
	got := make(chan Arrival, 1)
	go func() {
		a, err := p.Next()
		if err == nil {
			got <- a
		}
		close(got)
	}()
	select {
	case a, ok := <-got:
		if !ok {
			t.Fatal("port closed")
		}
		return a
	case <-time.After(10 * time.Second):
		p.Close()
		<-got
		t.Fatal("no connection arrived")
		return Arrival{}
	}
}

// moves sends server's end of a connection on from's port, has the
// client write "ping", and returns the connection as it arrived on to's
// port, once "ping" was read from it there.
func moves(t *testing.T, client net.Conn, server *net.TCPConn, from, to *Port) Arrival {
	t.Helper()
	send(t, from, server)
	io.WriteString(client, "ping")
	a := next(t, to)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a.Conn, buf); err != nil || string(buf) != "ping" {
		a.Conn.Close()
		t.Fatalf("port %s read %q, %v", to.name, buf, err)
	}
	return a
}

// shared waits for SHARE on p.
func shared(t *testing.T, p *Port) {
	t.Helper()
	select {
	case <-p.Shared():
	case <-time.After(10 * time.Second):
		t.Fatalf("port %s: no SHARE", p.name)
	}
}

// The connection a draining generation sends arrives at the serving one,
// which talks to the same client; the bytes the client sent meanwhile
// are there.
func TestRouter_movesToTheServingGeneration(t *testing.T) {
	r := NewRouter(hclog.NewNullLogger())
	old, cur := attach(t, r, 1), attach(t, r, 2)
	pOld, pCur := port(t, old, "http"), port(t, cur, "http")
	r.SetCurrent(cur.peer)
	if !pOld.Drain(5 * time.Second) {
		t.Fatal("want HANDOVER: generation 2 serves http")
	}
	client, server := tcpPair(t)
	a := moves(t, client, server, pOld, pCur)
	defer a.Conn.Close()
	if a.Returned {
		t.Fatal("a moved connection arrived as returned")
	}
	io.WriteString(a.Conn, "pong")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
}

// Share reaches the port of every listener the generation said HELLO
// for; a nil peer (a generation without a handoff socket) shares
// nothing.
func TestPeer_share(t *testing.T) {
	r := NewRouter(hclog.NewNullLogger())
	g := attach(t, r, 1)
	http, admin := port(t, g, "http"), port(t, g, "admin")
	var none *Peer
	none.Share()
	g.peer.Share()
	for _, p := range []*Port{http, admin} {
		shared(t, p)
	}
}

// While a generation bakes, what the serving one passes on (the half it
// shares, told by SHARE) goes to the generation baking; once the bake is
// over (no generation baking), it comes back to the serving one.
func TestRouter_sharesWithTheBakingGeneration(t *testing.T) {
	r := NewRouter(hclog.NewNullLogger())
	cur, bak := attach(t, r, 1), attach(t, r, 2)
	pCur, pBak := port(t, cur, "http"), port(t, bak, "http")
	r.SetCurrent(cur.peer)
	r.SetBaking(bak.peer)
	cur.peer.Share()
	shared(t, pCur)
	client, server := tcpPair(t)
	moves(t, client, server, pCur, pBak).Conn.Close()

	r.SetBaking(nil)
	_, server2 := tcpPair(t)
	send(t, pCur, server2)
	back := next(t, pCur)
	back.Conn.Close()
}

// KEEP when nothing else serves the listener: a final stop, a serving
// generation that did not say HELLO for it, or the asker serving itself.
func TestRouter_keepWithoutSuccessor(t *testing.T) {
	r := NewRouter(hclog.NewNullLogger())
	a, b := attach(t, r, 1), attach(t, r, 2)
	pa := port(t, a, "http")
	port(t, b, "admin")
	r.SetCurrent(nil)
	if pa.Drain(5 * time.Second) {
		t.Fatal("no serving generation: want KEEP")
	}
	pa2 := port(t, a, "web")
	r.SetCurrent(b.peer)
	if pa2.Drain(5 * time.Second) {
		t.Fatal("the serving generation does not serve web: want KEEP")
	}
	pb := port(t, b, "http")
	r.SetCurrent(b.peer)
	if pb.Drain(5 * time.Second) {
		t.Fatal("the serving generation asking for itself: want KEEP")
	}
}

// A connection sent when no generation takes it any more (the serving
// one died) comes back to its sender, marked returned; a descriptor that
// is not a stream socket is closed, never passed on.
func TestRouter_returnsToSender(t *testing.T) {
	r := NewRouter(hclog.NewNullLogger())
	old, cur := attach(t, r, 1), attach(t, r, 2)
	pOld := port(t, old, "http")
	port(t, cur, "http")
	r.SetCurrent(cur.peer)
	if !pOld.Drain(5 * time.Second) {
		t.Fatal("want HANDOVER")
	}
	r.SetCurrent(nil) // the successor is gone
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if err := pOld.Send(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	f.Close()
	client, server := tcpPair(t)
	send(t, pOld, server)
	a := next(t, pOld)
	defer a.Conn.Close()
	if !a.Returned {
		t.Fatal("want the connection back as returned")
	}
	io.WriteString(client, "x")
	buf := make([]byte, 1)
	if _, err := io.ReadFull(a.Conn, buf); err != nil {
		t.Fatal(err)
	}
}

// endpoint returns a process's endpoint and baton's end of its socket,
// with no router: the test plays baton.
func endpoint(t *testing.T) (*net.UnixConn, *Endpoint) {
	t.Helper()
	peerConn, f, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return peerConn, e
}

// Without baton (its end closed) a port's drain says KEEP at once and a
// new port cannot open.
func TestEndpoint_batonGone(t *testing.T) {
	peerConn, e := endpoint(t)
	// A fake baton that acknowledges one HELLO, then dies.
	go func() {
		buf, oob := NewBuffers()
		if m, err := Receive(peerConn, buf, oob); err == nil {
			Send(peerConn, Message{Kind: Ack, Listener: m.Listener, FD: -1})
		}
		peerConn.Close()
	}()
	p, err := e.Open("http", &net.TCPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitAck(time.Minute); err != nil {
		t.Fatal(err)
	}
	if p.Drain(time.Minute) {
		t.Fatal("baton gone: want KEEP")
	}
	if err := p.WaitAck(time.Minute); err != nil {
		t.Fatalf("an acknowledged port, after baton went: want nil, have %v", err)
	}
	if _, err := e.Open("admin", &net.TCPAddr{}); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("want ErrNoPeer, have %v", err)
	}
}

// A port opens without waiting for baton: the server may start at once.
// WaitAck then says whether baton acknowledged; a baton that went away
// without answering ends the wait at once, whatever its timeout.
func TestEndpoint_openDoesNotWaitForTheAck(t *testing.T) {
	peerConn, e := endpoint(t)
	hello := make(chan Message, 1)
	answer := make(chan bool)
	go func() {
		buf, oob := NewBuffers()
		m, err := Receive(peerConn, buf, oob)
		if err == nil {
			hello <- m
		}
		if <-answer {
			Send(peerConn, Message{Kind: Ack, Listener: m.Listener, FD: -1})
		} else {
			peerConn.Close()
		}
	}()
	p, err := e.Open("http", &net.TCPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if m := <-hello; m.Kind != Hello || m.Listener != "http" {
		t.Fatalf("baton got %+v, want HELLO http", m)
	}
	if err := p.WaitAck(time.Millisecond); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("before baton answers: want ErrNoPeer, have %v", err)
	}
	answer <- false // baton's end closes without an ACK
	if err := p.WaitAck(time.Hour); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("baton gone: want ErrNoPeer, have %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fd   int
		want Message
		bad  bool
	}{
		{"HELLO 1 http", -1, Message{Kind: Hello, Listener: "http", FD: -1}, false},
		{"HELLO 2 http", -1, Message{}, true},
		{"DRAIN http", -1, Message{Kind: Drain, Listener: "http", FD: -1}, false},
		{"SHARE http", -1, Message{Kind: Share, Listener: "http", FD: -1}, false},
		{"SHARE http", 7, Message{}, true},
		{"CONN http", 7, Message{Kind: Conn, Listener: "http", FD: 7}, false},
		{"CONN http", -1, Message{}, true},
		{"DRAIN http", 7, Message{}, true},
		{"DRAIN a:b", -1, Message{}, true},
		{"", -1, Message{}, true},
		{"READY=1", -1, Message{}, true},
	} {
		m, err := Parse([]byte(tc.in), tc.fd)
		if tc.bad != (err != nil) || (!tc.bad && m != tc.want) {
			t.Errorf("Parse(%q, %d): want %+v (bad %v), have %+v, %v", tc.in, tc.fd, tc.want, tc.bad, m, err)
		}
		if !tc.bad && string(m.Text()) != tc.in {
			t.Errorf("Text: want %q, have %q", tc.in, m.Text())
		}
	}
}
