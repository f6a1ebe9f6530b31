package provider

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// pageCacheStatus returns SQLite's count of op (an SQLITE_STATUS_PAGECACHE_*).
func pageCacheStatus(t *testing.T, op int32) int64 {
	t.Helper()
	tls := libc.NewTLS()
	defer tls.Close()
	p := libc.Xcalloc(tls, 2, 8)
	defer libc.Xfree(tls, p)
	if rc := sqlite3.Xsqlite3_status64(tls, op, p, p+8, 0); rc != sqlite3.SQLITE_OK {
		t.Fatalf("sqlite3_status64(%d): SQLite error %d", op, rc)
	}
	return int64(binary.NativeEndian.Uint64(libc.GoBytes(p, 8)))
}

// A store's pages live in the slots set aside at start, not in memory
// allocated page by page (see pageCacheSlots).
func TestPageCache_PagesUseTheSlots(t *testing.T) {
	if pageCacheErr != nil {
		t.Fatal(pageCacheErr)
	}
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "S3.db"), SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(t.Context(), Entry{Name: "a", KeyID: "K", Sealed: []byte("v")}, Cond{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if used := pageCacheStatus(t, sqlite3.SQLITE_STATUS_PAGECACHE_USED); used < 2 {
		t.Errorf("%d page slots in use with a store open and read; want its pages in them", used)
	}
	if over := pageCacheStatus(t, sqlite3.SQLITE_STATUS_PAGECACHE_OVERFLOW); over > 1<<20 {
		t.Errorf("%d bytes of pages allocated outside the slots with one small store open", over)
	}
}
