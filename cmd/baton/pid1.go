package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/baton-run/baton/internal/reaper"
	"github.com/hashicorp/go-hclog"
)

// startInit makes baton the reaper of the orphans of its programs, and
// returns the function that ends it once every program stopped.
//
// As PID 1 of a PID namespace (a container's entrypoint), the kernel
// makes baton the parent of every orphan of the namespace, and nobody
// else waits for them: baton reaps them, or they stay zombies until the
// container ends. PID 1 also has no default signal actions: SIGTERM and
// SIGINT are handled by runSupervisor as everywhere (a graceful stop),
// SIGHUP, SIGQUIT and SIGUSR2 (baton upgrade) too, and SIGUSR1, which
// would otherwise end baton (and with it, through the kernel, every
// process of the container) at once, is logged and ignored. Nothing is forwarded: each
// program gets its stop signal from baton's stop sequence, never a copy
// of baton's signals.
//
// Elsewhere baton sets PR_SET_CHILD_SUBREAPER: an orphan of its programs
// (a grandchild whose parent exited, a daemon that double-forked)
// becomes baton's child instead of init's, and baton reaps it. Either
// way, orphans still alive when baton stops are killed and reaped then,
// so that nothing is left behind.
func startInit(log hclog.Logger) (stop func()) {
	log = log.Named("init")
	pid1 := os.Getpid() == 1
	if pid1 {
		log.Info("baton is PID 1: it reaps every orphan of the PID namespace")
	} else if err := reaper.SetSubreaper(); err != nil {
		log.Warn("cannot become the child subreaper: orphans of the programs go to init", "error", err)
	}
	r := reaper.New(func(o reaper.Orphan) {
		log.Info("reaped an orphan", "orphan", o.String())
	})
	var ignored chan os.Signal
	if pid1 {
		ignored = make(chan os.Signal, 4)
		signal.Notify(ignored, syscall.SIGUSR1)
		go func() {
			for sig := range ignored {
				log.Warn("signal ignored: baton is PID 1 and gives it no meaning", "signal", sig.String())
			}
		}()
	}
	return func() {
		if ignored != nil {
			signal.Stop(ignored)
			close(ignored)
		}
		if n := r.Stop(); n > 0 {
			log.Warn("killed orphans still alive at the stop", "orphans", n)
		}
	}
}
