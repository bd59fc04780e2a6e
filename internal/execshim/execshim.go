// Package execshim is the few lines of code that run between fork and the
// supervised program: they set LISTEN_PID to the program's own pid and exec
// it, so that sd_listen_fds(3) in any language accepts the inherited sockets.
//
// The supervisor cannot know a child's pid before the fork, and the
// socket-activation protocol requires LISTEN_PID to equal it. exec keeps
// the pid, the inherited file descriptors, the process group and the
// parent-death signal, so a shim that sets the variable and execs the
// program does it. Command picks one of two:
//
//   - /bin/sh, with a one-line script: about half a millisecond, and any
//     user may run it;
//   - the supervisor's own executable, started with EnvMarker set: this
//     package's init function notices the marker, fixes the environment
//     and replaces the process image with the program. It costs the start
//     of a Go runtime (about 3 ms for baton), but keeps what a shell would
//     not: environment variables whose names are not shell identifiers
//     (dash drops "spring.profiles.active"), the program's own argv[0],
//     and a retry when the binary is still busy being written (ETXTBSY).
//
// Any binary that imports this package (baton itself, and the supervisor's
// test binaries) can serve as the second shim.
//
// A binary that links baton's child package needs neither: it sets its
// own LISTEN_PID from BATON_LISTEN_PPID (see package internal/protocol),
// and baton starts it directly.
package execshim

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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

// Args returns the argv for the Go shim (Self): it execs path with argv.
func Args(path string, argv []string) []string {
	return append([]string{"baton-exec", path}, argv...)
}

// Shell is the shell of the fast shim; a variable so that tests can take
// it away.
var Shell = "/bin/sh"

// shellScript sets LISTEN_PID to the shell's own pid, which the program
// keeps through exec, and execs the program: "$0" is its path, "$@" its
// arguments.
const shellScript = `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`

// Command returns the executable and argv that run the program at path
// with argv and env, LISTEN_PID set to its own pid, and the environment
// to give it: through Shell when the shell passes env on intact, through
// the Go shim otherwise. Under the shell the program's argv[0] is its
// path (a bare command name becomes the path it was found at).
func Command(path string, argv, env []string) (exe string, args, environ []string) {
	if UsesShell(env) {
		return Shell, append([]string{"sh", "-c", shellScript, path}, argv[1:]...), env
	}
	return Self, Args(path, argv), append(env[:len(env):len(env)], EnvMarker+"=1")
}

// UsesShell reports whether Command starts a program with env through
// the shell: it exists, and env's names are all shell identifiers.
func UsesShell(env []string) bool {
	if !shellSafe(env) {
		return false
	}
	st, err := os.Stat(Shell)
	return err == nil && st.Mode()&0o111 != 0
}

// shellSafe reports whether a POSIX shell passes env on unchanged: every
// name is a shell identifier (dash drops the others from the environment
// of what it execs).
func shellSafe(env []string) bool {
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name == "" {
			return false
		}
		for i, c := range name {
			if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
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
