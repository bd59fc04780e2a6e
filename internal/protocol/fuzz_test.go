package protocol

import (
	"strings"
	"testing"
)

// FuzzParseMessage feeds the notify parser arbitrary datagrams, as any
// process of a generation may send. It must never panic, and what it
// accepts must say what the datagram said.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		"READY=1", "READY=1\nSTATUS=serving", "STOPPING=1\nSTATUS=draining: 3 connections open",
		"BARRIER=1", "RELOADING=1\nMONOTONIC_USEC=123456", "EXTEND_TIMEOUT_USEC=5000000",
		"MAINPID=42", "ERRNO=2", "STATUS=", "\n", "READY", "=", "READY=1\n\nREADY=0", "X=\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			return
		}
		if m.Ready && !strings.Contains(string(b), "READY=1") {
			t.Fatalf("READY without READY=1 in %q", b)
		}
		if m.HasStatus && !strings.Contains(string(b), "STATUS="+m.Status) {
			t.Fatalf("STATUS %q not in %q", m.Status, b)
		}
	})
}
