package procfs

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	line := "4242 (a) b (c)) S 7 4242 4242 0 -1 4194560 100 0 0 0 11 12 13 14 20 0 3 0 555 1000000 321 18446744073709551615\n"
	st, err := parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{PID: 4242, State: 'S', PPID: 7, PGRP: 4242, UTime: 11, STime: 12, CUTime: 13, CSTime: 14, RSS: 321}
	if st != want {
		t.Fatalf("have %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "42 (x) S 1", "x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21", "42 (x) S x 1 0 0 0 0 0 0 0 0 1 1 1 1 0 0 0 0 0 0 0"} {
		if _, err := parse([]byte(bad)); err == nil {
			t.Errorf("parse(%q): want an error", bad)
		}
	}
}

// Read and All see this process and its parent; a child that exited and
// was not waited for is a zombie, Exited, and not Alive.
func TestReadAll(t *testing.T) {
	self, err := Read(os.Getpid())
	if err != nil || self.PPID != os.Getppid() || self.PGRP != syscall.Getpgrp() || self.RSS <= 0 || self.Exited() {
		t.Fatalf("this process: %+v, %v", self, err)
	}
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range all {
		found = found || st.PID == os.Getpid()
	}
	if !found {
		t.Fatal("All left this process out")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skip("no true(1):", err)
	}
	defer cmd.Wait()
	// Wait for its exit without reaping it (WNOWAIT): a zombie until Wait.
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, nil, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if Alive(cmd.Process.Pid) {
		t.Fatal("a zombie is Alive")
	}
	st, err := Read(cmd.Process.Pid)
	if err != nil || !st.Exited() || st.PPID != os.Getpid() {
		t.Fatalf("the exited child: %+v, %v", st, err)
	}
}
