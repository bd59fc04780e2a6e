// Package fakes holds the fake children of baton's tests: small programs
// with one behaviour each (serve, crash at start, never ready, ignore
// SIGTERM, flood stdout, …), run by re-executing the test binary.
package fakes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-run/baton/child"
	"github.com/baton-run/baton/internal/handoff"
	"github.com/baton-run/baton/internal/proctest"
	"github.com/baton-run/baton/internal/protocol"
)

// Children are the fake children, by name: the test binary re-executed
// (proctest.RunChild), one behaviour each.
var Children = map[string]func() int{
	// serve: a well-behaved server. "/" answers its pid. With FAKE_GATE
	// set to a FIFO, it waits for a byte on it before serving (and so
	// before READY); with FAKE_EXIT set, it exits with that code after
	// its drain. Its bad versions, for bakes: FAKE_FAIL_EVERY=N answers
	// every Nth request 500; FAKE_LATENCY adds that much to each
	// request; FAKE_CRASH_AFTER exits with status 2 that long after it
	// is ready.
	"serve": func() int {
		if gate := os.Getenv("FAKE_GATE"); gate != "" {
			f, err := os.Open(gate) // blocks until the test opens it for writing
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			f.Read(make([]byte, 1))
			f.Close()
		}
		code := fakeServe(child.Config{})
		if v := os.Getenv("FAKE_EXIT"); v != "" {
			code, _ = strconv.Atoi(v)
		}
		return code
	},
	// sick: serves, but FAKE_SICK_AFTER after it started (in generation
	// FAKE_SICK_GEN only, when set) its /healthz
	// never answers and its watchdog check fails, as a process whose
	// database pool deadlocked; it ignores SIGTERM (only SIGQUIT or
	// SIGKILL end it). "/" still answers.
	"sick": func() int {
		d, _ := time.ParseDuration(os.Getenv("FAKE_SICK_AFTER"))
		sick := time.Now().Add(d)
		if gen := os.Getenv("FAKE_SICK_GEN"); gen != "" && gen != os.Getenv("BATON_GENERATION") {
			sick = time.Now().Add(time.Hour) // only that generation falls sick
		}
		cfg := child.Config{}
		if os.Getenv("FAKE_IGNORE_TERM") != "" {
			signal.Ignore(syscall.SIGTERM)
			cfg.Signals = []os.Signal{syscall.SIGUSR2}
		}
		cfg.WatchdogCheck = func(ctx context.Context) error {
			if time.Now().After(sick) {
				return errors.New("fake: the database pool is stuck")
			}
			return nil
		}
		return fakeServeWith(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if time.Now().After(sick) {
				<-r.Context().Done() // the behaviour under test: a stuck health check
				return
			}
			fmt.Fprint(w, "ok")
		}))
	},
	// leak: serves, and grows its memory by FAKE_LEAK_MB every 50 ms (in
	// generation FAKE_LEAK_GEN only, when set), as a leak does.
	"leak": func() int {
		mb, _ := strconv.Atoi(os.Getenv("FAKE_LEAK_MB"))
		if gen := os.Getenv("FAKE_LEAK_GEN"); gen != "" && gen != os.Getenv("BATON_GENERATION") {
			mb = 0
		}
		var kept [][]byte
		go func() {
			for range time.Tick(50 * time.Millisecond) { // the behaviour under test: a steady leak
				b := make([]byte, mb<<20)
				for i := 0; i < len(b); i += 4096 {
					b[i] = 1 // resident, not just reserved
				}
				kept = append(kept, b)
			}
		}()
		return fakeServe(child.Config{})
	},
	// oneshot: a one-shot step (a migration): says so and exits with
	// FAKE_EXIT, 0 by default.
	"oneshot": func() int {
		fmt.Println("fake: migrating")
		code, _ := strconv.Atoi(os.Getenv("FAKE_EXIT"))
		return code
	},
	// crash: fails at start, saying why on stderr.
	"crash": func() int {
		fmt.Fprintln(os.Stderr, "fake: cannot open the database: permission denied")
		return 2
	},
	// never-ready: runs but never says READY=1. It prints its notify
	// socket.
	"never-ready": func() int {
		fmt.Printf("fake: warming up forever; notify socket %s\n", os.Getenv("NOTIFY_SOCKET"))
		waitSignal(syscall.SIGTERM)
		return 0
	},
	// late-ready: says READY=1 after FAKE_DELAY, then serves.
	"late-ready": func() int {
		d, _ := time.ParseDuration(os.Getenv("FAKE_DELAY"))
		time.Sleep(d) // the behaviour under test: a slow start
		return fakeServe(child.Config{})
	},
	// ignore-term: ignores SIGTERM; only SIGKILL ends it.
	"ignore-term": func() int {
		signal.Ignore(syscall.SIGTERM)
		return fakeServe(child.Config{Signals: []os.Signal{syscall.SIGUSR2}})
	},
	// mute-ignore-term: speaks no notify protocol and ignores SIGTERM;
	// only SIGKILL ends it. Readiness is a delay or an HTTP check.
	"mute-ignore-term": func() int {
		os.Unsetenv("NOTIFY_SOCKET")
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("fake: ignoring SIGTERM")
		return fakeServe(child.Config{Signals: []os.Signal{syscall.SIGUSR2}})
	},
	// http-only: speaks no notify protocol; readiness is an HTTP check.
	// It serves after FAKE_DELAY.
	"http-only": func() int {
		os.Unsetenv("NOTIFY_SOCKET")
		d, _ := time.ParseDuration(os.Getenv("FAKE_DELAY"))
		time.Sleep(d) // the behaviour under test: a slow start
		return fakeServe(child.Config{})
	},
	// fake-build: a build command. It waits for a byte on the FIFO
	// FAKE_GATE, if set, then writes to its argument a script that runs
	// the fake child "serve"; each build's script is different.
	"fake-build": func() int {
		if gate := os.Getenv("FAKE_GATE"); gate != "" {
			f, err := os.Open(gate)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			f.Read(make([]byte, 1))
			f.Close()
		}
		if os.Getenv("FAKE_FAIL") != "" {
			fmt.Fprintln(os.Stderr, "main.go:3:1: syntax error: unexpected }")
			return 1
		}
		argv, sel := proctest.SelfArgv("serve")
		script := fmt.Sprintf("#!/bin/sh\n# build %d\nexport %s\nexec %q %q\n", time.Now().UnixNano(), sel, argv[0], argv[1])
		if err := os.WriteFile(os.Args[len(os.Args)-1], []byte(script), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	},
	// flood: writes a lot to stdout, then exits.
	"flood": flood,
	// ready-exit: says READY=1, then exits 1 at once.
	"ready-exit": func() int {
		child.Notify("READY=1")
		fmt.Fprintln(os.Stderr, "fake: ready, and gone")
		return 1
	},
	// slow-drain: serves, and after its drain takes FAKE_DELAY more to
	// exit, as a program finishing long background work does.
	"slow-drain": func() int {
		code := fakeServe(child.Config{})
		d, _ := time.ParseDuration(os.Getenv("FAKE_DELAY"))
		child.Notify("STATUS=finishing background work")
		fmt.Println("fake: finishing background work")
		time.Sleep(d) // the behaviour under test: a long drain
		return code
	},
	// env-grandchild: after taking its socket, starts a grandchild that
	// reports what it inherited, then serves.
	"env-grandchild": func() int {
		srv, err := child.New(child.Config{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cmd := proctest.Self("report-env")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return 1
		}
		return child.ExitCode(srv.Serve(context.Background(), http.NotFoundHandler()))
	},
	// report-env: prints the protocol variables and descriptors it got.
	"report-env": func() int {
		// fd 3 may be anything the Go runtime opened; a listening socket
		// there would have been inherited.
		fd3 := "no listening socket"
		if v, err := syscall.GetsockoptInt(3, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err == nil && v == 1 {
			fd3 = "a listening socket"
		}
		// fd 4 would be the handoff socket, after one listener.
		fd4 := "no handoff socket"
		if v, err := syscall.GetsockoptInt(4, syscall.SOL_SOCKET, syscall.SO_TYPE); err == nil && v == syscall.SOCK_SEQPACKET {
			fd4 = "a handoff socket"
		}
		// This process's own init removed BATON_LISTEN_PPID from its
		// environment: what it was started with is in /proc.
		ppid := ""
		if b, err := os.ReadFile("/proc/self/environ"); err == nil {
			for _, kv := range strings.Split(string(b), "\x00") {
				if v, ok := strings.CutPrefix(kv, protocol.EnvListenParent+"="); ok {
					ppid = v
				}
			}
		}
		fmt.Printf("grandchild env: LISTEN_FDS=%q LISTEN_PID=%q LISTEN_FDNAMES=%q NOTIFY_SOCKET=%q BATON_HANDOFF_FD=%q BATON_LISTEN_PPID=%q fd3=%s fd4=%s\n",
			os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES"), os.Getenv("NOTIFY_SOCKET"), os.Getenv("BATON_HANDOFF_FD"), ppid, fd3, fd4)
		return 0
	},
	// handoff-sink: takes the connections a draining generation passes
	// over its handoff socket, says so, and never serves them; it says
	// READY=1 and runs until killed. A generation that dies after it
	// received connections.
	"handoff-sink": func() int {
		e, err := handoff.FromEnv(os.Getenv("LISTEN_PID"))
		if err != nil || e == nil {
			fmt.Fprintln(os.Stderr, "fake: no handoff socket:", err)
			return 1
		}
		p, err := e.Open("http", &net.TCPAddr{})
		if err == nil {
			err = p.WaitAck(5 * time.Second)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		child.Notify("READY=1")
		for {
			a, err := p.Next()
			if err != nil {
				return 1
			}
			fmt.Printf("fake: holding a connection from %s\n", a.Conn.RemoteAddr())
		}
	},
	// orphans: makes FAKE_ORPHANS orphans, each a shell's background job
	// that exits 7 once the shell that started it is gone, then serves.
	// Their parent is then the nearest subreaper, or PID 1.
	"orphans": func() int {
		n, _ := strconv.Atoi(os.Getenv("FAKE_ORPHANS"))
		for i := 0; i < n; i++ {
			if err := exec.Command("/bin/sh", "-c", "(sleep 0.01; exit 7) & exit 0").Run(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		fmt.Printf("fake: made %d orphans\n", n)
		return fakeServe(child.Config{})
	},
	// grandchild: starts a grandchild that would outlive it, then serves.
	"grandchild": func() int {
		cmd := proctest.Self("never-ready")
		cmd.Stdout = os.Stdout
		if err := cmd.Start(); err != nil {
			return 1
		}
		fmt.Printf("grandchild pid %d\n", cmd.Process.Pid)
		return fakeServe(child.Config{})
	},
}

func fakeServe(cfg child.Config) int {
	return fakeServeWith(cfg, nil)
}

// fakeServeWith is fakeServe with health, when not nil, for /healthz.
func fakeServeWith(cfg child.Config, health http.Handler) int {
	notify := os.Getenv("NOTIFY_SOCKET") // child.New takes it from the environment
	srv, err := child.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	failEvery, _ := strconv.Atoi(os.Getenv("FAKE_FAIL_EVERY"))
	latency, _ := time.ParseDuration(os.Getenv("FAKE_LATENCY"))
	if d, err := time.ParseDuration(os.Getenv("FAKE_CRASH_AFTER")); err == nil {
		time.AfterFunc(d, func() {
			fmt.Fprintln(os.Stderr, "fake: crashing, as told")
			os.Exit(2)
		})
	}
	var requests atomic.Int64
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		if latency > 0 {
			time.Sleep(latency) // the behaviour under test: a slow version
		}
		if failEvery > 0 && n%int64(failEvery) == 0 {
			http.Error(w, "fake: a bad version", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, os.Getpid())
	})
	if health == nil {
		health = srv.Health()
	}
	mux.Handle("/healthz", health)
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		groups, _ := syscall.Getgroups()
		fmt.Fprintf(w, "uid=%d gid=%d groups=%v", os.Getuid(), os.Getgid(), groups)
		var st syscall.Stat_t
		if err := syscall.Stat(notify, &st); err == nil {
			fmt.Fprintf(w, " notify=%d:%d/%04o", st.Uid, st.Gid, st.Mode&0o7777)
		}
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		for _, kv := range os.Environ() {
			fmt.Fprintln(w, kv)
		}
	})
	return child.ExitCode(srv.Serve(context.Background(), mux))
}

func waitSignal(sig os.Signal) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sig)
	<-c
}

// flood writes FAKE_BYTES bytes (default 1 GiB) to stdout in 4 KiB lines,
// then exits 0.
func flood() int {
	total, _ := strconv.ParseInt(os.Getenv("FAKE_BYTES"), 10, 64)
	if total <= 0 {
		total = 1 << 30
	}
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	line := strings.Repeat("x", 4095) + "\n"
	for n := int64(0); n < total; n += int64(len(line)) {
		if _, err := w.WriteString(line); err != nil {
			return 1
		}
	}
	if err := w.Flush(); err != nil {
		return 1
	}
	fmt.Fprintln(os.Stderr, "flood: done")
	return 0
}

// Program returns a config.hcl program block called name that runs the
// fake child fake of the test binary, on a port of its own, with extra
// inside the block.
func Program(name, fake, extra string) string {
	argv, sel := proctest.SelfArgv(fake)
	_, child, _ := strings.Cut(sel, "=")
	return fmt.Sprintf(`
program %q {
  command = [%q, %q]
  env     = { %s = %q }
  listener "http" { address = "127.0.0.1:0" }
  %s
}
`, name, argv[0], argv[1], proctest.EnvChild, child, extra)
}
