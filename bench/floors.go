package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the driver kmd uses

	"github.com/kmd-project/kmd/rekey"
)

// sealOverhead is provider/seal.go's: version byte, 96-bit nonce, GCM tag.
const sealOverhead = 1 + 12 + 16

// gcmKey mirrors provider.Key's sealing with Go's crypto only, so the
// floor does not move when kmd's code does: AES-256-GCM, a fresh random
// nonce per seal, additional data binding domain, name and key ID.
type gcmKey struct {
	id   string
	aead cipher.AEAD
}

func newGCMKey(id string) (*gcmKey, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &gcmKey{id: id, aead: a}, nil
}

func (k *gcmKey) ad(dst []byte, domain, name string) []byte {
	dst = append(dst, "kmd1"...)
	for _, s := range [...]string{domain, name, k.id} {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

func (k *gcmKey) seal(dst, ad []byte, value []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 1)
	dst = append(dst, make([]byte, 12)...)
	nonce := dst[start+1 : start+13]
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(dst, nonce, value, ad), nil
}

func (k *gcmKey) open(dst, ad, sealed []byte) ([]byte, error) {
	return k.aead.Open(dst, sealed[1:13], sealed[13:], ad)
}

// aesFloor is one run of the crypto floor: N entries sealed under key A
// are opened and sealed again under key B, one after the other on one
// goroutine as the engine does. Only the open+seal loop is timed.
func aesFloor(n int) (time.Duration, error) {
	const domain = "S3"
	a, err := newGCMKey("A")
	if err != nil {
		return 0, err
	}
	b, err := newGCMKey("B")
	if err != nil {
		return 0, err
	}
	val := make([]byte, valueSize)
	rand.Read(val)
	in := make([]byte, 0, n*(valueSize+sealOverhead))
	offs := make([]int, n+1)
	names := make([]string, n)
	ad := make([]byte, 0, 512)
	for i := range n {
		names[i] = entryName(i)
		if in, err = a.seal(in, a.ad(ad[:0], domain, names[i]), val); err != nil {
			return 0, err
		}
		offs[i+1] = len(in)
	}
	out := make([]byte, 0, len(in))
	var plain []byte
	begin := time.Now()
	for i := range n {
		plain, err = a.open(plain[:0], a.ad(ad[:0], domain, names[i]), in[offs[i]:offs[i+1]])
		if err != nil {
			return 0, fmt.Errorf("aes floor: open %d: %w", i, err)
		}
		if out, err = b.seal(out, b.ad(ad[:0], domain, names[i]), plain); err != nil {
			return 0, err
		}
	}
	took := time.Since(begin)
	if len(out) != len(in) {
		return 0, fmt.Errorf("aes floor: sealed %d bytes, want %d", len(out), len(in))
	}
	return took, nil
}

// sqliteSchema is provider/sqlite.go's entries table (schema 2: the MK by
// number, no index on it) and state table.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS entries (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	name    TEXT    NOT NULL UNIQUE,
	mk      INTEGER NOT NULL,
	version INTEGER NOT NULL,
	ct      BLOB    NOT NULL,
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
`

// sqliteDSN is provider/sqlite.go's writer connection: WAL,
// synchronous FULL (RewrapRange lowers it to NORMAL for its batches), an
// 8 MiB page cache, immediate transactions. The file gets the store's page
// size first (sqlitePageSize).
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", 8<<10))
	q.Add("_pragma", "foreign_keys(0)")
	q.Set("_txlock", "immediate")
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// sqlitePageSize is provider's page size for a new store.
const sqlitePageSize = 16384

func initPageSize(path string) error {
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath())
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(fmt.Sprintf(`PRAGMA page_size = %d; PRAGMA journal_mode = WAL`, sqlitePageSize))
	return err
}

// sqliteDB is a store-shaped database holding n rows under mk 1, each
// with a 285-byte ct (a sealed 256-byte value), on the writer settings.
type sqliteDB struct {
	dir string
	db  *sql.DB
	n   int
	mk  int64 // the key every row is under now
}

func newSQLiteDB(n int) (*sqliteDB, error) {
	dir, err := os.MkdirTemp("", "kmdbench-sqlite")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "S3.db")
	// As provider.OpenSQLite makes a new store: the page size is fixed
	// once the file is in WAL mode.
	if err := initPageSize(path); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	db.SetMaxOpenConns(1)
	s := &sqliteDB{dir: dir, db: db, n: n, mk: 1}
	if err := s.load(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *sqliteDB) close() {
	s.db.Close()
	os.RemoveAll(s.dir)
}

func (s *sqliteDB) load() error {
	if _, err := s.db.Exec(sqliteSchema); err != nil {
		return err
	}
	ct := make([]byte, valueSize+sealOverhead)
	for i := 0; i < s.n; i += 10000 {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		st, err := tx.Prepare(`INSERT INTO entries(name, mk, version, ct, created, updated) VALUES (?, ?, 1, ?, ?, ?)`)
		if err != nil {
			tx.Rollback()
			return err
		}
		now := time.Now().UnixNano()
		for j := i; j < min(i+10000, s.n); j++ {
			rand.Read(ct)
			if _, err := st.Exec(entryName(j), s.mk, ct, now, now); err != nil {
				tx.Rollback()
				return err
			}
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	_, err := s.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

// rewrite is one run of the SQLite floor: every row rewritten in place,
// with a new mk and a new 285-byte ct, in batches of the engine's size,
// each in one transaction at synchronous=NORMAL. perRow false: one UPDATE
// statement per batch over a range of ids, SQLite making each row's new
// ct itself (randomblob), nothing bound per row; true: one UPDATE per row
// in the batch's transaction, binding its new ct. It ends with a
// FULL-synchronous commit, as the engine's VERIFY does.
func (s *sqliteDB) rewrite(perRow bool) (time.Duration, error) {
	ctx := context.Background()
	batchSize := rekey.DefaultBatchSize
	to := 3 - s.mk            // 1 <-> 2
	cts := make([][]byte, 64) // new ciphertexts: content does not matter to SQLite
	for i := range cts {
		cts[i] = make([]byte, valueSize+sealOverhead)
		rand.Read(cts[i])
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	begin := time.Now()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return 0, err
	}
	done := 0
	// The rows were loaded in order, so their ids are 1..n.
	for lo := int64(1); lo <= int64(s.n); lo += int64(batchSize) {
		hi := min(lo+int64(batchSize)-1, int64(s.n))
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		if perRow {
			st, err := tx.PrepareContext(ctx, `UPDATE entries SET mk = ?, ct = ? WHERE id = ?`)
			if err != nil {
				tx.Rollback()
				return 0, err
			}
			for id := lo; id <= hi; id++ {
				if _, err := st.ExecContext(ctx, to, cts[id%int64(len(cts))], id); err != nil {
					tx.Rollback()
					return 0, err
				}
			}
			st.Close()
		} else if _, err := tx.ExecContext(ctx, `UPDATE entries SET mk = ?, ct = randomblob(?) WHERE id BETWEEN ? AND ?`, to, valueSize+sealOverhead, lo, hi); err != nil {
			tx.Rollback()
			return 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, err
		}
		done += int(hi - lo + 1)
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
		return 0, err
	}
	if _, err := conn.ExecContext(ctx, `INSERT OR REPLACE INTO state(name, value) VALUES ('synced', 'x')`); err != nil {
		return 0, err
	}
	took := time.Since(begin)
	if done != s.n {
		return 0, fmt.Errorf("sqlite floor rewrote %d rows, want %d", done, s.n)
	}
	s.mk = to
	return took, nil
}
