package provider

import (
	"context"
	"io"
	"time"
)

// Entry is one sealed row of a domain's store.
type Entry struct {
	Name    string
	KeyID   string // the MK Sealed is sealed under
	Version int64  // 1 at creation, +1 on every write by a service
	Sealed  []byte // see Key.Seal
	Created time.Time
	Updated time.Time
	// Ref is the store's own handle on the row, in the order RewrapRange
	// walks. An entry deleted and created again gets a new one.
	Ref int64
}

// Cond is a precondition on a write or delete.
type Cond struct {
	IfVersion  int64 // > 0: apply only if the entry is at this version
	CreateOnly bool  // apply only if the entry does not exist
}

// MetaUpdate changes key metadata and named state values in one atomic step.
type MetaUpdate struct {
	PutKeys    []KeyInfo         // insert or replace by ID
	DeleteKeys []string          // IDs
	Set        map[string][]byte // state values to set
	Unset      []string          // state values to remove
}

// Store is one domain's persistent store: sealed entries, MK metadata (never
// material) and small named state values. It knows nothing of keys or
// crypto; the embedded implementation is SQLite, and a key-value backend can
// implement it too. All methods are safe for concurrent use.
type Store interface {
	// Get returns the entry, or ErrNotFound.
	Get(ctx context.Context, name string) (Entry, error)
	// Put creates or replaces e.Name with e.KeyID and e.Sealed, subject to c,
	// and returns the new version. It fails with ErrExists (CreateOnly) or
	// ErrVersionMismatch (IfVersion, including when the entry is absent).
	// It returns only once the write is durable.
	Put(ctx context.Context, e Entry, c Cond) (int64, error)
	// Import creates or replaces every entry next yields until it returns
	// io.EOF, in one atomic step: all of them are written, or none (an
	// error from next fails the import). A name yielded twice fails it with
	// a *DuplicateError. It returns how many entries it wrote.
	Import(ctx context.Context, next func() (Entry, error)) (int, error)
	// Delete removes name, if at ifVersion when ifVersion > 0. It fails
	// with ErrNotFound or ErrVersionMismatch.
	Delete(ctx context.Context, name string, ifVersion int64) error
	// List returns up to limit names greater than after, sorted bytewise.
	List(ctx context.Context, after string, limit int) ([]string, error)
	// Count returns the number of entries, cheaply.
	Count(ctx context.Context) (int64, error)
	// CountByKey returns the number of entries sealed under keyID by
	// looking at every entry: the proof VERIFY needs, and slow.
	CountByKey(ctx context.Context, keyID string) (int64, error)
	// KeyUsage returns, per MK ID with entries, how many entries are sealed
	// under it, as kept with every write: exact, and cheap.
	KeyUsage(ctx context.Context) (map[string]int64, error)
	// RewrapRange re-seals under to, in one atomic step, the entries sealed
	// under from among up to limit entries in the store's own order after
	// the Ref after (0: from the start). Each row is read, passed to
	// reseal and written back with no other write in between, so a
	// concurrent write is never overwritten. Versions do not change: the
	// value did not. It returns how many entries it rewrote and the Ref to
	// continue after; when next equals after, every entry has been
	// examined. If reseal fails, nothing of the range is written and its
	// error is returned as is. The writes may not be durable against power
	// loss on return; Sync makes them so.
	RewrapRange(ctx context.Context, from, to string, after int64, limit int, reseal Reseal) (n int, next int64, err error)
	// Keys returns the MK metadata.
	Keys(ctx context.Context) ([]KeyInfo, error)
	// State returns a named state value, or nil if unset.
	State(ctx context.Context, name string) ([]byte, error)
	// UpdateMeta applies u atomically and durably.
	UpdateMeta(ctx context.Context, u MetaUpdate) error
	// Sync makes every write that has returned durable.
	Sync(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Each yields the elements of xs, then io.EOF: an import of a slice.
func Each[T any](xs []T) func() (T, error) {
	i := 0
	return func() (T, error) {
		if i == len(xs) {
			var zero T
			return zero, io.EOF
		}
		i++
		return xs[i-1], nil
	}
}
