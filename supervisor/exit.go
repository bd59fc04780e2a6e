package supervisor

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// awaitExit returns once child pid has exited, leaving it a zombie for
// whoever reaps it. It returns an error (ECHILD) if pid is not a child
// of baton's, or was reaped already.
//
// It waits in the runtime's network poller, on a pidfd, rather than in a
// blocking waitid: the runtime lets a goroutine blocked in a system call
// keep its processor for up to 10 ms, and meanwhile its monitor thread
// (sysmon) wakes as often as every 20 µs to look at it. Each generation
// start would set that off, taking the CPU from the starting generation
// on a machine busy serving (BENCH.md, "A fourth look").
func awaitExit(pid int) error {
	if f := pidfd(pid); f != nil {
		defer f.Close()
		if rc, cerr := f.SyscallConn(); cerr == nil {
			var err error
			// Read calls back each time the pidfd becomes readable.
			cerr = rc.Read(func(uintptr) bool {
				done, werr := exited(pid, unix.WNOHANG)
				err = werr
				return done || werr != nil
			})
			if cerr == nil {
				return err
			}
		}
	}
	_, err := exited(pid, 0) // no pidfd in the poller: block in waitid
	return err
}

// pidfd opens a non-blocking pidfd for pid in the network poller, or
// returns nil if the kernel cannot (Linux before 5.10) or pid is gone.
func pidfd(pid int) *os.File {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), "pidfd")
}

// exited reports whether child pid has exited, with options 0 waiting
// until it has; the child stays a zombie.
func exited(pid, options int) (bool, error) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT|options, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		return err == nil && info.Signo != 0, err
	}
}
