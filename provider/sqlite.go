package provider

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLiteStore is the embedded Store: one SQLite database file per domain in
// WAL mode. Writes go through a single connection, so they are serialised
// without SQLITE_BUSY; reads use a pool of read-only connections that WAL
// lets run beside the writer.
type SQLiteStore struct {
	path string
	w    *sql.DB // exactly one connection: every write
	r    *sql.DB // read-only pool

	getStmt                   *sql.Stmt // readers
	insStmt, rowStmt, updStmt *sql.Stmt // the writer

	// ckpt copies the WAL back into the file as writes commit (rewrap.go).
	ckpt checkpointer
	// pace yields a rewrap's CPU (yield.go); used on the writer only.
	pace pacer

	// Rows name their MK by a small number (the mks table); the mapping
	// never changes once made, so it is cached both ways.
	mu   sync.RWMutex
	nums map[string]int64
	ids  map[int64]string
}

var _ Store = (*SQLiteStore)(nil)

const schemaVersion = 2

// Schema 2. An entry names its MK by number (mks.num), and mks keeps, in
// the same transactions as the rows, how many entries each MK seals: the
// status, the progress and DESTROY's last check read that count, so there
// is no index on entries.mk for every rewrapped row to update. VERIFY's
// proof, CountByKey, reads the rows themselves.
const schema = `
CREATE TABLE IF NOT EXISTS entries (
	-- AUTOINCREMENT: an id is never reused, so (id, version) names one
	-- incarnation of a row even if its entry is deleted and created again.
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	name    TEXT    NOT NULL UNIQUE,
	mk      INTEGER NOT NULL,
	version INTEGER NOT NULL,
	ct      BLOB    NOT NULL,
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mks (
	num     INTEGER PRIMARY KEY,
	id      TEXT    NOT NULL UNIQUE,
	entries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS keys (
	id          TEXT PRIMARY KEY,
	domain      TEXT NOT NULL,
	state       TEXT NOT NULL,
	location    TEXT NOT NULL,
	remote_id   TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	created     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
`

// A schema-1 store (entries.mk the MK's ID, indexed) becomes schema 2 in
// one transaction: its table is set aside, the schema made, the rows copied
// with their MKs numbered, and no id ever given out is given out again.
const (
	setAsideV1 = `ALTER TABLE entries RENAME TO entries_v1;`
	copyV1     = `
INSERT INTO mks(id, entries) SELECT mk, count(*) FROM entries_v1 GROUP BY mk ORDER BY min(id);
INSERT INTO entries(id, name, mk, version, ct, created, updated)
	SELECT e.id, e.name, m.num, e.version, e.ct, e.created, e.updated FROM entries_v1 e JOIN mks m ON m.id = e.mk ORDER BY e.id;
DELETE FROM sqlite_sequence WHERE name = 'entries';
INSERT INTO sqlite_sequence(name, seq) SELECT 'entries', max(
	coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries_v1'), 0),
	coalesce((SELECT max(id) FROM entries), 0));
DROP TABLE entries_v1;
`
)

// SQLiteOptions tunes the store. Zero values take the defaults.
type SQLiteOptions struct {
	// CacheKiB is the page cache of the writer connection (default 8 MiB).
	// The rekey reads and writes in row order, so a small cache serves it;
	// the kernel's page cache serves the rest without counting in kmd's
	// memory.
	CacheKiB int
	// ReaderCacheKiB is the page cache of each reader (default 256 KiB,
	// 16 pages of a new store: the top of both b-trees). A reader that
	// begins a read after any write empties its cache (SQLite's
	// pager_reset), under the page-cache mutex that every connection
	// shares in this build of SQLite (a unified cache). During a rekey that
	// is every GET: with 2 MiB caches, GETs emptying theirs held the rewrap
	// and each other up (701 of 1009 ms of mutex waits in a profile). GET
	// p99 under bench's load, alternating single windows: 51-80 ms with
	// 2 MiB, 9-28 ms with 256 KiB (whole bench runs vary more).
	ReaderCacheKiB int
	// Readers is the size of the read pool (default 4).
	Readers int
}

func dsn(path string, cacheKiB int, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", cacheKiB))
	q.Add("_pragma", "foreign_keys(0)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// The checkpointer copies the WAL back, beside the writer: a
		// checkpoint run by a commit would hold every write behind it.
		q.Add("_pragma", "wal_autocheckpoint(0)")
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// OpenSQLite opens (creating if needed) the store at path, mode 0600.
func OpenSQLite(path string, o SQLiteOptions) (*SQLiteStore, error) {
	if o.CacheKiB <= 0 {
		o.CacheKiB = 8 << 10
	}
	if o.ReaderCacheKiB <= 0 {
		o.ReaderCacheKiB = 256
	}
	if o.Readers <= 0 {
		o.Readers = 4
	}
	// SQLite gives the -wal and -shm files the main file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if fi.Size() == 0 {
		if err := initFile(path); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	w, err := sql.Open("sqlite", dsn(path, o.CacheKiB, false))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &SQLiteStore{path: path, w: w, nums: map[string]int64{}, ids: map[int64]string{}}
	if err := s.migrate(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, o.ReaderCacheKiB, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(o.Readers)
	r.SetMaxIdleConns(o.Readers)
	s.r = r
	if s.ckpt.db, err = sql.Open("sqlite", dsn(path, 512, false)); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.ckpt.db.SetMaxOpenConns(1)
	for _, p := range []struct {
		db  *sql.DB
		st  **sql.Stmt
		sql string
	}{
		{r, &s.getStmt, `SELECT mk, version, ct, created, updated, id FROM entries WHERE name = ?`},
		{w, &s.insStmt, `INSERT INTO entries(name, mk, version, ct, created, updated) VALUES (?1, ?2, 1, ?3, ?4, ?4) ON CONFLICT(name) DO NOTHING`},
		{w, &s.rowStmt, `SELECT id, mk, version FROM entries WHERE name = ?`},
		{w, &s.updStmt, `UPDATE entries SET mk = ?2, ct = ?3, version = ?4, updated = ?5 WHERE id = ?1`},
	} {
		if *p.st, err = p.db.Prepare(p.sql); err != nil {
			s.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	return s, nil
}

// pageSize is the page size of a new store. A page holds some 48 entries
// of a few hundred bytes: a rekey, which rewrites every page, makes a
// quarter of the WAL frames, system calls and b-tree steps it would with
// SQLite's default 4096 bytes. Stores made with another size keep it.
const pageSize = 16384

// initFile gives a new, empty database file its page size, which is fixed
// once the file is in WAL mode.
func initFile(path string) error {
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(fmt.Sprintf(`PRAGMA page_size = %d; PRAGMA journal_mode = WAL`, pageSize))
	return err
}

func (s *SQLiteStore) migrate() error {
	var v int
	if err := s.w.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this kmd (%d)", v, schemaVersion)
	}
	var mode string
	if err := s.w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		return fmt.Errorf("journal mode is %q, want wal", mode)
	}
	tx, err := s.w.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var tables int
	if err := tx.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'entries'`).Scan(&tables); err != nil {
		return err
	}
	fromV1 := v == 1 && tables == 1
	if fromV1 {
		if _, err := tx.Exec(setAsideV1); err != nil {
			return fmt.Errorf("migrate schema 1 to 2: %w", err)
		}
	}
	if _, err := tx.Exec(schema); err != nil {
		return err
	}
	if fromV1 {
		if _, err := tx.Exec(copyV1); err != nil {
			return fmt.Errorf("migrate schema 1 to 2: %w", err)
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

// cached returns the number of MK id if this store has already seen it.
func (s *SQLiteStore) cached(id string) (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.nums[id]
	return n, ok
}

// queryer is the writer connection's pool or one of its transactions.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// num returns the number rows use for MK id, adding it to mks the first
// time through q: the writer itself (committed at once, and remembered), or
// a transaction (kept in added until the caller sees it commit).
func (s *SQLiteStore) num(ctx context.Context, q queryer, id string, added map[string]int64) (int64, error) {
	if n, ok := s.cached(id); ok {
		return n, nil
	}
	if n, ok := added[id]; ok {
		return n, nil
	}
	var n int64
	err := q.QueryRowContext(ctx, `INSERT INTO mks(id) VALUES (?1) ON CONFLICT(id) DO UPDATE SET id = id RETURNING num`, id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("key %s: %w", id, err)
	}
	if added != nil {
		added[id] = n
	} else {
		s.remember(id, n)
	}
	return n, nil
}

// known returns the number of MK id if rows may use it, without adding it.
func (s *SQLiteStore) known(ctx context.Context, id string) (int64, bool, error) {
	if n, ok := s.cached(id); ok {
		return n, true, nil
	}
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT num FROM mks WHERE id = ?`, id).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("key %s: %w", id, err)
	}
	s.remember(id, n)
	return n, true, nil
}

// id returns the MK ID of number n.
func (s *SQLiteStore) id(ctx context.Context, n int64) (string, error) {
	s.mu.RLock()
	id, ok := s.ids[n]
	s.mu.RUnlock()
	if ok {
		return id, nil
	}
	if err := s.r.QueryRowContext(ctx, `SELECT id FROM mks WHERE num = ?`, n).Scan(&id); err != nil {
		return "", fmt.Errorf("key number %d: %w", n, err)
	}
	s.remember(id, n)
	return id, nil
}

func (s *SQLiteStore) remember(id string, n int64) {
	s.mu.Lock()
	s.nums[id], s.ids[n] = n, id
	s.mu.Unlock()
}

// Path returns the database file's path.
func (s *SQLiteStore) Path() string { return s.path }

// Close implements Store.
func (s *SQLiteStore) Close() error {
	var errs []error
	errs = append(errs, s.ckpt.close())
	for _, st := range []*sql.Stmt{s.getStmt, s.insStmt, s.rowStmt, s.updStmt} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return time.Now().UnixNano()
	}
	return t.UnixNano()
}

// Get implements Store.
func (s *SQLiteStore) Get(ctx context.Context, name string) (Entry, error) {
	e := Entry{Name: name}
	var created, updated, mk int64
	// A lookup of one row takes microseconds; a cancellable context would
	// cost it two goroutines (database/sql's and the driver's watchers).
	err := s.getStmt.QueryRowContext(context.WithoutCancel(ctx), name).Scan(&mk, &e.Version, &e.Sealed, &created, &updated, &e.Ref)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("get %q: %w", name, err)
	}
	if e.KeyID, err = s.id(ctx, mk); err != nil {
		return Entry{}, fmt.Errorf("get %q: %w", name, err)
	}
	e.Created, e.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return e, nil
}

// Put implements Store.
func (s *SQLiteStore) Put(ctx context.Context, e Entry, c Cond) (int64, error) {
	mk, err := s.num(ctx, s.w, e.KeyID, nil)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", e.Name, err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", e.Name, err)
	}
	defer tx.Rollback()
	w := counted{}
	v, err := s.writeStmts(ctx, tx).put(ctx, w, e.Name, mk, e.Sealed, unixNano(e.Updated), c, nil)
	if err != nil {
		return 0, err
	}
	if err := w.apply(ctx, tx); err != nil {
		return 0, fmt.Errorf("put %q: %w", e.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("put %q: %w", e.Name, err)
	}
	s.ckpt.wrote(1)
	return v, nil
}

// counted gathers, per MK number, how many entries a transaction adds (or
// removes) under it, for mks.entries.
type counted map[int64]int64

func (w counted) apply(ctx context.Context, tx *sql.Tx) error {
	for n, d := range w {
		if d == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE mks SET entries = entries + ? WHERE num = ?`, d, n); err != nil {
			return err
		}
	}
	return nil
}

// writeStmts are the writer's statements bound to one transaction. Bind
// them once per transaction: database/sql keeps every statement a
// transaction binds until it ends, a million of them for a million-entry
// import.
type writeStmts struct{ ins, row, upd *sql.Stmt }

func (s *SQLiteStore) writeStmts(ctx context.Context, tx *sql.Tx) writeStmts {
	return writeStmts{tx.StmtContext(ctx, s.insStmt), tx.StmtContext(ctx, s.rowStmt), tx.StmtContext(ctx, s.updStmt)}
}

// put writes one entry in tx and counts it in w. A new entry takes one
// statement; replacing one reads its row first, for its MK and version.
// If seen is set, replacing a row for which it reports true is a
// *DuplicateError.
func (st writeStmts) put(ctx context.Context, w counted, name string, mk int64, ct []byte, now int64, c Cond, seen func(id int64) bool) (int64, error) {
	if c.IfVersion == 0 {
		res, err := st.ins.ExecContext(ctx, name, mk, ct, now)
		if err != nil {
			return 0, fmt.Errorf("put %q: %w", name, err)
		}
		if k, _ := res.RowsAffected(); k == 1 {
			w[mk]++
			return 1, nil
		}
		if c.CreateOnly {
			return 0, ErrExists
		}
	}
	var id, old, v int64
	err := st.row.QueryRowContext(ctx, name).Scan(&id, &old, &v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, ErrVersionMismatch // IfVersion of an absent entry
	case err != nil:
		return 0, fmt.Errorf("put %q: %w", name, err)
	case c.IfVersion > 0 && v != c.IfVersion:
		return 0, ErrVersionMismatch
	case seen != nil && seen(id):
		return 0, &DuplicateError{Name: name}
	}
	if _, err := st.upd.ExecContext(ctx, id, mk, ct, v+1, now); err != nil {
		return 0, fmt.Errorf("put %q: %w", name, err)
	}
	w[old]--
	w[mk]++
	return v + 1, nil
}

// Import implements Store. Rows this import created have ids above the
// largest ever given out before it began; the rows it replaced are marked
// in a bitmap of ids (ids are dense: some 128 KiB per million rows). Either
// tells a name it repeats.
func (s *SQLiteStore) Import(ctx context.Context, next func() (Entry, error)) (int, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	defer tx.Rollback()
	var before int64
	if err := tx.QueryRowContext(ctx, `SELECT max(
		coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0),
		coalesce((SELECT max(id) FROM entries), 0))`).Scan(&before); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	var replaced []uint64
	seen := func(id int64) bool {
		if id > before {
			return true
		}
		i, bit := id/64, uint64(1)<<(id%64)
		if i >= int64(len(replaced)) {
			replaced = append(replaced, make([]uint64, i+1-int64(len(replaced)))...)
		}
		dup := replaced[i]&bit != 0
		replaced[i] |= bit
		return dup
	}
	w := counted{}
	st := s.writeStmts(ctx, tx)
	added := map[string]int64{} // MK numbers this transaction adds
	// Each row's statements run without ctx: a cancellable context costs
	// every statement a goroutine and the driver's progress handler, some
	// 14% of an import's CPU time (perf, 1M entries). ctx is checked every
	// importBatch rows, and its end rolls the whole transaction back.
	rctx := context.WithoutCancel(ctx)
	n := 0
	for ; ; n++ {
		if n%importBatch == 0 {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("import: %w", err)
			}
		}
		e, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		mk, err := s.num(rctx, tx, e.KeyID, added)
		if err == nil {
			_, err = st.put(rctx, w, e.Name, mk, e.Sealed, unixNano(e.Updated), Cond{}, seen)
		}
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				// The transaction was rolled back as ctx ended.
				return 0, fmt.Errorf("import: %w", cerr)
			}
			var dup *DuplicateError
			if errors.As(err, &dup) {
				dup.Index = n
			}
			return 0, err
		}
	}
	if err := w.apply(ctx, tx); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	s.ckpt.wrote(n)
	for id, num := range added {
		s.remember(id, num)
	}
	return n, nil
}

// Delete implements Store.
func (s *SQLiteStore) Delete(ctx context.Context, name string, ifVersion int64) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	defer tx.Rollback()
	var mk int64
	if ifVersion > 0 {
		err = tx.QueryRowContext(ctx, `DELETE FROM entries WHERE name = ? AND version = ? RETURNING mk`, name, ifVersion).Scan(&mk)
	} else {
		err = tx.QueryRowContext(ctx, `DELETE FROM entries WHERE name = ? RETURNING mk`, name).Scan(&mk)
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if ifVersion > 0 {
			var one int
			if tx.QueryRowContext(ctx, `SELECT 1 FROM entries WHERE name = ?`, name).Scan(&one) == nil {
				return ErrVersionMismatch
			}
		}
		return ErrNotFound
	case err != nil:
		return fmt.Errorf("delete %q: %w", name, err)
	}
	if err := (counted{mk: -1}).apply(ctx, tx); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	s.ckpt.wrote(1)
	return nil
}

// List implements Store.
func (s *SQLiteStore) List(ctx context.Context, after string, limit int) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM entries WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	defer rows.Close()
	names := []string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// Count implements Store, from the kept counts.
func (s *SQLiteStore) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(sum(entries), 0) FROM mks`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	return n, nil
}

// CountByKey implements Store: it reads every row, on a reader connection,
// so that writes go on while it does. The query is its own read
// transaction, begun when it is: it sees every write that has returned.
func (s *SQLiteStore) CountByKey(ctx context.Context, keyID string) (int64, error) {
	mk, ok, err := s.known(ctx, keyID)
	if err != nil || !ok {
		return 0, err
	}
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE mk = ?`, mk).Scan(&n); err != nil {
		return 0, fmt.Errorf("count by key %s: %w", keyID, err)
	}
	return n, nil
}

// KeyUsage implements Store, from the kept counts, through the writer
// connection.
func (s *SQLiteStore) KeyUsage(ctx context.Context) (map[string]int64, error) {
	rows, err := s.w.QueryContext(ctx, `SELECT id, entries FROM mks WHERE entries <> 0`)
	if err != nil {
		return nil, fmt.Errorf("key usage: %w", err)
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("key usage: %w", err)
		}
		m[id] = n
	}
	return m, rows.Err()
}

// Keys implements Store.
func (s *SQLiteStore) Keys(ctx context.Context) ([]KeyInfo, error) {
	rows, err := s.w.QueryContext(ctx, `SELECT id, domain, state, location, remote_id, fingerprint, created FROM keys ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	defer rows.Close()
	var ks []KeyInfo
	for rows.Next() {
		var k KeyInfo
		var created int64
		if err := rows.Scan(&k.ID, &k.Domain, &k.State, &k.Location, &k.RemoteID, &k.Fingerprint, &created); err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		k.Created = time.Unix(0, created).UTC()
		ks = append(ks, k)
	}
	return ks, rows.Err()
}

// State implements Store.
func (s *SQLiteStore) State(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.w.QueryRowContext(ctx, `SELECT value FROM state WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", name, err)
	}
	if v == nil {
		v = []byte{} // set, but empty: nil means unset
	}
	return v, nil
}

// UpdateMeta implements Store.
func (s *SQLiteStore) UpdateMeta(ctx context.Context, u MetaUpdate) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	defer tx.Rollback()
	for _, k := range u.PutKeys {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO keys(id, domain, state, location, remote_id, fingerprint, created) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Domain, string(k.State), k.Location, k.RemoteID, k.Fingerprint, unixNano(k.Created)); err != nil {
			return fmt.Errorf("update meta: key %s: %w", k.ID, err)
		}
	}
	for _, id := range u.DeleteKeys {
		if _, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE id = ?`, id); err != nil {
			return fmt.Errorf("update meta: key %s: %w", id, err)
		}
	}
	for name, v := range u.Set {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO state(name, value) VALUES (?, ?)`, name, v); err != nil {
			return fmt.Errorf("update meta: %s: %w", name, err)
		}
	}
	for _, name := range u.Unset {
		if _, err := tx.ExecContext(ctx, `DELETE FROM state WHERE name = ?`, name); err != nil {
			return fmt.Errorf("update meta: %s: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	s.ckpt.wrote(1)
	return nil
}

// Sync implements Store. A commit under synchronous=FULL fsyncs the whole
// WAL, and with it every earlier commit, Rewrap's NORMAL ones included; it
// waits for no reader. A passive checkpoint then bounds the WAL's size
// without blocking anyone either.
func (s *SQLiteStore) Sync(ctx context.Context) error {
	if err := s.UpdateMeta(ctx, MetaUpdate{Set: map[string][]byte{"synced": []byte(time.Now().UTC().Format(time.RFC3339Nano))}}); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if _, err := s.w.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
		return fmt.Errorf("sync: checkpoint: %w", err)
	}
	return nil
}

// SQLite primary result codes (the low byte of an extended code).
const (
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteFull     = 13
)

// StorageFault says in an operator's words whether err, from a store or a
// key file, is the filesystem refusing a write: full, or read-only or
// failing. It returns "" for any other error.
func StorageFault(err error) string {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqliteFull:
			return "the filesystem of kmd's data dir is full"
		case sqliteReadOnly, sqliteIOErr:
			return "kmd cannot write to its data dir: its filesystem is read-only or failing"
		}
	}
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "the filesystem of kmd's data dir is full"
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EIO):
		return "kmd cannot write to its data dir: its filesystem is read-only or failing"
	}
	return ""
}
