package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/baton-run/baton/supervisor/control"
)

const upgradeDesc = `
Replace the running baton by the binary on disk, in place: the process
stays (same pid, so systemd's MAINPID, and every program's generations
stay its own), with its listening sockets, its generations and their
pipes, notify and handoff sockets, and its state (programs, counters,
logs). No program is restarted and no request fails.

The binary is checked first: it must take this baton's state (baton
version -json) and accept the config (baton check -config FILE);
otherwise nothing changes. A handover under way ends first; while a
program bakes the upgrade is refused (promote or revert it, or wait for
its verdict). SIGUSR2 to baton does the same.

Prints the old and the new version once the new binary answers. Exits 1,
with the reason, when nothing changed.`

// upgradePoll is how often baton upgrade asks whether the new image
// answers.
const upgradePoll = 20 * time.Millisecond

func cmdUpgrade(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("upgrade", "[-timeout D] [-config FILE | -socket PATH]", upgradeDesc, stderr)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the handovers under way and the new binary")
	conn := controlFlags(fs)
	if _, code, ok := parse(fs, args, noArgs); !ok {
		return code
	}
	c := conn()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	reply, err := c.Upgrade(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	// The exec closes the control connection; the new image answers on
	// the same socket, which stayed open.
	t := time.NewTicker(upgradePoll)
	defer t.Stop()
	var gone time.Time // since when nothing listens on the socket
	for {
		st, err := c.UpgradeStatus(ctx)
		var nr *control.NotRunningError
		switch {
		case err == nil && !st.Upgrading && st.Upgrades > reply.Upgrades:
			fmt.Fprintf(stdout, "baton upgraded in place: %s → %s (pid %d, upgrade %d)\n", reply.From, st.Version, st.PID, st.Upgrades)
			return exitOK
		case err == nil && !st.Upgrading && st.LastError != "":
			return fail(stderr, fmt.Errorf("upgrade failed: %s", st.LastError))
		case errors.As(err, &nr):
			// The socket stays open across the exec: a connection waits
			// for the new image. Refused for a second means it is closed:
			// the new image ended.
			if gone.IsZero() {
				gone = time.Now()
			} else if time.Since(gone) > time.Second {
				return fail(stderr, fmt.Errorf("the new image of baton ended before it answered: nothing listens on %s any more; its programs got their stop signal and drain; start baton again (under systemd, Restart= does)", nr.Socket))
			}
		default:
			gone = time.Time{}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("it still upgrades")
			}
			return fail(stderr, fmt.Errorf("no answer from the new image of baton within %v: %v", *timeout, err))
		}
	}
}
