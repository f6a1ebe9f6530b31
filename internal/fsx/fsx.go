// Package fsx holds the few filesystem operations whose durability kmd's
// invariants depend on.
package fsx

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path so that, after it returns nil, path
// holds exactly data even across a crash or power loss, and at no instant does
// path hold a partial write: it writes a temporary file in the same directory,
// fsyncs it, renames it over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// RemoveDurable removes path and fsyncs its directory. A path that does not
// exist is not an error.
func RemoveDurable(path string) error {
	err := os.Remove(path)
	if os.IsNotExist(err) {
		if _, derr := os.Stat(filepath.Dir(path)); os.IsNotExist(derr) {
			return nil // nor its directory: nothing to make durable
		}
	} else if err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// WriteFileExclusive writes data to path durably, like WriteFileAtomic, but
// never replaces an existing file: if path exists it returns an error for
// which os.IsExist is true, and path is left as it was. The file appears
// whole or not at all (it is linked into place after its contents are
// synced).
func WriteFileExclusive(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	defer f.Close()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = os.Link(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// MkdirPrivate creates dir (and parents) with mode 0700 and makes sure an
// existing dir is not readable by others.
func MkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// RemoveTemps removes the temporary files that WriteFileAtomic and
// WriteFileExclusive leave behind when a crash interrupts them (".NAME.tmp-*"
// in dir). Call it only while no writer can be running, e.g. under the data
// dir's lock at start. It returns how many it removed.
func RemoveTemps(dir string) (int, error) {
	names, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if err != nil {
		return 0, err
	}
	for _, n := range names {
		if err := os.Remove(n); err != nil && !os.IsNotExist(err) {
			return 0, err
		}
	}
	if len(names) > 0 {
		return len(names), SyncDir(dir)
	}
	return 0, nil
}
