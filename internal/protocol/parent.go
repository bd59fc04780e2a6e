package protocol

import (
	"os"
	"strconv"
)

// EnvListenParent replaces LISTEN_PID for a program that baton starts
// without an exec shim: its value is baton's pid. baton cannot know a
// child's pid before the fork, and sd_listen_fds(3) requires LISTEN_PID
// to equal it, so a program in any language starts through a shim that
// sets LISTEN_PID and execs it (package internal/execshim). A binary
// that links this package honours this variable instead (AdoptListenPID
// runs in its init function), and baton, which finds the variable's
// name in a binary's content when it hashes it, starts such a binary
// directly: one exec instead of two, the program's own argv[0], and its
// environment passed on whatever its names.
const EnvListenParent = "BATON_LISTEN_PPID"

func init() { AdoptListenPID() }

// AdoptListenPID sets LISTEN_PID to this process's pid when
// BATON_LISTEN_PPID names its parent and LISTEN_PID is unset: baton
// started this process directly. It removes BATON_LISTEN_PPID either
// way, so that a process this one starts never adopts sockets meant for
// it. It runs when the package is initialised, before any code of the
// program reads LISTEN_PID; calling it again does nothing.
func AdoptListenPID() {
	parent, ok := os.LookupEnv(EnvListenParent)
	if !ok {
		return
	}
	os.Unsetenv(EnvListenParent)
	if _, set := os.LookupEnv(EnvListenPID); set {
		return
	}
	if parent == strconv.Itoa(os.Getppid()) {
		os.Setenv(EnvListenPID, strconv.Itoa(os.Getpid()))
	}
}
