package child

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/protocol"
)

// The protocol environment is read once per process and then removed, so
// that programs this process starts do not take sockets or notifications
// that were meant for it (sd_listen_fds(3) with unset_environment set).
var env struct {
	watchdog  time.Duration // WATCHDOG_USEC: send WATCHDOG=1 at least this often; 0: no watchdog
	once      sync.Once
	mu        sync.Mutex
	files     map[string]*os.File // inherited sockets not yet taken, by name
	names     []string            // all inherited names, in fd order
	listenErr error               // the inherited sockets were unusable
	ignored   string              // why LISTEN_FDS was ignored, for the log
	notify    string              // NOTIFY_SOCKET
	// handoff is the process's handoff socket (BATON_HANDOFF_FD), nil
	// without one; handoffErr says why an inherited one is unusable.
	handoff    *handoff.Endpoint
	handoffErr error
}

func takeEnv() {
	env.once.Do(func() {
		env.notify = os.Getenv(protocol.EnvNotifySocket)
		os.Unsetenv(protocol.EnvNotifySocket)
		env.watchdog = protocol.TakeWatchdog()
		env.handoff, env.handoffErr = handoff.FromEnv(os.Getenv(protocol.EnvListenPID))
		in, err := protocol.InheritFromEnv()
		if err != nil {
			err = fmt.Errorf("child: %w", err)
		}
		env.files, env.names, env.ignored, env.listenErr = in.Files, in.Names, in.Ignored, err
	})
}

// Inherited reports the names of the sockets this process was started
// with, in descriptor order, whether or not they were taken yet. It is
// empty when the process was not socket-activated.
func Inherited() []string {
	takeEnv()
	return append([]string(nil), env.names...)
}

// Listen returns the inherited socket called name, or, when this process
// was started without inherited sockets, a socket of its own on addr.
// An address of the form "unix:/path" is a unix socket; any other is TCP.
//
// When sockets were inherited but none is called name, Listen fails rather
// than bind a second socket beside the supervisor's. A sole inherited
// socket without a name (systemd's "unknown") is taken for any name.
// Each inherited socket can be taken once.
func Listen(name, addr string) (net.Listener, error) {
	takeEnv()
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.listenErr != nil {
		return nil, env.listenErr
	}
	if len(env.names) == 0 {
		if addr == "" {
			return nil, fmt.Errorf("child: no inherited socket %q and no address to listen on", name)
		}
		network, address := splitAddr(addr)
		return net.Listen(network, address)
	}
	f, ok := env.files[name]
	if !ok && len(env.names) == 1 && env.names[0] == "unknown" {
		name = "unknown"
		f, ok = env.files[name]
	}
	if !ok {
		return nil, fmt.Errorf("child: no inherited socket named %q (this process was given %q); name the listener %q in the supervisor's config or pass its name in LISTEN_FDNAMES", name, env.names, name)
	}
	delete(env.files, name)
	l, err := net.FileListener(f) // dups the descriptor
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("child: inherited socket %q: %w", name, err)
	}
	return l, nil
}

func splitAddr(addr string) (network, address string) {
	if len(addr) > 5 && addr[:5] == "unix:" {
		return "unix", addr[5:]
	}
	return "tcp", addr
}

// Generation is the generation number baton gave this process
// (BATON_GENERATION), or 0 when it runs without baton.
func Generation() int {
	n, _ := strconv.Atoi(os.Getenv(protocol.EnvGeneration))
	return n
}

// Supervised reports whether this process was started by baton.
func Supervised() bool {
	return os.Getenv(protocol.EnvProgram) != ""
}
