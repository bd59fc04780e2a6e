package supervisor

import (
	"errors"
	"net"
	"os"
	"syscall"

	"github.com/baton-run/baton/internal/pause"
	"github.com/baton-run/baton/internal/procfs"
	"github.com/baton-run/baton/internal/protocol"
	"golang.org/x/sys/unix"
)

// notifySocket receives the sd_notify datagrams of one generation. It has
// a path of its own, so any process of the generation may send to it:
// systemd-notify sends from its own pid, not the program's. The kernel
// attaches each sender's credentials (SO_PASSCRED), and only messages
// from the generation's own processes count, as systemd's
// NotifyAccess=all does for a service: anyone else who can reach the path
// cannot make a broken generation look ready, or stall its stop.
type notifySocket struct {
	path  string
	ino   uint64 // of the socket file it created: close removes that file only
	conn  *net.UnixConn
	pause *pause.Reader // parks read while baton upgrades itself
}

// listenNotify creates the notify socket at path, a name of its own in
// baton's runtime directory: a file already there is not baton's, and is
// an error.
func listenNotify(path string) (*notifySocket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	n := &notifySocket{path: path, conn: conn, pause: pause.New(conn.SetReadDeadline)}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		conn.Close()
		return nil, err
	}
	n.ino = st.Ino
	fail := func(err error) (*notifySocket, error) {
		n.close()
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return fail(err)
	}
	if serr != nil {
		return fail(serr)
	}
	conn.SetReadBuffer(256 << 10)
	return n, nil
}

// read calls handle for each valid message from a sender that accept
// takes, and refused for each other sender, once per pid, until the
// socket is closed. Datagrams may carry file descriptors (systemd-notify's
// BARRIER=1 sends a pipe and waits until the receiver closes it): every
// descriptor received is closed once the message was handled, whatever it
// says.
func (n *notifySocket) read(accept func(unix.Ucred) bool, handle func(protocol.Message), refused func(unix.Ucred), bad func(error)) {
	buf := make([]byte, protocol.MaxNotifySize)
	oob := make([]byte, syscall.CmsgSpace(16*4)+syscall.CmsgSpace(unix.SizeofUcred))
	told := map[int32]bool{}
	defer n.pause.End()
	for {
		nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !n.pause.Park(err) {
				bad(err)
			}
			continue
		}
		cred, fds := controlMessages(oob[:noob])
		switch {
		case cred == nil:
			bad(errors.New("notify message without the sender's credentials"))
		case !accept(*cred):
			if !told[cred.Pid] {
				told[cred.Pid] = true
				refused(*cred)
			}
		default:
			if msg, err := protocol.ParseMessage(buf[:nb]); err != nil {
				bad(err)
			} else {
				handle(msg)
			}
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
}

// controlMessages returns the sender's credentials and the descriptors a
// datagram carried.
func controlMessages(oob []byte) (*unix.Ucred, []int) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, nil
	}
	var cred *unix.Ucred
	var fds []int
	for _, m := range msgs {
		if c, err := unix.ParseUnixCredentials(&m); err == nil {
			cred = c
			continue
		}
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return cred, fds
}

// close closes the socket and removes its file, if the file is still the
// one it created.
func (n *notifySocket) close() {
	n.conn.Close()
	var st syscall.Stat_t
	if syscall.Stat(n.path, &st) == nil && st.Ino == n.ino {
		os.Remove(n.path)
	}
}

// inProcessGroup reports whether process pid belongs to the generation
// whose leader is leader: it is the leader, it is in the leader's
// process group, or the leader is among its ancestors. The process must
// still exist (a zombie does): a sender that exited and was reaped before
// its message was read cannot be told apart from a stranger.
func inProcessGroup(pid, leader int) bool {
	for depth := 0; pid > 1 && depth < 64; depth++ {
		if pid == leader {
			return true
		}
		st, err := procfs.Read(pid)
		if err != nil {
			return false
		}
		if st.PGRP == leader {
			return true
		}
		pid = st.PPID
	}
	return false
}
