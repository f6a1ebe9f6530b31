package provider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/kmd-project/kmd/internal/fsx"
)

// LocalKeys keeps each MK in its own key file, <dir>/<DOMAIN>/<ID>.key, mode
// 0600 in directories of mode 0700. A key file holds a magic header, the 32
// bytes of material and a checksum binding them to their domain and ID, so a
// truncated, damaged or misplaced file is refused rather than used.
type LocalKeys struct {
	dir string
}

var _ KeySource = (*LocalKeys)(nil)

const keyFileMagic = "KMDMK\x01"

var safeComponent = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// NewLocalKeys returns the local key source rooted at dir, creating dir with
// mode 0700 if needed.
func NewLocalKeys(dir string) (*LocalKeys, error) {
	if err := fsx.MkdirPrivate(dir); err != nil {
		return nil, fmt.Errorf("key dir: %w", err)
	}
	return &LocalKeys{dir: dir}, nil
}

// RemoveTemps removes key files half-written by a crash (they may hold
// material of a key that was never recorded). Call it at start, while no
// Create can run.
func (l *LocalKeys) RemoveTemps() (int, error) {
	dirs, err := filepath.Glob(filepath.Join(l.dir, "*"))
	if err != nil {
		return 0, err
	}
	total := 0
	for _, d := range append(dirs, l.dir) {
		n, err := fsx.RemoveTemps(d)
		if err != nil {
			return total, fmt.Errorf("remove temporary key files in %s: %w", d, err)
		}
		total += n
	}
	return total, nil
}

// Location implements KeySource.
func (l *LocalKeys) Location() string { return LocationLocal }

func (l *LocalKeys) path(domain, id string) (string, error) {
	if !safeComponent.MatchString(domain) || !safeComponent.MatchString(id) {
		return "", fmt.Errorf("key file for domain %q id %q: invalid name", domain, id)
	}
	return filepath.Join(l.dir, domain, id+".key"), nil
}

func keyFileChecksum(domain, id string, material []byte) []byte {
	h := sha256.New()
	h.Write([]byte(keyFileMagic))
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(material)
	return h.Sum(nil)[:16]
}

// Create implements KeySource.
func (l *LocalKeys) Create(ctx context.Context, domain, id string) (KeyRef, []byte, error) {
	ref := KeyRef{Domain: domain, ID: id, Location: LocationLocal}
	p, err := l.path(domain, id)
	if err != nil {
		return KeyRef{}, nil, err
	}
	if m, err := l.Load(ctx, ref); err == nil {
		if err := l.syncDirs(p); err != nil {
			return KeyRef{}, nil, fmt.Errorf("create key %s/%s: %w", domain, id, err)
		}
		return ref, m, nil
	} else if !errors.Is(err, ErrKeyNotFound) {
		return KeyRef{}, nil, err
	}
	if err := fsx.MkdirPrivate(filepath.Dir(p)); err != nil {
		return KeyRef{}, nil, fmt.Errorf("create key %s/%s: %w", domain, id, err)
	}
	m, err := GenerateKeyMaterial()
	if err != nil {
		return KeyRef{}, nil, err
	}
	buf := make([]byte, 0, len(keyFileMagic)+KeySize+16)
	buf = append(buf, keyFileMagic...)
	buf = append(buf, m...)
	buf = append(buf, keyFileChecksum(domain, id, m)...)
	// Never replace a key file: a concurrent Create of the same ID that got
	// there first wins, and we return its material, not ours.
	if err := fsx.WriteFileExclusive(p, buf, 0o600); os.IsExist(err) {
		clear(m)
		m, err := l.Load(ctx, ref)
		if err == nil {
			err = l.syncDirs(p)
		}
		if err != nil {
			return KeyRef{}, nil, err
		}
		return ref, m, nil
	} else if err != nil {
		return KeyRef{}, nil, fmt.Errorf("create key %s/%s: %w", domain, id, err)
	}
	// The domain dir may be new: make its entry in l.dir durable too.
	if err := fsx.SyncDir(l.dir); err != nil {
		return KeyRef{}, nil, fmt.Errorf("create key %s/%s: %w", domain, id, err)
	}
	return ref, m, nil
}

// syncDirs makes the directory entries of key file p durable. A key file
// found already there may come from a Create that crashed between linking it
// into place and syncing its directories: it is used only after this
// (invariant 2).
func (l *LocalKeys) syncDirs(p string) error {
	return errors.Join(fsx.SyncDir(filepath.Dir(p)), fsx.SyncDir(l.dir))
}

// Load implements KeySource. A key file readable by anyone but its owner is
// refused, as ssh refuses such a private key.
func (l *LocalKeys) Load(_ context.Context, ref KeyRef) ([]byte, error) {
	p, err := l.path(ref.Domain, ref.ID)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key file %s: %w", p, ErrKeyNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", p, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o, want 0600 (chmod 600 %s)", p, perm, p)
	}
	want := len(keyFileMagic) + KeySize + 16
	buf, err := io.ReadAll(io.LimitReader(f, int64(want)+1))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", p, err)
	}
	n := len(buf)
	if n != want || !bytes.HasPrefix(buf, []byte(keyFileMagic)) {
		return nil, fmt.Errorf("key file %s: %d bytes, want %d with a kmd header: %w", p, n, want, ErrKeyCorrupt)
	}
	m := buf[len(keyFileMagic) : len(keyFileMagic)+KeySize]
	if !bytes.Equal(buf[len(keyFileMagic)+KeySize:want], keyFileChecksum(ref.Domain, ref.ID, m)) {
		return nil, fmt.Errorf("key file %s: checksum mismatch: %w", p, ErrKeyCorrupt)
	}
	return bytes.Clone(m), nil
}

// Destroy implements KeySource: the file is overwritten with zeros, synced,
// then removed and the removal made durable.
func (l *LocalKeys) Destroy(_ context.Context, ref KeyRef) error {
	p, err := l.path(ref.Domain, ref.ID)
	if err != nil {
		return err
	}
	if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
		st, _ := f.Stat()
		if st != nil && st.Size() > 0 && st.Size() < 1<<16 {
			f.WriteAt(make([]byte, st.Size()), 0)
			f.Sync()
		}
		f.Close()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("destroy key %s/%s: %w", ref.Domain, ref.ID, err)
	}
	if err := fsx.RemoveDurable(p); err != nil {
		return fmt.Errorf("destroy key %s/%s: %w", ref.Domain, ref.ID, err)
	}
	return nil
}

// List returns the IDs of the key files of domain, for orphan checks.
func (l *LocalKeys) List(domain string) ([]string, error) {
	if !safeComponent.MatchString(domain) {
		return nil, fmt.Errorf("list keys of domain %q: invalid name", domain)
	}
	ents, err := os.ReadDir(filepath.Join(l.dir, domain))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if n := e.Name(); filepath.Ext(n) == ".key" {
			ids = append(ids, n[:len(n)-len(".key")])
		}
	}
	return ids, nil
}
