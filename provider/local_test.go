package provider_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/provider/providertest"
)

func TestLocalKeys_Conformance(t *testing.T) {
	providertest.RunKeySource(t, func(t *testing.T) provider.KeySource {
		l, err := provider.NewLocalKeys(filepath.Join(t.TempDir(), "keys"))
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

// newLocal returns a LocalKeys rooted at <tmp>/keys and that root.
func newLocal(t *testing.T) (*provider.LocalKeys, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	l, err := provider.NewLocalKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l, dir
}

func localCreate(t *testing.T, l *provider.LocalKeys, domain, id string) (provider.KeyRef, []byte) {
	t.Helper()
	ref, m, err := l.Create(t.Context(), domain, id)
	if err != nil {
		t.Fatalf("Create(%s, %s): %v", domain, id, err)
	}
	return ref, m
}

func keyPath(dir, domain, id string) string { return filepath.Join(dir, domain, id+".key") }

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}

func noLeak(t *testing.T, err error, materials ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	for _, m := range materials {
		if how := providertest.Leaks(err.Error(), m); how != "" {
			t.Errorf("error %q reveals key material (%s)", err, how)
		}
	}
}

func TestLocalKeys_Modes(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "keys")
	// Directories that already exist with loose modes are tightened.
	if err := os.MkdirAll(filepath.Join(dir, "S3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := provider.NewLocalKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantMode(t, dir, 0o700)
	for _, domain := range []string{"S3", "FTP"} { // existing dir, new dir
		localCreate(t, l, domain, "k1")
		wantMode(t, filepath.Join(dir, domain), 0o700)
		wantMode(t, keyPath(dir, domain, "k1"), 0o600)
	}
}

func TestLocalKeys_LoadRefusesLooseModes(t *testing.T) {
	cases := []struct {
		mode fs.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o606, false},
		{0o610, false},
		{0o601, false},
	}
	for _, c := range cases {
		t.Run("0"+octal(c.mode), func(t *testing.T) {
			l, dir := newLocal(t)
			ref, m := localCreate(t, l, "S3", "k1")
			p := keyPath(dir, "S3", "k1")
			if err := os.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
			got, err := l.Load(t.Context(), ref)
			noLeak(t, err, m)
			if c.ok {
				if err != nil || !bytes.Equal(got, m) {
					t.Fatalf("Load of a %04o key file: %v", c.mode, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load of a %04o key file succeeded", c.mode)
			}
			for _, want := range []string{"chmod 600", p, "0" + octal(c.mode)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			// Create must not replace a key it refuses to read.
			if _, _, err := l.Create(t.Context(), "S3", "k1"); err == nil {
				t.Errorf("Create over a %04o key file succeeded", c.mode)
			}
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
			if got, err := l.Load(t.Context(), ref); err != nil || !bytes.Equal(got, m) {
				t.Errorf("after the refused Create and chmod 600, Load = %v; the key was replaced", err)
			}
		})
	}
}

func octal(m fs.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestLocalKeys_LoadMessageFor0644(t *testing.T) {
	l, dir := newLocal(t)
	ref, _ := localCreate(t, l, "S3", "k1")
	if err := os.Chmod(keyPath(dir, "S3", "k1"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Load(t.Context(), ref)
	if err == nil || !strings.Contains(err.Error(), "0644") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a 0644 key file: %v, want a message naming 0644 and chmod 600", err)
	}
}

func TestLocalKeys_CorruptFiles(t *testing.T) {
	type damage func(t *testing.T, dir string, file []byte, m []byte) (domain, id string)
	write := func(t *testing.T, p string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// offsets in the file, found from the material Create returned so that
	// the test does not depend on the header's length
	matAt := func(t *testing.T, file, m []byte) int {
		i := bytes.Index(file, m)
		if i < 0 {
			t.Fatal("material not found in the key file")
		}
		return i
	}
	flip := func(at func(file, m []byte) int) damage {
		return func(t *testing.T, dir string, file, m []byte) (string, string) {
			b := bytes.Clone(file)
			b[at(file, m)] ^= 0x01
			write(t, keyPath(dir, "S3", "k1"), b)
			return "S3", "k1"
		}
	}
	cases := map[string]damage{
		"truncated by one byte": func(t *testing.T, dir string, file, _ []byte) (string, string) {
			write(t, keyPath(dir, "S3", "k1"), file[:len(file)-1])
			return "S3", "k1"
		},
		"truncated to the header": func(t *testing.T, dir string, file, m []byte) (string, string) {
			write(t, keyPath(dir, "S3", "k1"), file[:matAt(t, file, m)])
			return "S3", "k1"
		},
		"empty": func(t *testing.T, dir string, _, _ []byte) (string, string) {
			write(t, keyPath(dir, "S3", "k1"), nil)
			return "S3", "k1"
		},
		"one extra byte": func(t *testing.T, dir string, file, _ []byte) (string, string) {
			write(t, keyPath(dir, "S3", "k1"), append(bytes.Clone(file), 0))
			return "S3", "k1"
		},
		"material only, no header": func(t *testing.T, dir string, _, m []byte) (string, string) {
			write(t, keyPath(dir, "S3", "k1"), m)
			return "S3", "k1"
		},
		"flipped header byte": flip(func(_, _ []byte) int { return 0 }),
		"copied to another id": func(t *testing.T, dir string, file, _ []byte) (string, string) {
			write(t, keyPath(dir, "S3", "k2"), file)
			return "S3", "k2"
		},
		"copied to another domain": func(t *testing.T, dir string, file, _ []byte) (string, string) {
			write(t, keyPath(dir, "FTP", "k1"), file)
			return "FTP", "k1"
		},
	}
	for i := range provider.KeySize {
		cases["flipped material byte "+itoa(i)] = func(t *testing.T, dir string, file, m []byte) (string, string) {
			return flip(func(file, m []byte) int { return matAt(t, file, m) + i })(t, dir, file, m)
		}
	}
	for i := range 16 {
		cases["flipped checksum byte "+itoa(i)] = func(t *testing.T, dir string, file, m []byte) (string, string) {
			return flip(func(file, m []byte) int { return matAt(t, file, m) + len(m) + i })(t, dir, file, m)
		}
	}
	for name, d := range cases {
		t.Run(name, func(t *testing.T) {
			l, dir := newLocal(t)
			_, m := localCreate(t, l, "S3", "k1")
			file, err := os.ReadFile(keyPath(dir, "S3", "k1"))
			if err != nil {
				t.Fatal(err)
			}
			if got := matAt(t, file, m) + len(m) + 16; got != len(file) {
				t.Fatalf("key file is %d bytes, want material followed by a 16-byte checksum (%d)", len(file), got)
			}
			domain, id := d(t, dir, file, m)
			ref := provider.KeyRef{Domain: domain, ID: id, Location: provider.LocationLocal}
			before, _ := os.ReadFile(keyPath(dir, domain, id))
			got, err := l.Load(t.Context(), ref)
			noLeak(t, err, m)
			if !errors.Is(err, provider.ErrKeyCorrupt) {
				t.Fatalf("Load = (%d bytes, %v), want an error wrapping ErrKeyCorrupt", len(got), err)
			}
			// Create must report the damage, not paper over it with a
			// fresh key or hand out the damaged one.
			_, cm, err := l.Create(t.Context(), domain, id)
			noLeak(t, err, m)
			if !errors.Is(err, provider.ErrKeyCorrupt) {
				t.Fatalf("Create over a damaged file = (%d bytes, %v), want ErrKeyCorrupt", len(cm), err)
			}
			if after, _ := os.ReadFile(keyPath(dir, domain, id)); !bytes.Equal(after, before) {
				t.Errorf("Create changed the damaged key file")
			}
		})
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// files lists every file under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLocalKeys_DestroyLeavesNothing(t *testing.T) {
	l, dir := newLocal(t)
	ref, _ := localCreate(t, l, "S3", "k1")
	localCreate(t, l, "S3", "k2")
	localCreate(t, l, "FTP", "k1")
	want := []string{filepath.Join("FTP", "k1.key"), filepath.Join("S3", "k1.key"), filepath.Join("S3", "k2.key")}
	if got := files(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after Create, files = %q, want %q (no temp files)", got, want)
	}
	// A second link shows what Destroy did to the file's contents.
	spy := filepath.Join(t.TempDir(), "spy")
	if err := os.Link(keyPath(dir, "S3", "k1"), spy); err != nil {
		t.Fatal(err)
	}
	size := len(mustRead(t, spy))
	if err := l.Destroy(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	want = []string{filepath.Join("FTP", "k1.key"), filepath.Join("S3", "k2.key")}
	if got := files(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after Destroy, files = %q, want %q", got, want)
	}
	if b := mustRead(t, spy); len(b) != size || !bytes.Equal(b, make([]byte, size)) {
		t.Errorf("Destroy left the material in the file's blocks: want %d zero bytes, got %x", size, b)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLocalKeys_InvalidNames(t *testing.T) {
	bad := []string{"", "../x", "a/b", "..", ".", "x/../../y", "a b", "a.key", "ключ", "a\x00b", strings.Repeat("a", 65)}
	type op struct {
		name string
		do   func(l *provider.LocalKeys, t *testing.T, domain, id string) error
	}
	ops := []op{
		{"Create", func(l *provider.LocalKeys, t *testing.T, d, id string) error {
			_, _, err := l.Create(t.Context(), d, id)
			return err
		}},
		{"Load", func(l *provider.LocalKeys, t *testing.T, d, id string) error {
			_, err := l.Load(t.Context(), provider.KeyRef{Domain: d, ID: id, Location: provider.LocationLocal})
			return err
		}},
		{"Destroy", func(l *provider.LocalKeys, t *testing.T, d, id string) error {
			return l.Destroy(t.Context(), provider.KeyRef{Domain: d, ID: id, Location: provider.LocationLocal})
		}},
	}
	for _, o := range ops {
		for _, name := range bad {
			for _, which := range []string{"domain", "id"} {
				t.Run(o.name+"/"+which+"="+name, func(t *testing.T) {
					root := t.TempDir()
					dir := filepath.Join(root, "keys")
					l, err := provider.NewLocalKeys(dir)
					if err != nil {
						t.Fatal(err)
					}
					// Files a path escape would reach.
					victims := map[string][]byte{
						filepath.Join(root, "x.key"):        []byte("victim"),
						filepath.Join(dir, "x.key"):         []byte("victim"),
						filepath.Join(dir, "S3", "x.key"):   []byte("victim"),
						filepath.Join(root, "y.key"):        []byte("victim"),
						filepath.Join(dir, "a", "b.key"):    []byte("victim"),
						filepath.Join(dir, "S3", "a.key"):   []byte("victim"),
						filepath.Join(dir, "S3", ".key"):    []byte("victim"),
						filepath.Join(dir, "S3", "..key"):   []byte("victim"),
						filepath.Join(dir, "a", "..key"):    []byte("victim"),
						filepath.Join(dir, "S3", "a b.key"): []byte("victim"),
					}
					for p, b := range victims {
						os.MkdirAll(filepath.Dir(p), 0o700)
						if err := os.WriteFile(p, b, 0o600); err != nil {
							t.Fatal(err)
						}
					}
					before := files(t, root)
					d, id := "S3", name
					if which == "domain" {
						d, id = name, "x"
					}
					if err := o.do(l, t, d, id); err == nil {
						t.Errorf("%s(domain %q, id %q) succeeded, want it refused", o.name, d, id)
					} else if errors.Is(err, provider.ErrKeyNotFound) {
						t.Errorf("%s(domain %q, id %q) = %v: an invalid name is not a missing key", o.name, d, id, err)
					}
					if after := files(t, root); !slices.Equal(after, before) {
						t.Errorf("%s(domain %q, id %q) changed files: before %q, after %q", o.name, d, id, before, after)
					}
					for p, b := range victims {
						if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, b) {
							t.Errorf("%s(domain %q, id %q) damaged %s", o.name, d, id, p)
						}
					}
				})
			}
		}
	}
}

// List reads a directory named by its argument: it must refuse the names
// the other methods refuse, or "../x" lists files outside the key dir.
func TestLocalKeys_ListInvalidDomain(t *testing.T) {
	for _, domain := range []string{"", "..", "../x", "a/b", "."} {
		t.Run(domain, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "keys")
			l, err := provider.NewLocalKeys(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{filepath.Join(root, "outside.key"), filepath.Join(root, "x", "outside.key"), filepath.Join(dir, "a", "b", "outside.key"), filepath.Join(dir, "inside.key")} {
				os.MkdirAll(filepath.Dir(p), 0o700)
				if err := os.WriteFile(p, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ids, err := l.List(domain)
			if err == nil {
				t.Errorf("List(%q) = %q, nil; want the invalid domain refused", domain, ids)
			}
		})
	}
}

func TestLocalKeys_List(t *testing.T) {
	l, dir := newLocal(t)
	for _, id := range []string{"k3", "k1", "K2", "k-4_x"} {
		localCreate(t, l, "S3", id)
	}
	ftp, _ := localCreate(t, l, "FTP", "f1")
	// Strays that are not key files.
	for _, p := range []string{"notes.txt", ".k9.key.tmp-123456", "sub"} {
		if err := os.WriteFile(filepath.Join(dir, "S3", p), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		domain string
		want   []string
	}{
		{"S3", []string{"K2", "k-4_x", "k1", "k3"}},
		{"FTP", []string{"f1"}},
		{"NEVER", nil},
	}
	for _, c := range cases {
		got, err := l.List(c.domain)
		if err != nil {
			t.Fatalf("List(%s): %v", c.domain, err)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("List(%s) = %q, want %q", c.domain, got, c.want)
		}
	}
	if err := l.Destroy(t.Context(), ftp); err != nil {
		t.Fatal(err)
	}
	if got, err := l.List("FTP"); err != nil || len(got) != 0 {
		t.Errorf("List(FTP) after Destroy = %q, %v; want none", got, err)
	}
}

func TestLocalKeys_ErrorsOfTheFilesystem(t *testing.T) {
	t.Run("key dir is a file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "keys")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := provider.NewLocalKeys(p); err == nil {
			t.Fatal("NewLocalKeys over a file succeeded")
		}
	})
	t.Run("domain dir is a file", func(t *testing.T) {
		l, dir := newLocal(t)
		if err := os.WriteFile(filepath.Join(dir, "S3"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.Create(t.Context(), "S3", "k1"); err == nil {
			t.Error("Create under a domain path that is a file succeeded")
		}
		if _, err := l.List("S3"); err == nil {
			t.Error("List of a domain path that is a file succeeded")
		}
	})
	t.Run("key file is a directory", func(t *testing.T) {
		l, dir := newLocal(t)
		if err := os.MkdirAll(keyPath(dir, "S3", "k1"), 0o700); err != nil {
			t.Fatal(err)
		}
		ref := provider.KeyRef{Domain: "S3", ID: "k1", Location: provider.LocationLocal}
		if _, err := l.Load(t.Context(), ref); err == nil || errors.Is(err, provider.ErrKeyNotFound) {
			t.Errorf("Load of a directory = %v, want an error other than ErrKeyNotFound", err)
		}
		if err := l.Destroy(t.Context(), ref); err == nil {
			t.Error("Destroy of a directory succeeded")
		}
	})
}
