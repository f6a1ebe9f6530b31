package provider

import (
	"context"

	"modernc.org/sqlite"
)

// Checkpoints returns how many checkpoints the store's checkpointer ran.
func (s *SQLiteStore) Checkpoints() int {
	s.ckpt.mu.Lock()
	defer s.ckpt.mu.Unlock()
	return s.ckpt.done
}

// WriterCacheBytes returns the memory the writer connection's page cache
// holds (SQLITE_DBSTATUS_CACHE_USED).
func (s *SQLiteStore) WriterCacheBytes(ctx context.Context) (int, error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n int
	err = conn.Raw(func(dc any) (err error) {
		n, _, err = dc.(sqlite.DBStatus).Status(sqlite.DBStatusCacheUsed, false)
		return err
	})
	return n, err
}
