package reaper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-run/baton/internal/procfs"
	"golang.org/x/sys/unix"
)

// makeOrphans starts a shell, as an own child, that leaves n background
// jobs behind and exits 0: each job waits until the returned pipe is
// closed, then exits 5. It returns their pids, now children of this
// process (a subreaper).
func makeOrphans(t *testing.T, n int) (pids []int, release *os.File) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	script := strings.Repeat("(cat <&3 >/dev/null; exit 5) >/dev/null 2>&1 & echo $!\n", n) + "exit 0"
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{pr}
	out, err := CombinedOutput(cmd)
	pr.Close()
	if err != nil {
		t.Fatalf("orphan maker: %v: %s", err, out)
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("orphan maker said %q", out)
		}
		pids = append(pids, pid)
	}
	mine := map[int]bool{}
	for _, c := range children() {
		mine[c.PID] = true
	}
	for _, pid := range pids {
		if !mine[pid] {
			t.Fatalf("orphan %d is not a child of this process (the subreaper)", pid)
		}
	}
	return pids, pw
}

// Orphans that exit are reaped, each once, with their status, while own
// children are zombies that nobody waited for yet: their statuses are
// left for their Cmd.Wait. Orphans alive at Stop are killed and reaped.
func TestReaper_orphansReapedOwnChildrenNot(t *testing.T) {
	if err := SetSubreaper(); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	reaped := make(chan Orphan, 100)
	r := New(func(o Orphan) { reaped <- o })

	orphans, release := makeOrphans(t, 10)
	// 50 own children exit, and stay zombies: Wait comes only after the
	// orphans were reaped, so a reaper that took any zombie would take
	// theirs.
	var own []*exec.Cmd
	for i := 1; i <= 50; i++ {
		cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("exit %d", i))
		if err := Start(cmd); err != nil {
			t.Fatal(err)
		}
		own = append(own, cmd)
	}
	for _, cmd := range own {
		waitZombie(t, cmd.Process.Pid)
	}
	release.Close()
	want := map[int]bool{}
	for _, pid := range orphans {
		want[pid] = true
	}
	for len(want) > 0 {
		select {
		case o := <-reaped:
			if !want[o.PID] || o.Status.ExitStatus() != 5 {
				t.Fatalf("reaped %v; want one of the orphans %v with exit status 5", o, orphans)
			}
			delete(want, o.PID)
		case <-time.After(30 * time.Second):
			t.Fatalf("orphans not reaped: %v", want)
		}
	}

	for i, cmd := range own {
		err := cmd.Wait()
		Forget(cmd.Process.Pid)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != i+1 {
			t.Errorf("own child %d: want exit status %d, have %v", cmd.Process.Pid, i+1, err)
		}
	}

	alive, keep := makeOrphans(t, 2)
	defer keep.Close()
	// Each orphan's cat becomes an orphan too when it is killed.
	if n := r.Stop(); n < 2 {
		t.Fatalf("Stop: want at least 2 orphans killed, have %d", n)
	}
	for _, pid := range alive {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("orphan %d still exists after Stop: %v", pid, err)
		}
	}
	if left := children(); len(left) != 0 {
		t.Errorf("children left: %+v", left)
	}
}

// waitZombie waits until pid, a child of this process, has exited and is
// a zombie that nobody waited for: waitid with WNOWAIT returns at its
// exit and leaves it a zombie (ECHILD if something reaped it already).
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	for {
		err := unix.Waitid(unix.P_PID, pid, nil, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("child %d: %v", pid, err)
		}
		if st, err := procfs.Read(pid); err != nil || st.State != 'Z' {
			t.Fatalf("child %d after its exit: %+v, %v", pid, st, err)
		}
		return
	}
}
