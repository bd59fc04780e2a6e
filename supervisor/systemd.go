package supervisor

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-run/baton/internal/protocol"
	"golang.org/x/sys/unix"
)

// systemd is baton's side of the protocols it speaks with its own service
// manager: with Type=notify it says READY=1 once every program has either
// become ready or failed its first start (with STATUS= naming those that
// failed), RELOADING=1 and READY=1 around a reload, and STOPPING=1;
// started with socket activation, it passes the sockets it was given to
// its programs by name instead of opening its own. With WatchdogSec= it
// sends WATCHDOG=1 at half that interval, each one after every program's
// goroutine answered (watchdogPings), so that a supervisor whose loops
// hang is restarted by systemd rather than pinging on.
//
// READY=1 does not wait for every program to serve: one program that
// cannot start would otherwise get baton, and every healthy program with
// it, killed at TimeoutStartSec, again and again under Restart=. A program
// that failed is restarted by its own policy, and STATUS= says so.
type systemd struct {
	notify   string        // NOTIFY_SOCKET, "" when baton was not started by systemd
	watchdog time.Duration // WATCHDOG_USEC for baton, 0 without a watchdog

	mu       sync.Mutex
	programs []string          // the programs of the config, to wait for
	ready    map[string]int    // programs that serve: their generation
	failed   map[string]string // programs whose start failed while none served: why
	sent     bool              // READY=1 was sent
}

// takeSystemd reads baton's own systemd environment and removes it, so that
// its programs get theirs from baton only.
func takeSystemd(pool *socketPool) (*systemd, error) {
	sd := &systemd{notify: os.Getenv(protocol.EnvNotifySocket), watchdog: protocol.TakeWatchdog(), ready: map[string]int{}, failed: map[string]string{}}
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

// watchdogPings sends a ping at once and then every interval, each once
// check returned after the last ping: check is a round trip through the
// goroutines that must not hang. While a check does not return, no ping
// goes out, and late is called at each interval that passed without
// one. It returns when ctx is done and no check is under way.
//
// The first ping goes out at once because an upgrade in place starts
// this anew in the new image: waiting an interval there would leave up
// to two intervals and the exec between pings, past the watchdog.
func watchdogPings(ctx context.Context, every time.Duration, check, ping func(), late func(waited time.Duration)) {
	t := time.NewTicker(every)
	defer t.Stop()
	answered := make(chan struct{}, 1)
	since := time.Now() // a check is under way since then
	go func() {
		check()
		answered <- struct{}{}
	}()
	for {
		select {
		case <-ctx.Done():
			if !since.IsZero() {
				<-answered
			}
			return
		case now := <-t.C:
			if !since.IsZero() {
				late(now.Sub(since))
				continue
			}
			since = now
			go func() {
				check()
				answered <- struct{}{}
			}()
		case <-answered:
			since = time.Time{}
			ping()
		}
	}
}

// watchdogEvery is how often baton pings systemd's watchdog: half its
// interval, 0 without one.
func (sd *systemd) watchdogEvery() time.Duration {
	if sd == nil || sd.notify == "" {
		return 0
	}
	return sd.watchdog / 2
}

// pingSystemd returns the goroutine that pings systemd's watchdog every
// interval while the supervisor's loop and every program's answer a
// status request in time.
func (s *Supervisor) pingSystemd(every time.Duration) func() {
	return func() {
		warned := false
		watchdogPings(s.runCtx, every, func() { s.Status() },
			func() {
				warned = false
				s.systemd.send("WATCHDOG=1")
			},
			func(waited time.Duration) {
				if !warned {
					warned = true
					s.log.Warn("a status request is not answered: no WATCHDOG=1 to systemd until it is", "waited", waited.Round(time.Millisecond).String(), "watchdog", s.systemd.watchdog.String())
				}
			})
	}
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

// observe follows the programs: READY=1 goes once every program of the
// config has been ready or has failed to start, and STATUS says who
// serves and who failed.
func (sd *systemd) observe(e Event) {
	if sd == nil || sd.notify == "" {
		return
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	switch e.What {
	case "ready":
		sd.ready[e.Program] = e.Generation
		delete(sd.failed, e.Program)
	case "start-failed":
		if _, serving := sd.ready[e.Program]; serving {
			return
		}
		sd.failed[e.Program] = e.Why
	default:
		return
	}
	all := true
	for _, p := range sd.programs {
		_, ready := sd.ready[p]
		_, failed := sd.failed[p]
		all = all && (ready || failed)
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
	var serving, failed []string
	for n, gen := range sd.ready {
		serving = append(serving, fmt.Sprintf("%s gen %d", n, gen))
	}
	for n, why := range sd.failed {
		failed = append(failed, fmt.Sprintf("%s (%s)", n, why))
	}
	sort.Strings(serving)
	sort.Strings(failed)
	status := "serving: " + strings.Join(serving, ", ")
	if len(failed) > 0 {
		status += "; failed to start: " + strings.Join(failed, ", ")
	}
	return status
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
