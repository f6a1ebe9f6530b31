package provider

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
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

	putStmt, getStmt *sql.Stmt
}

var _ Store = (*SQLiteStore)(nil)

const schemaVersion = 1

const schema = `
CREATE TABLE IF NOT EXISTS entries (
	-- AUTOINCREMENT: an id is never reused, so (id, version) names one
	-- incarnation of a row even if its entry is deleted and created again.
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	name    TEXT    NOT NULL UNIQUE,
	mk      TEXT    NOT NULL,
	version INTEGER NOT NULL,
	ct      BLOB    NOT NULL,
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_mk ON entries(mk);
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

// SQLiteOptions tunes the store. Zero values take the defaults.
type SQLiteOptions struct {
	// CacheKiB is the page cache of the writer connection (default 32 MiB)
	// and of each reader (a quarter of it).
	CacheKiB int
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
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// OpenSQLite opens (creating if needed) the store at path, mode 0600.
func OpenSQLite(path string, o SQLiteOptions) (*SQLiteStore, error) {
	if o.CacheKiB <= 0 {
		o.CacheKiB = 32 << 10
	}
	if o.Readers <= 0 {
		o.Readers = 4
	}
	// SQLite gives the -wal and -shm files the main file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w, err := sql.Open("sqlite", dsn(path, o.CacheKiB, false))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &SQLiteStore{path: path, w: w}
	if err := s.migrate(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, max(o.CacheKiB/4, 2048), true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(o.Readers)
	r.SetMaxIdleConns(o.Readers)
	s.r = r
	if s.getStmt, err = r.Prepare(`SELECT mk, version, ct, created, updated, id FROM entries WHERE name = ?`); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if s.putStmt, err = w.Prepare(`INSERT INTO entries(name, mk, version, ct, created, updated) VALUES (?1, ?2, 1, ?3, ?4, ?4)
		ON CONFLICT(name) DO UPDATE SET mk = excluded.mk, ct = excluded.ct, version = version + 1, updated = excluded.updated
		RETURNING version`); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
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
	if _, err := s.w.Exec(schema); err != nil {
		return err
	}
	_, err := s.w.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion))
	return err
}

// Path returns the database file's path.
func (s *SQLiteStore) Path() string { return s.path }

// Close implements Store.
func (s *SQLiteStore) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.getStmt, s.putStmt} {
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
	var created, updated int64
	err := s.getStmt.QueryRowContext(ctx, name).Scan(&e.KeyID, &e.Version, &e.Sealed, &created, &updated, &e.Ref)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("get %q: %w", name, err)
	}
	e.Created, e.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return e, nil
}

// Put implements Store.
func (s *SQLiteStore) Put(ctx context.Context, e Entry, c Cond) (int64, error) {
	now := unixNano(e.Updated)
	var (
		v   int64
		err error
	)
	switch {
	case c.CreateOnly:
		err = s.w.QueryRowContext(ctx, `INSERT INTO entries(name, mk, version, ct, created, updated) VALUES (?1, ?2, 1, ?3, ?4, ?4)
			ON CONFLICT(name) DO NOTHING RETURNING version`, e.Name, e.KeyID, e.Sealed, now).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, ErrExists
		}
	case c.IfVersion > 0:
		err = s.w.QueryRowContext(ctx, `UPDATE entries SET mk = ?2, ct = ?3, version = version + 1, updated = ?4
			WHERE name = ?1 AND version = ?5 RETURNING version`, e.Name, e.KeyID, e.Sealed, now, c.IfVersion).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, ErrVersionMismatch
		}
	default:
		err = s.putStmt.QueryRowContext(ctx, e.Name, e.KeyID, e.Sealed, now).Scan(&v)
	}
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", e.Name, err)
	}
	return v, nil
}

// PutAll implements Store.
func (s *SQLiteStore) PutAll(ctx context.Context, es []Entry) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put all: %w", err)
	}
	defer tx.Rollback()
	st := tx.StmtContext(ctx, s.putStmt)
	for _, e := range es {
		var v int64
		if err := st.QueryRowContext(ctx, e.Name, e.KeyID, e.Sealed, unixNano(e.Updated)).Scan(&v); err != nil {
			return fmt.Errorf("put all: %q: %w", e.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put all: %w", err)
	}
	return nil
}

// Delete implements Store.
func (s *SQLiteStore) Delete(ctx context.Context, name string, ifVersion int64) error {
	var (
		res sql.Result
		err error
	)
	if ifVersion > 0 {
		res, err = s.w.ExecContext(ctx, `DELETE FROM entries WHERE name = ? AND version = ?`, name, ifVersion)
	} else {
		res, err = s.w.ExecContext(ctx, `DELETE FROM entries WHERE name = ?`, name)
	}
	if err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if ifVersion > 0 {
		if _, err := s.Get(ctx, name); err == nil {
			return ErrVersionMismatch
		}
	}
	return ErrNotFound
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

// Count implements Store.
func (s *SQLiteStore) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM entries`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	return n, nil
}

// CountByKey implements Store. It reads through the writer connection so
// that it sees every write that has returned, whatever the readers' snapshots.
func (s *SQLiteStore) CountByKey(ctx context.Context, keyID string) (int64, error) {
	var n int64
	if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE mk = ?`, keyID).Scan(&n); err != nil {
		return 0, fmt.Errorf("count by key %s: %w", keyID, err)
	}
	return n, nil
}

// KeyUsage implements Store.
func (s *SQLiteStore) KeyUsage(ctx context.Context) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT mk, count(*) FROM entries GROUP BY mk`)
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

// ScanByKey implements Store. Like the rewrite that follows it, it runs on
// the writer connection, whose page cache then already holds the rows.
func (s *SQLiteStore) ScanByKey(ctx context.Context, keyID string, limit int) ([]Entry, error) {
	if limit < 1 {
		return nil, fmt.Errorf("scan key %s: limit %d: want at least 1", keyID, limit)
	}
	rows, err := s.w.QueryContext(ctx, `SELECT id, name, version, ct FROM entries WHERE mk = ? LIMIT ?`, keyID, limit)
	if err != nil {
		return nil, fmt.Errorf("scan key %s: %w", keyID, err)
	}
	defer rows.Close()
	batch := make([]Entry, 0, limit)
	for rows.Next() {
		e := Entry{KeyID: keyID}
		if err := rows.Scan(&e.Ref, &e.Name, &e.Version, &e.Sealed); err != nil {
			return nil, fmt.Errorf("scan key %s: %w", keyID, err)
		}
		batch = append(batch, e)
	}
	return batch, rows.Err()
}

// Rewrap implements Store. The batch commits with synchronous=NORMAL: it
// survives a crash of kmd, and Sync (run before any MK is destroyed) makes
// it survive a power loss too.
func (s *SQLiteStore) Rewrap(ctx context.Context, from string, batch []Entry) (n int, err error) {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	defer func() {
		// Restore FULL for service writes on this, the only writer
		// connection; if that fails, discard the connection rather than
		// let service writes skip their fsync.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = FULL`); rerr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
			if err == nil {
				err = fmt.Errorf("rewrap: %w", rerr)
			}
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	defer tx.Rollback()
	// Ids are never reused (AUTOINCREMENT); the name check is a second guard.
	st, err := tx.PrepareContext(ctx, `UPDATE entries SET mk = ?1, ct = ?2 WHERE id = ?3 AND version = ?4 AND mk = ?5 AND name = ?6`)
	if err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	defer st.Close()
	for _, e := range batch {
		res, err := st.ExecContext(ctx, e.KeyID, e.Sealed, e.Ref, e.Version, from, e.Name)
		if err != nil {
			return 0, fmt.Errorf("rewrap %q: %w", e.Name, err)
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	return n, nil
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
