// Package handoff carries idle keep-alive connections from one generation
// of a program to the next, as file descriptors over unix sockets
// (SCM_RIGHTS), through baton.
//
// baton gives every generation one end of a socket pair (AF_UNIX,
// SOCK_SEQPACKET: ordered messages with their boundaries) as an extra
// inherited descriptor named by BATON_HANDOFF_FD, and keeps the other
// end. Each program has a Router in baton; each process that uses the
// child package has an Endpoint. The messages, one per datagram, are
// text:
//
//	child → baton  HELLO 1 <listener>  this process serves connections of <listener> passed to it
//	baton → child  ACK <listener>      noted (the child says READY=1 only after it)
//	child → baton  DRAIN <listener>    this process drains <listener>: may its idle connections move?
//	baton → child  HANDOVER <listener> yes: the serving generation takes them
//	baton → child  KEEP <listener>     no (a final stop, or no successor takes them): drain them as before
//	baton → child  SHARE <listener>    a new generation bakes beside this one: pass half of the
//	                                   connections of <listener> on, each once idle (CONN)
//	either way     CONN <listener>     with one descriptor: a connection of <listener>
//
// Exactly one process owns a connection at any moment: the sender
// closes its copy only after the kernel took the message, and a
// descriptor in flight belongs to the kernel, which closes it if its
// receiver dies (see DESIGN.md, "Idle connections move").
package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"golang.org/x/sys/unix"
)

// EnvFD names the inherited descriptor of the handoff socket. It is not
// part of LISTEN_FDS, so that programs using sd_listen_fds(3) see only
// their listeners; like them, it is for the process LISTEN_PID names.
const EnvFD = protocol.EnvHandoffFD

// Version is the protocol's version, sent in HELLO.
const Version = "1"

// Message kinds.
const (
	Hello    = "HELLO"
	Ack      = "ACK"
	Drain    = "DRAIN"
	Handover = "HANDOVER"
	Keep     = "KEEP"
	Conn     = "CONN"
	Share    = "SHARE"
)

// MaxMessage bounds a message: a kind, a version and a listener name of
// at most 255 bytes.
const MaxMessage = 512

// maxFDs is how many descriptors a receiver makes room for; a message
// carries at most one, and any more are closed.
const maxFDs = 4

// sendTimeout bounds one send: the receiver's queue is full only when
// it stopped reading.
const sendTimeout = 2 * time.Second

// Message is one datagram.
type Message struct {
	Kind     string
	Listener string
	FD       int // the descriptor it carries, -1 for none
}

// ErrBadMessage is a datagram that is not a message of this protocol.
var ErrBadMessage = errors.New("handoff: bad message")

// Parse parses a datagram's text; fd is the descriptor it carried, or -1.
func Parse(b []byte, fd int) (Message, error) {
	f := strings.Fields(string(b))
	m := Message{FD: fd}
	switch {
	case len(f) == 3 && f[0] == Hello && f[1] == Version:
		m.Kind, m.Listener = Hello, f[2]
	case len(f) == 2 && (f[0] == Ack || f[0] == Drain || f[0] == Handover || f[0] == Keep || f[0] == Conn || f[0] == Share):
		m.Kind, m.Listener = f[0], f[1]
	default:
		return m, fmt.Errorf("%w: %.64q", ErrBadMessage, b)
	}
	if !protocol.ValidName(m.Listener) {
		return m, fmt.Errorf("%w: listener name %.64q", ErrBadMessage, m.Listener)
	}
	if (m.Kind == Conn) != (fd >= 0) {
		return m, fmt.Errorf("%w: %s with %s", ErrBadMessage, m.Kind, map[bool]string{true: "a descriptor", false: "no descriptor"}[fd >= 0])
	}
	return m, nil
}

// Text is the message's datagram.
func (m Message) Text() []byte {
	if m.Kind == Hello {
		return []byte(Hello + " " + Version + " " + m.Listener)
	}
	return []byte(m.Kind + " " + m.Listener)
}

// Send writes m to c, with m.FD attached when it is one. The caller keeps
// its own copy of the descriptor: once Send returned nil the receiver has
// one too (or the kernel, until the receiver reads it).
func Send(c *net.UnixConn, m Message) error {
	var oob []byte
	if m.FD >= 0 {
		oob = unix.UnixRights(m.FD)
	}
	c.SetWriteDeadline(time.Now().Add(sendTimeout))
	_, _, err := c.WriteMsgUnix(m.Text(), oob, nil)
	return err
}

// Receive reads one message from c. A message that does not parse is
// returned with ErrBadMessage, its descriptors closed; descriptors beyond
// the first are always closed. Descriptors arrive close-on-exec.
func Receive(c *net.UnixConn, buf, oob []byte) (Message, error) {
	n, noob, _, _, err := c.ReadMsgUnix(buf, oob)
	fds := rights(oob[:noob])
	fd := -1
	if len(fds) > 0 {
		fd = fds[0]
		for _, extra := range fds[1:] {
			syscall.Close(extra)
		}
	}
	if err != nil {
		if fd >= 0 {
			syscall.Close(fd)
		}
		return Message{FD: -1}, err
	}
	m, err := Parse(buf[:n], fd)
	if err != nil && fd >= 0 {
		syscall.Close(fd)
		m.FD = -1
	}
	return m, err
}

// NewBuffers returns the buffers Receive needs.
func NewBuffers() (buf, oob []byte) {
	return make([]byte, MaxMessage), make([]byte, unix.CmsgSpace(4*maxFDs))
}

func rights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// Pair returns a connected pair of handoff sockets: one end for baton, in
// Go's non-blocking mode, and one for a generation, a blocking *os.File
// ready for exec.Cmd.ExtraFiles (Fd changes nothing on it). Both are
// close-on-exec in this process; exec.Cmd clears the flag on the child's
// copy only.
func Pair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "handoff")
	c, err := net.FileConn(mine) // a dup, non-blocking
	mine.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("handoff: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "handoff"), nil
}

// isStreamSocket reports whether fd is a connected stream socket: the
// only kind a CONN may carry.
func isStreamSocket(fd int) bool {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && t == unix.SOCK_STREAM
}
