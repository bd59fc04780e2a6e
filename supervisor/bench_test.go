package supervisor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/baton-run/baton/supervisor/config"
)

// BenchmarkSocketOpen is the cost of a listener the first time baton needs
// it: socket, bind, listen, close. It is paid once per address, not per
// handover.
func BenchmarkSocketOpen(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s, err := openSocket("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s.close()
	}
}

// BenchmarkSocketPassing is the socket work of each handover on a socket
// that is already open: the reload leases it for the new config, the new
// generation takes a lease of its own, then the old config and the old
// generation release theirs. The descriptor itself reaches the child
// through fork and exec, which the handover benchmark (go run ./bench)
// measures with the process start.
func BenchmarkSocketPassing(b *testing.B) {
	t := newSocketPool()
	ls := []config.Listener{{Name: "http", Address: "127.0.0.1:0"}, {Name: "admin", Address: "127.0.0.1:0"}}
	serving, err := t.acquire("orders", ls)
	if err != nil {
		b.Fatal(err)
	}
	defer serving.release()
	b.ReportAllocs()
	for b.Loop() {
		cfg, err := t.acquire("orders", ls)
		if err != nil {
			b.Fatal(err)
		}
		gen := cfg.clone()
		cfg.release()
		gen.release()
	}
	if s := serving.sockets[0]; s.refs != 1 || s.file == nil {
		b.Fatalf("want the serving socket open with 1 lease, have %d", s.refs)
	}
}

// BenchmarkNotifySocket is the other socket of a new generation: its own
// notify socket, created when it starts and removed when it exits.
func BenchmarkNotifySocket(b *testing.B) {
	dir, err := os.MkdirTemp("", "baton-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "orders.1.sock")
	b.ReportAllocs()
	for b.Loop() {
		n, err := listenNotify(path)
		if err != nil {
			b.Fatal(err)
		}
		n.close()
	}
}
