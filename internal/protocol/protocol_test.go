package protocol

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Message
		wantErr string
	}{
		{in: "READY=1", want: Message{Ready: true}},
		{in: "READY=1\nSTATUS=serving on :8080\n", want: Message{Ready: true, Status: "serving on :8080", HasStatus: true}},
		{in: "STOPPING=1\nSTATUS=", want: Message{Stopping: true, HasStatus: true}},
		{in: "RELOADING=1\nMONOTONIC_USEC=123", want: Message{Reloading: true}},
		{in: "BARRIER=1", want: Message{Barrier: true}},
		{in: "MAINPID=42\nERRNO=2", want: Message{MainPID: 42, Errno: 2}},
		{in: "EXTEND_TIMEOUT_USEC=5000000", want: Message{ExtendTimeoutUsec: 5000000}},
		{in: "READY=0", want: Message{}},
		{in: "X_UNKNOWN=1", want: Message{}},
		{in: "STATUS=a=b", want: Message{Status: "a=b", HasStatus: true}},
		{in: "", wantErr: "empty"},
		{in: "\n\n", wantErr: "empty"},
		{in: "READY", wantErr: "no '='"},
		{in: "MAINPID=x", wantErr: "bad MAINPID"},
		{in: "MAINPID=0", wantErr: "bad MAINPID"},
		{in: "ERRNO=-1", wantErr: "bad ERRNO"},
		{in: "EXTEND_TIMEOUT_USEC=1s", wantErr: "bad EXTEND_TIMEOUT_USEC"},
	} {
		got, err := ParseMessage([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseMessage(%q): want error %q, have %v", tc.in, tc.wantErr, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseMessage(%q): want %+v, have %+v, %v", tc.in, tc.want, got, err)
		}
	}
}

func TestSplitNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want []string
	}{
		{"http", 1, []string{"http"}},
		{"http:admin", 2, []string{"http", "admin"}},
		{"", 2, []string{"unknown", "unknown"}},
		{"http::x", 3, []string{"http", "unknown", "x"}},
	} {
		if got := SplitNames(tc.in, tc.n); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitNames(%q, %d): want %q, have %q", tc.in, tc.n, tc.want, got)
		}
	}
}

func TestValidName(t *testing.T) {
	for in, want := range map[string]bool{
		"http": true, "admin-2.sock": true, "": false, "a:b": false, "a b": false,
		strings.Repeat("x", 255): true, strings.Repeat("x", 256): false, "é": false,
	} {
		if got := ValidName(in); got != want {
			t.Errorf("ValidName(%q): want %v, have %v", in, want, got)
		}
	}
}

func TestInherit_sdListenFdsRules(t *testing.T) {
	self := os.Getpid()
	pid := fmt.Sprint(self)
	for _, tc := range []struct {
		name               string
		pidVar, fds, names string
		wantIgnored        string
		wantErr            string
		wantNames          []string
	}{
		{name: "nothing"},
		{name: "no pid", fds: "1", wantIgnored: "LISTEN_PID is not"},
		{name: "other pid", pidVar: "1", fds: "1", wantIgnored: "LISTEN_PID=1 is not this process"},
		{name: "bad pid", pidVar: "x", fds: "1", wantErr: "bad LISTEN_PID"},
		{name: "bad count", pidVar: pid, fds: "two", wantErr: "bad LISTEN_FDS"},
		{name: "zero", pidVar: pid, fds: "0", wantErr: "bad LISTEN_FDS"},
		{name: "names mismatch", pidVar: pid, fds: "1", names: "a:b", wantErr: "2 names for 1"},
		{name: "not a socket", pidVar: pid, fds: "1", names: "http", wantErr: "not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Open(os.DevNull) // an inherited fd that is not a socket
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			in, err := Inherit(tc.pidVar, tc.fds, tc.names, self, int(f.Fd()))
			files, names, ignored := in.Files, in.Names, in.Ignored
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error %q, have %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(ignored, tc.wantIgnored) || (tc.wantIgnored == "" && ignored != "") {
				t.Fatalf("ignored: want %q, have %q", tc.wantIgnored, ignored)
			}
			if len(files) != 0 || len(names) != 0 {
				t.Fatalf("want no sockets, have %v", names)
			}
		})
	}
}

func TestStats_roundTripAndQuantile(t *testing.T) {
	st := Stats{Buckets: make([]uint64, len(StatsBuckets)+1)}
	add := func(d time.Duration, n int, errs int) {
		st.Buckets[Bucket(d)] += uint64(n)
		st.Total += uint64(n)
		st.Errors += uint64(errs)
	}
	add(300*time.Microsecond, 980, 0)
	add(40*time.Millisecond, 20, 5)
	m, err := ParseMessage([]byte("READY=1\n" + StatsField + "=" + st.Format()))
	if err != nil || m.Stats == nil {
		t.Fatal(err)
	}
	if m.Stats.Total != 1000 || m.Stats.Errors != 5 || m.Stats.Buckets[Bucket(40*time.Millisecond)] != 20 {
		t.Fatalf("want the counts back, have %+v", m.Stats)
	}
	if q := m.Stats.Quantile(0.99); q != 50*time.Millisecond {
		t.Fatalf("p99: want 50ms (the bound of the 40ms bucket), have %v", q)
	}
	if q := m.Stats.Quantile(0.5); q != 500*time.Microsecond {
		t.Fatalf("p50: want 500µs, have %v", q)
	}
	// The 20 requests of the 40ms bucket may have taken up to 50ms.
	for d, want := range map[time.Duration]uint64{10 * time.Millisecond: 20, 40 * time.Millisecond: 20, 50 * time.Millisecond: 0, 100 * time.Microsecond: 1000} {
		if n := m.Stats.Above(d); n != want {
			t.Errorf("Above(%v): want %d, have %d", d, want, n)
		}
	}
	later := *m.Stats
	later.Buckets = append([]uint64(nil), later.Buckets...)
	later.Buckets[Bucket(5*time.Second)] += 10
	later.Total += 10
	if d := later.Sub(*m.Stats); d.Total != 10 || d.Quantile(0.99) != 5*time.Second {
		t.Fatalf("difference: %+v", d)
	}
	for _, bad := range []string{"2 1 0", "1 1 2" + strings.Repeat(" 0", len(StatsBuckets)+1), "1 x 0", "1 1 0 1"} {
		if _, err := ParseStats(bad); err == nil {
			t.Errorf("ParseStats(%q): want an error", bad)
		}
	}
}

// A process's watchdog is systemd's WATCHDOG_USEC when WATCHDOG_PID is
// unset or names it, as sd_watchdog_enabled(3) reads it, and neither
// variable is left for what it starts.
func TestTakeWatchdog(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"200000", "", 200 * time.Millisecond},
		{"200000", strconv.Itoa(os.Getpid()), 200 * time.Millisecond},
		{"200000", "1", 0}, // another process's watchdog
		{"", "", 0},
		{"x", "", 0},
		{"-5", "", 0},
	} {
		t.Setenv(EnvWatchdogUsec, tc.usec)
		t.Setenv(EnvWatchdogPID, tc.pid)
		if got := TakeWatchdog(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: want %v, have %v", tc.usec, tc.pid, tc.want, got)
		}
		for _, k := range []string{EnvWatchdogUsec, EnvWatchdogPID} {
			if _, set := os.LookupEnv(k); set {
				t.Errorf("%s is still set", k)
			}
		}
	}
}
