package protocol

import "testing"

// BenchmarkParseMessage parses the datagram every child sends once it
// serves.
func BenchmarkParseMessage(b *testing.B) {
	msg := []byte("READY=1\nSTATUS=serving on 127.0.0.1:8080")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := ParseMessage(msg)
		if err != nil || !m.Ready {
			b.Fatalf("want READY, have %+v (%v)", m, err)
		}
	}
}
