package supervisor

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/baton-run/baton/internal/protocol"
	"golang.org/x/sys/unix"
)

// systemd is baton's side of the protocols it speaks with its own service
// manager: with Type=notify it says READY=1 once every program is ready,
// RELOADING=1 and READY=1 around a reload, and STOPPING=1; started with
// socket activation, it passes the sockets it was given to its programs
// by name instead of opening its own.
type systemd struct {
	notify string // NOTIFY_SOCKET, "" when baton was not started by systemd

	mu       sync.Mutex
	programs []string       // the programs of the config, to wait for
	ready    map[string]int // programs that became ready: their generation
	sent     bool           // READY=1 was sent
}

// takeSystemd reads baton's own systemd environment and removes it, so that
// its programs get theirs from baton only.
func takeSystemd(pool *socketPool) (*systemd, error) {
	sd := &systemd{notify: os.Getenv(protocol.EnvNotifySocket), ready: map[string]int{}}
	os.Unsetenv(protocol.EnvNotifySocket)
	in, err := protocol.InheritFromEnv()
	if err != nil {
		return nil, fmt.Errorf("sockets from systemd: %w", err)
	}
	for name, f := range in.Files {
		// No generation runs yet: leave the shared description in
		// blocking mode, as baton's own sockets are (see socket).
		syscall.SetNonblock(int(f.Fd()), false)
		pool.inherited[name] = f
	}
	return sd, nil
}

func (sd *systemd) send(state string) {
	if sd != nil && sd.notify != "" {
		protocol.Notify(sd.notify, state)
	}
}

// expect sets the programs of the config, which READY=1 waits for.
func (sd *systemd) expect(programs []string) {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	sd.programs = programs
}

// observe follows generations becoming ready: READY=1 goes once every
// program of the config has been ready, and STATUS says who serves.
func (sd *systemd) observe(e Event) {
	if sd == nil || sd.notify == "" || e.What != "ready" {
		return
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	sd.ready[e.Program] = e.Generation
	all := true
	for _, p := range sd.programs {
		if _, ok := sd.ready[p]; !ok {
			all = false
		}
	}
	status := sd.statusLocked()
	if all && !sd.sent {
		sd.sent = true
		sd.send("READY=1\nSTATUS=" + status)
		return
	}
	sd.send("STATUS=" + status)
}

func (sd *systemd) statusLocked() string {
	names := make([]string, 0, len(sd.ready))
	for n := range sd.ready {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s gen %d", n, sd.ready[n])
	}
	return "serving: " + strings.Join(parts, ", ")
}

// reloading tells systemd that a reload began (Type=notify-reload wants
// the monotonic time with it); done tells it that it ended.
func (sd *systemd) reloading() {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	sd.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

func (sd *systemd) reloaded() {
	if sd == nil {
		return
	}
	sd.mu.Lock()
	status := sd.statusLocked()
	sd.mu.Unlock()
	sd.send("READY=1\nSTATUS=" + status)
}

func (sd *systemd) stopping() { sd.send("STOPPING=1\nSTATUS=stopping") }
