package domains_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// A crash in the middle of writing a key file or the schedule leaves a
// temporary file, which may hold material of a key never recorded: the
// next start removes it.
func TestOpen_RemovesFilesHalfWrittenByACrash(t *testing.T) {
	dir := t.TempDir()
	cfg := domains.Config{DataDir: dir, TickMax: 1 << 62}
	r, err := domains.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	leftovers := []string{
		filepath.Join(dir, "keys", "S3", ".0123456789abcdef.key.tmp-42"),
		filepath.Join(dir, ".schedule.json.tmp-7"),
	}
	for _, p := range leftovers {
		if err := os.WriteFile(p, []byte("half-written"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err = domains.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, p := range leftovers {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after start (%v)", p, err)
		}
	}
	if st, _ := r.DomainStatus(t.Context(), "S3"); st.Status != domains.StatusActive {
		t.Fatalf("S3 %+v", st)
	}
}
