package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Endpoint is a process's end of its handoff socket. Servers of the
// process open a Port each, by listener name; a reader goroutine runs
// while any port is open and hands each message to its port.
type Endpoint struct {
	conn *net.UnixConn

	mu      sync.Mutex
	ports   map[string]*Port
	reading bool
	// stopping: the last port closed and woke the reader, which returns.
	stopping bool
	stopped  chan struct{} // closed when the reader returns; nil while none ran
	dead     bool          // baton's end is gone
}

// ErrNoPeer: baton did not answer, or its end is gone.
var ErrNoPeer = errors.New("handoff: baton does not answer on the handoff socket")

// FromEnv takes the handoff socket this process inherited:
// BATON_HANDOFF_FD, which, like the listeners, is for the process that
// listenPID (the value LISTEN_PID had) names; another process, such as a
// program started by one that ignored the variable, leaves it alone. It
// unsets the variable and makes the descriptor close-on-exec, so that
// programs this process starts get neither. It returns nil, nil when
// there is none for this process.
func FromEnv(listenPID string) (*Endpoint, error) {
	v := os.Getenv(EnvFD)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(EnvFD)
	if pid, err := strconv.Atoi(listenPID); err != nil || pid != os.Getpid() {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("handoff: bad %s %q", EnvFD, v)
	}
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || t != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("handoff: %s=%d is not a SOCK_SEQPACKET socket", EnvFD, fd)
	}
	unix.CloseOnExec(fd)
	return Open(os.NewFile(uintptr(fd), "handoff"))
}

// Open makes an Endpoint of a handoff socket (it takes f over).
func Open(f *os.File) (*Endpoint, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("handoff: not a unix socket")
	}
	return &Endpoint{conn: uc, ports: map[string]*Port{}}, nil
}

// Close closes the socket; open ports stop receiving.
func (e *Endpoint) Close() error {
	err := e.conn.Close()
	e.mu.Lock()
	stopped := e.stopped
	e.mu.Unlock()
	if stopped != nil {
		<-stopped
	}
	return err
}

// Port is one listener's share of an Endpoint: the connections passed
// to this process for that listener, and its drain question.
type Port struct {
	e    *Endpoint
	name string
	addr net.Addr

	acked  chan struct{} // closed when HELLO was acknowledged
	shared chan struct{} // receives when baton says SHARE
	gone   chan struct{} // closed when baton's end is gone
	reply  chan bool     // the answer to DRAIN: true for HANDOVER

	mu      sync.Mutex
	queue   []Arrival
	ready   chan struct{} // closed and replaced when the queue grows or the port closes
	closed  bool
	drained bool // the answer to DRAIN came: later arrivals are returns
}

// Arrival is a connection passed to this process.
type Arrival struct {
	Conn net.Conn
	// Returned: it came after this port's drain was answered, sent back
	// because no generation took it. It is served here, never passed on
	// again.
	Returned bool
}

// Open opens the port of listener, whose address Addr reports: it tells
// baton that this process serves that listener's connections (HELLO),
// without waiting for the answer: the server may start at once, and
// WaitAck waits for baton's acknowledgement, after which baton may pass
// connections to it. Close it when the server stops.
func (e *Endpoint) Open(listener string, addr net.Addr) (*Port, error) {
	p := &Port{e: e, name: listener, addr: addr, acked: make(chan struct{}), shared: make(chan struct{}, 1), gone: make(chan struct{}), reply: make(chan bool, 1), ready: make(chan struct{})}
	e.mu.Lock()
	for e.reading && e.stopping {
		stopped := e.stopped
		e.mu.Unlock()
		<-stopped
		e.mu.Lock()
	}
	if e.dead {
		e.mu.Unlock()
		return nil, ErrNoPeer
	}
	if _, dup := e.ports[listener]; dup {
		e.mu.Unlock()
		return nil, fmt.Errorf("handoff: listener %q has a port already", listener)
	}
	e.ports[listener] = p
	e.startLocked()
	e.mu.Unlock()
	if err := Send(e.conn, Message{Kind: Hello, Listener: listener, FD: -1}); err != nil {
		p.Close()
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			// baton's end is gone; the reader may not have seen it yet.
			return nil, ErrNoPeer
		}
		return nil, fmt.Errorf("handoff: hello: %w", err)
	}
	return p, nil
}

// WaitAck waits up to timeout for baton's acknowledgement of the port's
// HELLO. It returns ErrNoPeer when none came in time or baton's end is
// gone: the port then serves what reaches it, and its drain keeps its
// idle connections.
func (p *Port) WaitAck(timeout time.Duration) error {
	select {
	case <-p.acked:
		return nil
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.acked:
		return nil
	case <-p.gone:
		return ErrNoPeer
	case <-t.C:
		return ErrNoPeer
	}
}

// startLocked starts the reader, unless it runs.
func (e *Endpoint) startLocked() {
	if e.reading {
		return
	}
	e.reading = true
	e.conn.SetReadDeadline(time.Time{})
	stopped := make(chan struct{})
	e.stopped = stopped
	go e.read(stopped)
}

// read hands each message to its port until no port is open (or baton's
// end is gone). A message that comes meanwhile stays in the socket.
func (e *Endpoint) read(stopped chan struct{}) {
	defer close(stopped)
	buf, oob := NewBuffers()
	for {
		m, err := Receive(e.conn, buf, oob)
		if errors.Is(err, ErrBadMessage) {
			continue
		}
		e.mu.Lock()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !e.stopping {
				// Not Close's wake-up: go on.
				e.conn.SetReadDeadline(time.Time{})
				e.mu.Unlock()
				continue
			}
			if !e.stopping {
				e.dead = true // EOF: baton's end is gone; or the socket was closed
				for _, p := range e.ports {
					p.fail()
				}
			}
			e.reading, e.stopping = false, false
			e.mu.Unlock()
			return
		}
		p := e.ports[m.Listener]
		e.mu.Unlock()
		if p == nil {
			if m.FD >= 0 {
				syscall.Close(m.FD)
			}
			continue
		}
		switch m.Kind {
		case Ack:
			select {
			case <-p.acked:
			default:
				close(p.acked)
			}
		case Handover, Keep:
			p.answer(m.Kind == Handover)
		case Conn:
			p.arrive(m.FD)
		case Share:
			select {
			case p.shared <- struct{}{}:
			default: // one is pending already
			}
		default:
			if m.FD >= 0 {
				syscall.Close(m.FD)
			}
		}
	}
}

// fail ends a port's waits for an answer: baton is gone.
func (p *Port) fail() {
	p.mu.Lock()
	select {
	case <-p.gone:
	default:
		close(p.gone)
	}
	p.mu.Unlock()
	p.answer(false)
}

func (p *Port) answer(handover bool) {
	p.mu.Lock()
	first := !p.drained
	p.drained = true
	p.mu.Unlock()
	if first {
		p.reply <- handover
	}
}

func (p *Port) arrive(fd int) {
	f := os.NewFile(uintptr(fd), "handed over")
	c, err := net.FileConn(f) // a dup, registered with Go's poller
	f.Close()
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.queue = append(p.queue, Arrival{Conn: c, Returned: p.drained})
	p.signalLocked()
	p.mu.Unlock()
}

func (p *Port) signalLocked() {
	close(p.ready)
	p.ready = make(chan struct{})
}

// Requeue serves c here after all: a connection whose move failed (baton
// went away) comes back to this process as a returned one.
func (p *Port) Requeue(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.queue = append(p.queue, Arrival{Conn: c, Returned: true})
	p.signalLocked()
	return true
}

// Next waits for the next connection passed to this process. It returns
// net.ErrClosed once the port is closed.
func (p *Port) Next() (Arrival, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return Arrival{}, net.ErrClosed
		}
		if len(p.queue) > 0 {
			a := p.queue[0]
			p.queue[0] = Arrival{}
			p.queue = p.queue[1:]
			p.mu.Unlock()
			return a, nil
		}
		ready := p.ready
		p.mu.Unlock()
		<-ready
	}
}

// Shared receives each time baton says that a new generation bakes
// beside this process (SHARE): the server passes half of its
// connections on, each once idle, with Send.
func (p *Port) Shared() <-chan struct{} { return p.shared }

// Addr is the address of the listener the port belongs to.
func (p *Port) Addr() net.Addr { return p.addr }

// Drain asks baton whether a serving generation takes this listener's
// idle connections, and waits up to timeout for the answer. Connections
// that arrive before the answer are served as usual (they may move again);
// those after it are returns. It reports false when baton says KEEP, does
// not answer, or is gone.
func (p *Port) Drain(timeout time.Duration) bool {
	if err := Send(p.e.conn, Message{Kind: Drain, Listener: p.name, FD: -1}); err != nil {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case handover := <-p.reply:
		return handover
	case <-t.C:
		p.answer(false) // later arrivals are served here
		return false
	}
}

// Send passes the connection c (whose descriptor is fd) to baton, which
// passes it to the serving generation. On success the caller closes its
// copy without touching the connection: it belongs to the receiver.
func (p *Port) Send(fd int) error {
	return Send(p.e.conn, Message{Kind: Conn, Listener: p.name, FD: fd})
}

// Close closes the port: connections queued and arriving later are
// closed, and the reader stops when no port is left.
func (p *Port) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	queued := p.queue
	p.queue = nil
	p.signalLocked()
	p.mu.Unlock()
	for _, a := range queued {
		a.Conn.Close()
	}
	e := p.e
	e.mu.Lock()
	if e.ports[p.name] == p {
		delete(e.ports, p.name)
	}
	last := len(e.ports) == 0 && e.reading
	stopped := e.stopped
	if last {
		e.stopping = true
		e.conn.SetReadDeadline(time.Unix(1, 0)) // wakes the reader, which returns
	}
	e.mu.Unlock()
	if last {
		<-stopped
	}
	return nil
}
