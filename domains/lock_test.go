package domains_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/internal/fsx"
)

// Invariant 5 across processes: a second registry on the same data dir is
// refused at once, naming the pid that holds it; after Close it opens.
func TestOpen_SecondOnSameDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := domains.Config{DataDir: dir, TickMax: 1 << 62}
	r, err := domains.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = domains.Open(t.Context(), cfg)
	if !errors.Is(err, fsx.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second open: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2, err := domains.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	r2.Close()
}
