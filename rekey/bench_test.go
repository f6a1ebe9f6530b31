package rekey

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kmd-project/kmd/provider"
)

// BenchmarkRekey100k rekeys a domain of 100k entries of 256 bytes and
// reports entries/s. Each iteration is one complete rekey.
func BenchmarkRekey100k(b *testing.B) {
	const n = 100_000
	e := openEnv(b, b.TempDir(), envOpts{batch: DefaultBatchSize})
	ctx := context.Background()
	val := make([]byte, 256)
	for i := 0; i < n; i += 10_000 {
		items := make([]provider.Item, 10_000)
		for j := range items {
			items[j] = provider.Item{Name: fmt.Sprintf("svc/entry-%07d", i+j), Value: val}
		}
		if err := e.vault.PutAll(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if err := e.eng.Start(provider.LocationLocal); err != nil {
			b.Fatal(err)
		}
		if err := e.wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/time.Since(start).Seconds(), "entries/s")
}
