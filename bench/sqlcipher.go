package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ensureSQLCipher returns the sqlcipher CLI's path, installing the Debian
// package (apt-get update, then apt-get install -y sqlcipher) when it is not
// on PATH.
func ensureSQLCipher(logf func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("sqlcipher"); err == nil {
		return p, nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("sqlcipher is not on PATH and there is no apt-get to install it")
	}
	logf("sqlcipher not on PATH: apt-get update && apt-get install -y sqlcipher")
	for _, args := range [][]string{{"update"}, {"install", "-y", "sqlcipher"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return "", fmt.Errorf("apt-get %s: %v: %s", strings.Join(args, " "), err, lastLine(string(out)))
		}
	}
	return exec.LookPath("sqlcipher")
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// sqlcipherVersion is SQLCipher's version and the SQLite it is built on.
func sqlcipherVersion(bin string) string {
	cmd := exec.Command(bin, ":memory:")
	cmd.Stdin = strings.NewReader("PRAGMA cipher_version;\nSELECT sqlite_version();\n")
	out, err := cmd.Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 2 {
		return "?"
	}
	return fmt.Sprintf("%s (SQLite %s), %s", f[0], f[1], bin)
}

// cipherDB is a SQLCipher database holding the same N rows as the kmd
// store (its schema; 256-byte value blobs, which SQLCipher encrypts by
// page), under a raw 256-bit key (no KDF).
type cipherDB struct {
	bin, dir, path string
	pageSize       int // 0: SQLCipher's default
	key            string
	n              int
}

func rawKey() string {
	k := make([]byte, 32)
	rand.Read(k)
	return `"x'` + hex.EncodeToString(k) + `'"`
}

// run feeds script to the sqlcipher CLI on the database and returns its
// output; any error message fails it.
func (c *cipherDB) run(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, "-bail", c.path)
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	s := out.String()
	if err == nil && strings.Contains(s, "Error") {
		err = fmt.Errorf("error output")
	}
	if err != nil {
		// The output never holds a key: the script is not echoed.
		return s, fmt.Errorf("sqlcipher: %v: %s", err, lastLine(s))
	}
	return s, nil
}

// header is the script's opening: the key, and the page size when not the
// default (SQLCipher must be told it before the first read).
func (c *cipherDB) header(key string) string {
	h := "PRAGMA key = " + key + ";\n"
	if c.pageSize > 0 {
		h += "PRAGMA cipher_page_size = " + strconv.Itoa(c.pageSize) + ";\n"
	}
	return h
}

func newCipherDB(bin string, n, pageSize int) (*cipherDB, error) {
	dir, err := os.MkdirTemp("", "kmdbench-sqlcipher")
	if err != nil {
		return nil, err
	}
	c := &cipherDB{bin: bin, dir: dir, path: filepath.Join(dir, "S3.db"), pageSize: pageSize, key: rawKey(), n: n}
	script := c.header(c.key) + sqliteSchema + fmt.Sprintf(`
BEGIN;
WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x+1 FROM c WHERE x < %d)
INSERT INTO entries(name, mk, version, ct, created, updated)
	SELECT printf('svc/entry-%%07d', x), 'A', 1, randomblob(%d), 0, 0 FROM c;
COMMIT;
`, n-1, valueSize)
	if _, err := c.run(script); err != nil {
		c.close()
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := c.check(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// check opens the database with the current key and counts the rows.
func (c *cipherDB) check() error {
	out, err := c.run(c.header(c.key) + "SELECT count(*) FROM entries;\n")
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	if len(f) == 0 || f[len(f)-1] != strconv.Itoa(c.n) {
		return fmt.Errorf("sqlcipher database holds %q rows, want %d", lastLine(out), c.n)
	}
	return nil
}

// rekey is one timed run: open, PRAGMA key, PRAGMA rekey to a new raw
// key; then (untimed) the rows are counted under the new key.
func (c *cipherDB) rekey() (time.Duration, error) {
	next := rawKey()
	script := c.header(c.key) + "PRAGMA rekey = " + next + ";\n"
	begin := time.Now()
	_, err := c.run(script)
	took := time.Since(begin)
	if err != nil {
		return 0, fmt.Errorf("rekey: %w", err)
	}
	c.key = next
	if err := c.check(); err != nil {
		return 0, fmt.Errorf("after rekey: %w", err)
	}
	return took, nil
}

// pageSizeOf reports the database's cipher page size as SQLCipher sees it.
func (c *cipherDB) pageSizeOf() string {
	out, err := c.run(c.header(c.key) + "PRAGMA cipher_page_size;\n")
	if err != nil {
		return "?"
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return "?"
	}
	return f[len(f)-1]
}

func (c *cipherDB) close() { os.RemoveAll(c.dir) }
