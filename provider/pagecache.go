package provider

import (
	"encoding/binary"
	"fmt"

	"modernc.org/libc"
	"modernc.org/libc/sys/types"
	sqlite3 "modernc.org/sqlite/lib"
)

// pageCacheSlots is how many pages SQLite keeps in memory set aside for
// them once, at start (SQLITE_CONFIG_PAGECACHE), rather than in memory
// allocated and freed page by page: about the page caches of one busy
// store (the writer's 512 pages, its readers' and checkpointer's 96) and
// the few pages each idle store holds. Past that, SQLite allocates as
// before. The set-aside memory counts in kmd's RSS only once a page has
// used it, but for the slots' first 4 KiB: 4 MiB.
//
// This build of SQLite has one page cache for every connection and one
// mutex over it (SQLiteOptions.ReaderCacheKiB). Allocated page by page,
// a page of 16 KiB and its header takes a 64 KiB region of the C
// allocator (modernc.org/memory), which answers a free with an madvise
// call once it holds 4 MiB of free regions; those calls ran under the
// page-cache mutex. During a rekey every GET frees its reader's pages
// (pager_reset) and the rewrap frees the writer's (shrink_memory), so
// GETs queued on the mutex: in a runtime trace, most of the time of GETs
// over 3 ms was spent waiting for it. A page in a slot is freed by linking
// it into a list. GET p99 during a 1M rekey under bench's load,
// alternating pairs of windows: 7.0-9.1 ms allocated, 5.2-6.1 ms in slots;
// max 29-45 ms against 9-18 ms. The rekey's time did not change.
const pageCacheSlots = 1024

// pageCacheErr is why the slots could not be set up, if they could not:
// SQLite then allocates every page, which is slower but no less correct.
var pageCacheErr error

func init() { pageCacheErr = setUpPageCache(pageCacheSlots) }

// PageCacheError says why SQLite's page slots could not be set up, or nil.
func PageCacheError() error { return pageCacheErr }

// setUpPageCache gives SQLite n page slots. It must run before SQLite's
// first connection opens (sqlite3_initialize); the memory is never freed.
func setUpPageCache(n int) error {
	tls := libc.NewTLS()
	defer tls.Close()
	va := libc.Xmalloc(tls, 3*8) // a va_list of up to three arguments
	hdr := libc.Xcalloc(tls, 1, 8)
	if va == 0 || hdr == 0 {
		return fmt.Errorf("page cache: out of memory")
	}
	defer libc.Xfree(tls, va)
	defer libc.Xfree(tls, hdr)
	// The bytes SQLite keeps beside each page.
	if rc := sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PCACHE_HDRSZ, libc.VaList(va, hdr)); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("page cache: SQLITE_CONFIG_PCACHE_HDRSZ: SQLite error %d", rc)
	}
	slot := (pageSize + int(int32(binary.NativeEndian.Uint32(libc.GoBytes(hdr, 4)))) + 7) &^ 7
	buf := libc.Xmalloc(tls, types.Size_t(slot*n))
	if buf == 0 {
		return fmt.Errorf("page cache: out of memory for %d slots of %d bytes", n, slot)
	}
	if rc := sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_PAGECACHE, libc.VaList(va, buf, int32(slot), int32(n))); rc != sqlite3.SQLITE_OK {
		libc.Xfree(tls, buf)
		return fmt.Errorf("page cache: SQLITE_CONFIG_PAGECACHE: SQLite error %d", rc)
	}
	return nil
}
