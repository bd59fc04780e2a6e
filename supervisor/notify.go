package supervisor

import (
	"errors"
	"net"
	"os"
	"syscall"

	"github.com/baton-run/baton/internal/protocol"
)

// notifySocket receives the sd_notify datagrams of one generation. It has
// a path of its own, so any process of the generation may send to it:
// systemd-notify sends from its own pid, not the program's.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(path string) (*notifySocket, error) {
	os.Remove(path) // a leftover of a crashed baton with our pid
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	conn.SetReadBuffer(256 << 10)
	return &notifySocket{path: path, conn: conn}, nil
}

// read calls handle for each valid message until the socket is closed.
// Datagrams may carry file descriptors (systemd-notify's BARRIER=1 sends a
// pipe and waits until the receiver closes it): every descriptor received
// is closed, whatever the message says.
func (n *notifySocket) read(handle func(protocol.Message), bad func(error)) {
	buf := make([]byte, protocol.MaxNotifySize)
	oob := make([]byte, syscall.CmsgSpace(16*4))
	for {
		nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if noob > 0 {
			closeRights(oob[:noob])
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			bad(err)
			continue
		}
		msg, err := protocol.ParseMessage(buf[:nb])
		if err != nil {
			bad(err)
			continue
		}
		handle(msg)
	}
}

func closeRights(oob []byte) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
}

func (n *notifySocket) close() {
	n.conn.Close()
	os.Remove(n.path)
}
