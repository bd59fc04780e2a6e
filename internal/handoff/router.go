package handoff

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/pause"
	"github.com/hashicorp/go-hclog"
)

// Router is baton's side of one program: it holds its end of every
// generation's handoff socket and passes the connections a draining
// generation sends on to the serving one, and, while a generation bakes,
// those the serving one shares (SHARE) on to the generation baking.
//
// The program's goroutine, which owns the generations, says which one
// serves (SetCurrent) before it tells the old one to stop; each peer's
// reader goroutine answers its generation and forwards what it sends.
// A connection a generation sent goes to the serving generation when
// that one said HELLO for the listener; otherwise back to its sender,
// which serves it under its drain; otherwise it is closed (both are
// gone).
type Router struct {
	log     hclog.Logger
	current atomic.Pointer[Peer]
	baking  atomic.Pointer[Peer] // takes what the serving one gives up

	mu    sync.Mutex
	peers map[*Peer]bool // whose reader runs (see upgrade.go)
}

// NewRouter returns the router of one program.
func NewRouter(log hclog.Logger) *Router { return &Router{log: log, peers: map[*Peer]bool{}} }

// Peer is baton's end of one generation's handoff socket.
type Peer struct {
	r    *Router
	gen  int
	conn *net.UnixConn
	done chan struct{}
	// pause parks the reader for an upgrade of baton; released: Release
	// bounded the reader (see upgrade.go).
	pause    *pause.Reader
	released atomic.Bool

	// sendMu orders what is sent to the generation: a connection
	// forwarded to it either goes before the answer to its DRAIN, or
	// not at all.
	sendMu sync.Mutex
	mu     sync.Mutex
	takes  map[string]bool // listeners it said HELLO for and did not DRAIN
	// Counted by its reader: the connections it sent, by what became
	// of them.
	moved, returned, closed int
}

// Attach makes the handoff socket of generation gen: the peer, whose
// reader runs until the generation's processes closed their end (or
// Release bounds it), and the descriptor to pass to the generation.
// The caller closes its copy of that file once the generation started.
func (r *Router) Attach(gen int) (*Peer, *os.File, error) {
	c, f, err := Pair()
	if err != nil {
		return nil, nil, err
	}
	return r.run(&Peer{r: r, gen: gen, conn: c, done: make(chan struct{}), takes: map[string]bool{}}), f, nil
}

// run starts p's reader.
func (r *Router) run(p *Peer) *Peer {
	p.pause = pause.New(p.conn.SetReadDeadline)
	r.mu.Lock()
	r.peers[p] = true
	r.mu.Unlock()
	go p.read()
	return p
}

// SetCurrent makes p the generation that takes connections (nil: none,
// as while a program stops). It never blocks: the program's goroutine
// calls it before it sends the old generation its stop signal.
func (r *Router) SetCurrent(p *Peer) {
	if p != nil && p.r != r {
		p = nil
	}
	r.current.Store(p)
}

// SetBaking makes p the generation that bakes beside the serving one
// (nil: none): the connections the serving generation passes on go to
// it. It never blocks.
func (r *Router) SetBaking(p *Peer) {
	if p != nil && p.r != r {
		p = nil
	}
	r.baking.Store(p)
}

// Release bounds the peer's reader once its generation was reaped: what
// the generation sent before it exited is still read and passed on, then
// the socket is closed, at the latest after a second (a process outside
// the generation's group could hold its end open). Nil-safe.
func (p *Peer) Release() {
	if p != nil {
		p.released.Store(true)
		p.conn.SetReadDeadline(time.Now().Add(time.Second))
	}
}

// Done is closed once the peer's reader ended and its socket closed.
func (p *Peer) Done() <-chan struct{} { return p.done }

func (p *Peer) read() {
	defer close(p.done)
	defer func() {
		p.r.mu.Lock()
		delete(p.r.peers, p)
		p.r.mu.Unlock()
	}()
	defer p.pause.End()
	defer p.conn.Close()
	buf, oob := NewBuffers()
	for {
		m, err := Receive(p.conn, buf, oob)
		if errors.Is(err, ErrBadMessage) {
			p.r.log.Warn("bad handoff message from a generation", "gen", p.gen, "error", err)
			continue
		}
		if err != nil && p.pause.Park(err) {
			continue // parked for an upgrade of baton, which did not happen
		}
		if err != nil {
			break // the generation is gone, or Release's bound passed
		}
		switch m.Kind {
		case Hello:
			p.mu.Lock()
			p.takes[m.Listener] = true
			p.mu.Unlock()
			p.send(Message{Kind: Ack, Listener: m.Listener, FD: -1})
		case Drain:
			p.drain(m.Listener)
		case Conn:
			p.r.forward(p, m)
		}
	}
	if p.moved+p.returned+p.closed > 0 {
		p.r.log.Info("idle connections passed on", "gen", p.gen, "to_serving_generation", p.moved, "back_to_sender", p.returned, "closed", p.closed)
	}
}

// drain answers a DRAIN: HANDOVER when another generation serves the
// listener, KEEP otherwise. From now on nothing is forwarded to p for
// that listener but its own connections coming back.
func (p *Peer) drain(listener string) {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.mu.Lock()
	delete(p.takes, listener)
	p.mu.Unlock()
	kind := Keep
	if t := p.r.current.Load(); t != nil && t != p && t.accepts(listener) {
		kind = Handover
	}
	p.sendLocked(Message{Kind: kind, Listener: listener, FD: -1})
}

// Share tells the generation that a new one bakes beside it (SHARE, for
// every listener it took): it passes half of its connections on, each
// once idle, and the router gives them to the generation baking
// (SetBaking). It sends from a goroutine of its own: the program's
// goroutine never waits on a generation's socket. Nil-safe.
func (p *Peer) Share() {
	if p == nil {
		return
	}
	p.mu.Lock()
	names := make([]string, 0, len(p.takes))
	for name := range p.takes {
		names = append(names, name)
	}
	p.mu.Unlock()
	go func() {
		for _, name := range names {
			p.send(Message{Kind: Share, Listener: name, FD: -1})
		}
	}()
}

func (p *Peer) accepts(listener string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.takes[listener]
}

// forward passes a connection from on: to the serving generation (from
// the serving one itself, which shares its connections with a generation
// baking: to that one), else back to from, else nowhere (closed).
// baton's copy of the descriptor is closed in every case: the receiver
// owns the connection now.
func (r *Router) forward(from *Peer, m Message) {
	defer syscall.Close(m.FD)
	if !isStreamSocket(m.FD) {
		r.log.Warn("a generation passed a descriptor that is not a stream socket: closed", "gen", from.gen)
		return
	}
	t := r.current.Load()
	if t == from {
		t = r.baking.Load()
	}
	if t != nil && t != from && t.sendIf(m) {
		from.moved++
		return
	}
	if from.send(m) == nil {
		from.returned++
		return
	}
	from.closed++
}

// sendIf sends m if p takes its listener, and reports whether it did.
func (p *Peer) sendIf(m Message) bool {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.accepts(m.Listener) && p.sendLocked(m) == nil
}

func (p *Peer) send(m Message) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return p.sendLocked(m)
}

func (p *Peer) sendLocked(m Message) error {
	err := Send(p.conn, m)
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		p.r.log.Warn("cannot send to a generation's handoff socket", "gen", p.gen, "message", m.Kind, "error", err)
	}
	return err
}
