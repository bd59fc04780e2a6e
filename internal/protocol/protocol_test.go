package protocol

import (
	"reflect"
	"strings"
	"testing"
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
