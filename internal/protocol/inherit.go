package protocol

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Inherited are the sockets a process was started with, by the rules of
// sd_listen_fds_with_names(3).
type Inherited struct {
	Files map[string]*os.File // by name; a repeated name gets "#index"
	Names []string            // in descriptor order
	// Ignored says why the variables were present but not for this
	// process (LISTEN_PID is another process, or missing).
	Ignored string
}

// Inherit applies the rules of sd_listen_fds_with_names(3) to the values
// of LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES: no LISTEN_PID, or one that
// is not self, means nothing was passed to us; an unparsable value, a
// count below 1, a name list of the wrong length or a descriptor that is
// not a socket is an error. The descriptors, from first on, are made
// close-on-exec.
func Inherit(pidVar, fdsVar, namesVar string, self, first int) (Inherited, error) {
	var in Inherited
	if pidVar == "" {
		if fdsVar != "" {
			in.Ignored = "LISTEN_FDS is set but LISTEN_PID is not"
		}
		return in, nil
	}
	pid, err := strconv.Atoi(pidVar)
	if err != nil || pid <= 0 {
		return in, fmt.Errorf("bad LISTEN_PID %q", pidVar)
	}
	if pid != self {
		in.Ignored = fmt.Sprintf("LISTEN_PID=%d is not this process (%d)", pid, self)
		return in, nil
	}
	if fdsVar == "" {
		return in, nil
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n <= 0 {
		return in, fmt.Errorf("bad LISTEN_FDS %q", fdsVar)
	}
	if namesVar != "" {
		if got := len(strings.Split(namesVar, ":")); got != n {
			return in, fmt.Errorf("LISTEN_FDNAMES has %d names for %d sockets", got, n)
		}
	}
	names := SplitNames(namesVar, n)
	files := make(map[string]*os.File, n)
	for i, name := range names {
		fd := first + i
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return in, fmt.Errorf("inherited fd %d (%s): %w", fd, name, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
			return in, fmt.Errorf("inherited fd %d (%s) is not a socket", fd, name)
		}
		syscall.CloseOnExec(fd)
		if _, dup := files[name]; dup {
			name = fmt.Sprintf("%s#%d", name, i)
			names[i] = name
		}
		files[name] = os.NewFile(uintptr(fd), name)
	}
	in.Files, in.Names = files, names
	return in, nil
}

// InheritFromEnv reads and unsets LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES, and applies Inherit to them.
func InheritFromEnv() (Inherited, error) {
	in, err := Inherit(os.Getenv(EnvListenPID), os.Getenv(EnvListenFDs), os.Getenv(EnvListenFDNames), os.Getpid(), FirstFD)
	os.Unsetenv(EnvListenPID)
	os.Unsetenv(EnvListenFDs)
	os.Unsetenv(EnvListenFDNames)
	return in, err
}

// Notify sends state to the notify socket at path (a leading '@' names an
// abstract socket), as sd_notify(3) does. An empty path does nothing.
func Notify(path, state string) error {
	if path == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	// A full receive queue would block a blocking send; a lost STATUS is
	// better than a stuck caller.
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = conn.Write([]byte(state))
	return err
}

// TakeWatchdog reads systemd's watchdog for this process, as
// sd_watchdog_enabled(3) does: WATCHDOG_USEC, when WATCHDOG_PID is unset
// or names this process; 0 without one. It removes both variables, so
// that the processes this one starts do not inherit them.
func TakeWatchdog() time.Duration {
	usec, pid := os.Getenv(EnvWatchdogUsec), os.Getenv(EnvWatchdogPID)
	os.Unsetenv(EnvWatchdogUsec)
	os.Unsetenv(EnvWatchdogPID)
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 || (pid != "" && pid != strconv.Itoa(os.Getpid())) {
		return 0
	}
	return time.Duration(n) * time.Microsecond
}
