package child

import (
	"context"
	"os"
	"testing"
)

type benchOrder struct {
	ID   string `json:"id"`
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// Enqueue from 16 goroutines, as 16 handlers would, into a writer whose
// Flush does nothing: the cost of the acknowledgement itself. With the
// journal, each Enqueue waits for a group-committed fdatasync on the disk
// that holds the temporary directory; "nosync" leaves the sync out, to
// tell the machinery's cost from the disk's.
func BenchmarkEnqueue(b *testing.B) {
	for _, mode := range []string{"memory", "journal", "journal-nosync"} {
		b.Run(mode, func(b *testing.B) {
			cfg := BatchConfig[benchOrder]{Flush: func(context.Context, []benchOrder) error { return nil }, Logger: quietLogger()}
			if mode != "memory" {
				cfg.Journal = b.TempDir()
			}
			w, err := OpenBatchWriter(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if mode == "journal-nosync" {
				w.j.sync = func(*os.File) error { return nil }
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- w.Run(ctx) }()
			o := benchOrder{ID: "dnc8eb1uitqf-18616-0-33", Item: "widget", Qty: 1}
			b.SetParallelism(8) // 16 goroutines on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := w.Enqueue(context.Background(), o); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			if w.j != nil && w.j.syncs > 0 {
				b.ReportMetric(float64(w.j.items)/float64(w.j.syncs), "items/sync")
				b.ReportMetric(float64(w.j.syncT.Microseconds())/float64(w.j.syncs), "µs/sync")
			}
		})
	}
}
