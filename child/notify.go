package child

import (
	"fmt"

	"github.com/baton-run/baton/internal/protocol"
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
	if err := protocol.Notify(path, state); err != nil {
		return fmt.Errorf("child: notify: %w", err)
	}
	return nil
}
