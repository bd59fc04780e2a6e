package child

import (
	"fmt"
	"net"
	"time"
)

// Notify sends state, one or more newline-separated assignments such as
// "READY=1" or "STATUS=draining", to the service manager over the socket
// named by NOTIFY_SOCKET, as sd_notify(3) does. It is a no-op that returns
// nil when the process was started without NOTIFY_SOCKET.
//
// Serve sends READY=1, STOPPING=1 and STATUS progress lines by itself;
// Notify is for programs that have more to say.
func Notify(state string) error {
	takeEnv()
	return notifyTo(env.notify, state)
}

func notifyTo(path, state string) error {
	if path == "" {
		return nil
	}
	// A leading '@' names an abstract socket; the net package maps it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("child: notify: %w", err)
	}
	defer conn.Close()
	// A full receive queue would block a blocking send; the supervisor
	// reads promptly, and a lost STATUS is better than a stuck drain.
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("child: notify: %w", err)
	}
	return nil
}
