package provider

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
)

// A rekey rewrites every row of the store. RewrapRange does it a range of
// rows at a time, in one UPDATE statement whose kmd_reseal function
// re-seals each row as SQLite visits it: a row's read and its rewrite are
// one step of one statement on the writer, so no service write can come
// between them and be reverted (invariant 6).
//
// Re-sealing a range ahead, on a reader connection and the other core, was
// tried: the second read of every row and the contention cost more than
// the crypto it moved off the writer (a 100k-entry rekey took 0.45 s with
// it, 0.30 s without).

// Reseal re-encrypts the sealed value of the entry name, appending the
// result to dst. RewrapRange calls it for each row it rewrites; sealed is
// SQLite's own memory, valid only during the call.
type Reseal func(dst []byte, name string, sealed []byte) ([]byte, error)

// yieldEvery is how many rows a rekey loop handles between yields of its
// CPU: some 20-50 µs of work (yield.go).
const yieldEvery = 32

// rewrapJobs are the running RewrapRange statements, by the number they
// pass to kmd_reseal. The function is registered with the driver once, for
// every connection; the job says which keys it uses.
var rewrapJobs struct {
	sync.Mutex
	last int64
	m    map[int64]*rewrapJob
}

type rewrapJob struct {
	reseal Reseal
	pace   *pacer // the store's
	out    []byte
	err    error // the first error of reseal, as it returned it
	rows   int
}

func init() {
	rewrapJobs.m = map[int64]*rewrapJob{}
	sqlite.MustRegisterFunction("kmd_reseal", &sqlite.FunctionImpl{
		NArgs: 3,
		// The name and ciphertext are read in place, never kept.
		VolatileArgs: true,
		Scalar: func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
			num, _ := args[0].(int64)
			rewrapJobs.Lock()
			j := rewrapJobs.m[num]
			rewrapJobs.Unlock()
			if j == nil {
				return nil, fmt.Errorf("kmd_reseal: no rewrap %d is running", num)
			}
			name, _ := args[1].(string)
			sealed, _ := args[2].([]byte)
			return j.row(name, sealed)
		},
	})
}

// row returns the new ciphertext of one row.
func (j *rewrapJob) row(name string, sealed []byte) ([]byte, error) {
	if j.rows++; j.rows%yieldEvery == 0 {
		// Let a service request waiting for a CPU run now, not at the
		// next preemption: one waiting for a P, then one waiting for
		// this thread's CPU.
		runtime.Gosched()
		j.pace.step(time.Now, yieldCPU)
	}
	out, err := j.reseal(j.out[:0], strings.Clone(name), sealed) // an error may keep the name
	if err != nil {
		j.err = err
		return nil, err
	}
	j.out = out // SQLite copies the result; the buffer is reused
	return out, nil
}

func startRewrap(reseal Reseal, pace *pacer) (int64, *rewrapJob) {
	rewrapJobs.Lock()
	defer rewrapJobs.Unlock()
	rewrapJobs.last++
	j := &rewrapJob{reseal: reseal, pace: pace}
	rewrapJobs.m[rewrapJobs.last] = j
	return rewrapJobs.last, j
}

func endRewrap(num int64) {
	rewrapJobs.Lock()
	defer rewrapJobs.Unlock()
	if j := rewrapJobs.m[num]; j != nil {
		clear(j.out)
	}
	delete(rewrapJobs.m, num)
}

// RewrapRange implements Store.
func (s *SQLiteStore) RewrapRange(ctx context.Context, from, to string, after int64, limit int, reseal Reseal) (n int, next int64, err error) {
	if limit < 1 {
		return 0, after, fmt.Errorf("rewrap: limit %d: want at least 1", limit)
	}
	fromNum, ok, err := s.known(ctx, from)
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	toNum, err := s.num(ctx, s.w, to, nil)
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	defer conn.Close()
	// shrink_memory frees the unused pages of every connection's cache.
	// This build of SQLite has one page cache for all of them (see
	// SQLiteOptions.ReaderCacheKiB), and a writer whose cache is full takes
	// the least recently used page of any other: the rewrap would keep
	// every page that other stores' reads (a status poll reads each store)
	// left behind, and kmd would grow for as long as the rekey ran. A 1M
	// rekey polled by kmctl --wait held 13 MiB more at its end than at its
	// start. The rewrap reads each page once, so the cache it loses cost
	// nothing measurable; the pages go back to the slots (pagecache.go).
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL; PRAGMA shrink_memory`); err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	defer func() {
		// Restore FULL for service writes on this, the only writer
		// connection; if that fails, discard the connection rather than
		// let service writes skip their fsync.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = FULL`); rerr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
			if err == nil {
				n, next, err = 0, after, fmt.Errorf("rewrap: %w", rerr)
			}
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	defer tx.Rollback()
	// The range ends at the limit-th row after after, or at the last row.
	var upto int64
	err = tx.QueryRowContext(ctx, `SELECT id FROM entries WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?`, after, limit-1).Scan(&upto)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM entries`).Scan(&upto)
	}
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	if upto <= after {
		return 0, after, nil
	}
	if !ok { // no row was ever sealed under from
		return 0, upto, nil
	}
	job, j := startRewrap(reseal, &s.pace)
	defer endRewrap(job)
	res, err := tx.ExecContext(ctx, `UPDATE entries SET mk = ?1, ct = kmd_reseal(?2, name, ct) WHERE id > ?3 AND id <= ?4 AND mk = ?5`, toNum, job, after, upto, fromNum)
	if j.err != nil {
		return 0, after, j.err
	}
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	k, err := res.RowsAffected()
	if err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	if err := (counted{fromNum: -k, toNum: k}).apply(ctx, tx); err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, after, fmt.Errorf("rewrap: %w", err)
	}
	s.ckpt.wrote(int(k))
	return int(k), upto, nil
}

// The checkpointer starts a checkpoint once checkpointRows rows or
// checkpointCommits commits have been written since its last: a few MiB of
// WAL for a rekey or an import, a fraction of a second of service writes.
const (
	checkpointRows    = 8192
	checkpointCommits = 64
)

// checkpointer copies the WAL back into the database file from a
// connection of its own, kicked as writes commit: the writer runs no
// checkpoint (wal_autocheckpoint 0). A passive checkpoint takes no writer
// lock, so writes go on while it runs; run by a commit, as SQLite's
// automatic checkpoints are, a big one held every write behind it for as
// long as the copy took (a PUT waited some 250 ms during a rekey).
type checkpointer struct {
	db      *sql.DB // one connection
	mu      sync.Mutex
	rows    int // written since the last kick
	commits int
	running bool
	closed  bool
	done    int // checkpoints run
	wg      sync.WaitGroup
}

// wrote counts a commit of rows rows, and kicks a checkpoint when enough
// has been written.
func (c *checkpointer) wrote(rows int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows += rows
	c.commits++
	if (c.rows >= checkpointRows || c.commits >= checkpointCommits) && !c.running {
		c.rows, c.commits = 0, 0
		c.kickLocked()
	}
}

// kickLocked starts a checkpoint; none is running. A failed checkpoint
// leaves the WAL as it was, for the next one or Sync. c.mu is held.
func (c *checkpointer) kickLocked() {
	if c.closed || c.db == nil {
		return
	}
	c.running = true
	c.wg.Go(func() {
		c.db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		c.mu.Lock()
		c.running = false
		c.done++
		c.mu.Unlock()
	})
}

func (c *checkpointer) close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	if c.db == nil {
		return nil
	}
	return c.db.Close()
}
