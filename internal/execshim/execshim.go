// Package execshim is the few lines of code that run between fork and the
// supervised program: they set LISTEN_PID to the program's own pid and exec
// it, so that sd_listen_fds(3) in any language accepts the inherited sockets.
//
// The supervisor cannot know a child's pid before the fork, and the
// socket-activation protocol requires LISTEN_PID to equal it. So the
// supervisor starts its own executable with EnvMarker set; this package's
// init function notices the marker, fixes the environment and replaces the
// process image with the real program. exec keeps the pid, the inherited
// file descriptors, the process group and the parent-death signal.
//
// Any binary that imports this package (baton itself, and the supervisor's
// test binaries) can therefore serve as the shim.
package execshim

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// EnvMarker is set in the shim's environment only. The shim removes it
// before it execs the program.
const EnvMarker = "BATON_EXEC_SHIM"

// Self is the path the supervisor starts as the shim: its own executable,
// found even if the file on disk was replaced or deleted since.
const Self = "/proc/self/exe"

// Exit codes of a shim that could not exec the program, as shells use them.
const (
	ExitCannotExec = 126 // found but not executable
	ExitNotFound   = 127 // no such file
)

// Args returns the argv for the shim: it execs path with argv.
func Args(path string, argv []string) []string {
	return append([]string{"baton-exec", path}, argv...)
}

func init() {
	if os.Getenv(EnvMarker) != "1" {
		return
	}
	os.Exit(run(os.Args))
}

// textBusyRetries bounds the retries of an exec that fails with ETXTBSY:
// a binary that was just written may still be open for writing in a
// process that has not closed it yet (golang/go#22315).
const textBusyRetries = 20

func run(args []string) int {
	os.Unsetenv(EnvMarker)
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "baton: exec shim: missing program")
		return ExitNotFound
	}
	path, argv := args[1], args[2:]
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	var err error
	for i := 0; ; i++ {
		err = syscall.Exec(path, argv, os.Environ())
		if !errors.Is(err, syscall.ETXTBSY) || i == textBusyRetries {
			break
		}
		time.Sleep(time.Duration(i+1) * 10 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "baton: cannot start %s: %v\n", path, err)
	if errors.Is(err, syscall.ENOENT) {
		return ExitNotFound
	}
	return ExitCannotExec
}
