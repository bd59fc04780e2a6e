package protocol

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// envReport is set in the environment of this test binary re-executed
// as a child: it then prints what AdoptListenPID left, from init.
const envReport = "PROTOCOL_TEST_REPORT_ENV"

func TestMain(m *testing.M) {
	if os.Getenv(envReport) == "1" {
		pid, set := os.LookupEnv(EnvListenPID)
		_, parent := os.LookupEnv(EnvListenParent)
		os.Stdout.WriteString("pid=" + strconv.Itoa(os.Getpid()) + " LISTEN_PID=" + pid + " set=" + strconv.FormatBool(set) + " parent=" + strconv.FormatBool(parent) + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A process started directly with BATON_LISTEN_PPID naming its parent
// has LISTEN_PID set to its own pid by the time its code runs; with
// another parent, or with LISTEN_PID already set, nothing changes. The
// variable is gone in every case, so that what the process starts never
// adopts sockets meant for it.
func TestAdoptListenPID(t *testing.T) {
	self := strconv.Itoa(os.Getpid()) // the child's parent
	for _, tc := range []struct {
		name string
		env  []string
		want func(pid string) string
	}{
		{"its parent", []string{EnvListenParent + "=" + self}, func(pid string) string { return "LISTEN_PID=" + pid + " set=true" }},
		{"another parent", []string{EnvListenParent + "=1"}, func(string) string { return "LISTEN_PID= set=false" }},
		{"LISTEN_PID set", []string{EnvListenParent + "=" + self, EnvListenPID + "=7"}, func(string) string { return "LISTEN_PID=7 set=true" }},
		{"neither", nil, func(string) string { return "LISTEN_PID= set=false" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envReport+"=1")
			cmd.Env = append(cmd.Env, tc.env...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			line := strings.TrimSpace(string(out))
			want := tc.want(strconv.Itoa(cmd.Process.Pid)) + " parent=false"
			if !strings.HasSuffix(line, want) || !strings.HasPrefix(line, "pid="+strconv.Itoa(cmd.Process.Pid)+" ") {
				t.Fatalf("have %q, want pid=%d … %q", line, cmd.Process.Pid, want)
			}
		})
	}
}
