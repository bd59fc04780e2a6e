// Package supervisor runs the programs of a config file and restarts them
// without dropping a request: it owns their listening sockets and hands
// them, like a relay baton, from each generation of a program to the next.
//
// # Process model
//
// New parses config.hcl and opens every listener once, in blocking mode,
// in baton's own process. Run starts each program's first generation and
// then follows a handover for every restart:
//
//  1. start generation N+1 with the same sockets, as fds 3, 4, … with
//     LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (set to the child's own
//     pid by the exec shim, or, for a binary that links the child
//     package, by the child from BATON_LISTEN_PPID), a NOTIFY_SOCKET of
//     its own, BATON_PROGRAM,
//     BATON_GENERATION and BATON_STOP_TIMEOUT, and its handoff socket
//     as the descriptor after them (BATON_HANDOFF_FD);
//  2. wait until it is ready: READY=1 on its notify socket (from any of
//     its processes, systemd-notify included), an HTTP check that only
//     counts the new generation's own answers, or a delay;
//  3. send the stop signal to generation N's process group, wait for its
//     exit status, and SIGKILL the group after the stop timeout.
//
// A generation N+1 that exits or misses its ready timeout is killed with
// its group, and N keeps serving: a rollback, logged with the last lines
// of N+1's output. Generations still draining never block the next
// handover; handover requests that arrive during one are merged into one
// more. Every event carries its generation, so the late exit of an old
// generation never restarts the current one. Children run in their own
// process groups, get their stop signal if baton dies (the parent-death
// signal, set from one locked OS thread), and are always reaped; what is
// left of a group when its leader exits is killed with it.
//
// # Who owns what
//
// Each piece of state has one owner, and others send it messages:
//
//   - The Supervisor's loop (supervisor.go, Run's goroutine) owns the
//     config that runs, the program table and the builders. Every public
//     method posts a message to it and waits for the answer.
//   - The config reader (reload.go) reads and validates the config file
//     and opens the new sockets, one reload at a time, before the loop
//     sees it; no file I/O runs in the loop. What a reload changes is
//     planned by planReload (plan.go), a pure function of the old and the
//     new config, and applied by the loop's apply.
//   - Each program (program.go) has one goroutine that owns its
//     generations, its restart policy and its counters. Its life is a
//     phase (phase.go: building, waiting, starting, running, baking,
//     backoff, exited, stopping, stopped, shutting down), with the legal
//     transitions in one table; status reports the phase as the
//     program's state. The restart policy is a pure tracker (restart.go);
//     a bake judges a new generation beside the old one (bake.go); the
//     health of the serving one, liveness and memory, is sampled and
//     answered by a handover (monitor.go); the binaries that served are
//     kept for rollback (keep.go). A program reaches the rest of baton
//     only through its programEnv (env.go), which the phase tests
//     replace with fakes.
//   - Start order (after): programs report where they stand to the loop,
//     which releases the programs waiting for them (supervisor.go,
//     release).
//   - A generation (generation.go) is a started process group: its
//     reaper, output pumps, notify reader (notify.go) and readiness check
//     (ready.go) post events to its program. Its program's goroutine
//     reaps it (evZombie), so that one that exits while baton upgrades
//     itself stays a zombie for the next image.
//   - Idle connections (handoff.go, internal/handoff): each program has a
//     router, which holds baton's end of every generation's handoff
//     socket. The program's goroutine tells it which generation serves
//     (setCurrent) before it stops the old one; a reader goroutine per
//     generation answers it and passes the idle connections a draining
//     generation sends to the serving one. A connection in baton's hands
//     is baton's until the send to the next owner returned.
//   - Listening sockets (sockets.go) live in a pool shared by every
//     program; whoever needs them (a program's config, a running
//     generation, a reload on its way) holds a lease and releases it
//     exactly once. A socket closes when no lease is left.
//   - baton dev's builders (build.go) build, and ask their program for a
//     handover after each good build; the watcher (internal/watch) and
//     the control socket (control.go, wire types in supervisor/control)
//     turn file changes and CLI commands into the same messages.
//
// # Production
//
// A serving generation that exits on its own is restarted after a capped,
// jittered exponential backoff (the restart block); the socket stays open
// meanwhile. StopProgram and StartProgram suspend and resume a program,
// RestartProgram hands it over with its current config, Status reports
// every program, ProgramLogs and FollowProgram read its output ring
// (10,000 lines, 1 MiB); a program with a log file writes its output
// there, rotated by size. The control socket serves all of these as JSON
// over HTTP to baton's CLI (mode 0600, peers of another uid refused with
// SO_PEERCRED), and the metrics block serves Prometheus metrics. Under
// systemd, baton notifies READY=1, RELOADING=1 and STOPPING=1 on its own
// NOTIFY_SOCKET, and gives the sockets it was passed (LISTEN_FDS) to the
// program listeners of the same name.
//
// # Upgrading in place
//
// Upgrade (upgrade.go) replaces the running baton by the binary on disk
// without a new process: once the binary passed its checks, every
// program lets its handover under way end and parks the readers of its
// generations (upgrade_program.go), and the loop passes the descriptors
// and the state (upgrade_state.go) to the binary it execs from the
// spawner's thread, which forked every generation (spawner_linux.go says
// why that thread). The new image takes the state with TakeUpgrade and
// New goes on from it: same pid, same children, same sockets, counters
// going on. Run serves the spawner on the calling goroutine when that
// runs on the process's main thread, as cmd/baton's does.
//
// # Signals (of cmd/baton)
//
//	SIGHUP           Reload with Force: re-read the config; hand over every program
//	SIGUSR2          Upgrade: replace baton by the binary on disk, in place
//	SIGTERM, SIGINT  stop every program gracefully (Run's context), then exit;
//	                 /readyz fails first, and with shutdown_delay the
//	                 programs serve that long before they stop (readyz.go)
//	SIGQUIT          Kill: SIGKILL every process group, reap, exit
//
// # Load balancers and PID 1
//
// /livez and /readyz (readyz.go) tell load balancers and orchestrators
// whether baton answers and whether every program that should serve
// serves; a handover never fails /readyz, and the final stop fails it
// at once. As PID 1 or a child subreaper, cmd/baton reaps the orphans
// of the programs (internal/reaper): every own child is started through
// reaper.Start, so that its exit status stays for os/exec's Wait.
//
// # Config
//
// See package config and the README for the schema. Relative paths
// resolve against the config file's directory; a reload is all or
// nothing.
package supervisor
