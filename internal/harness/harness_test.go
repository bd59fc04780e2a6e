package harness

import (
	"reflect"
	"testing"
)

func TestStrip(t *testing.T) {
	in := []string{"PATH=/bin", "LISTEN_FDS=1", "LISTEN_PID=7", "NOTIFY_SOCKET=/run/n", "BATON_PROGRAM=app", "BATON_HANDOFF_FD=4", "HOME=/root", "MY_LISTEN_FDS=x"}
	want := []string{"PATH=/bin", "HOME=/root", "MY_LISTEN_FDS=x"}
	if got := strip(in); !reflect.DeepEqual(got, want) {
		t.Fatalf("strip: have %q, want %q", got, want)
	}
}
