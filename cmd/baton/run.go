package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/baton-run/baton/supervisor"
	"github.com/baton-run/baton/supervisor/config"
)

const runDesc = `
Run every program of the config file in the foreground, each with its
listening sockets, and keep them running: a new generation is started with
the same sockets, and the old one is stopped only once the new one is
ready. A generation that fails to become ready is killed and the serving
one keeps serving.

Signals:
  SIGHUP           re-read the config and hand over every program
  SIGUSR2          replace baton by the binary on disk, in place (baton
                   upgrade): same pid, no program restarted
  SIGTERM, SIGINT  fail /readyz, keep serving for shutdown_delay, then stop
                   every program gracefully and exit; a second one stops
                   them immediately
  SIGQUIT          stop every program immediately (SIGKILL), then exit
  SIGUSR1          as PID 1 (a container's entrypoint): ignored

As PID 1 baton reaps every orphan of the container; elsewhere it is the
child subreaper of its programs and reaps theirs.

Exit status: 0 when every program stopped within its stop timeout, 3 when
a child had to be killed, 1 when the config or a socket failed.`

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "[-config FILE]", runDesc, stderr)
	file := fs.String("config", config.DefaultConfigFile, "the config `FILE`")
	if _, code, ok := parse(fs, args, noArgs); !ok {
		return code
	}
	// The signals first: a new image of baton upgrade catches them before
	// anything else, and handles them once it runs.
	sigs := notifySignals()
	sup, err := supervisor.New(supervisor.Config{File: *file, LogOutput: stderr, Version: batonVersion(), Resume: resumed,
		OnExec: func(execing bool) {
			// Across the exec, until the new image catches them: ignored
			// (a signal then is lost) rather than fatal (the default).
			if execing {
				signal.Ignore(syscall.SIGHUP, syscall.SIGUSR2)
			} else {
				signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2)
			}
		}})
	if err != nil {
		signal.Stop(sigs)
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitError
	}
	return runSupervisor(sup, sigs)
}

// notifySignals catches the signals runSupervisor handles.
func notifySignals() chan os.Signal {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR2)
	return sigs
}

// runSupervisor runs sup until a signal stops it, turning the other
// signals into reloads, upgrades and immediate stops. sup runs on the
// calling goroutine, which main keeps on the main thread (see main.go).
func runSupervisor(sup *supervisor.Supervisor, sigs chan os.Signal) int {
	defer startInit(sup.Logger())()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	defer signal.Stop(sigs)

	done := make(chan struct{})
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		log := sup.Logger()
		stopping := false
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				switch {
				case sig == syscall.SIGHUP:
					log.Info("SIGHUP: reloading the config and handing over every program")
					go sup.Reload(ctx, supervisor.ReloadRequest{Reason: "SIGHUP", Force: true})
				case sig == syscall.SIGUSR2:
					log.Info("SIGUSR2: replacing baton by the binary on disk, in place")
					go sup.Upgrade(ctx, nil) // its outcome is logged
				case sig == syscall.SIGQUIT || stopping:
					sup.Kill()
				default:
					stopping = true
					log.Info("stopping gracefully; send the signal again to stop immediately", "signal", sig.String())
					cancel(fmt.Errorf("signal %s", sig))
				}
			}
		}
	}()
	err := sup.Run(ctx)
	close(done)
	<-handled
	if errors.Is(err, supervisor.ErrKilled) {
		return exitKilled
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "baton: %v\n", err)
		return exitError
	}
	return exitOK
}
