package provider_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/provider"
)

// newVault returns a vault of domain S3 over a fresh SQLite store, with keys
// A and B in its keyring and A current.
func newVault(t *testing.T) (*provider.Vault, *provider.SQLiteStore, *provider.Key, *provider.Key) {
	t.Helper()
	s := openStore(t)
	v := provider.NewVault("S3", s)
	a, _ := newKey(t, "A")
	b, _ := newKey(t, "B")
	v.AddKey(a)
	v.AddKey(b)
	if err := v.Switch("A", nil); err != nil {
		t.Fatal(err)
	}
	return v, s, a, b
}

func vget(t *testing.T, v *provider.Vault, name string) ([]byte, int64) {
	t.Helper()
	val, ver, err := v.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get %q: %v", name, err)
	}
	return val, ver
}

func vput(t *testing.T, v *provider.Vault, name string, value []byte) int64 {
	t.Helper()
	ver, err := v.Put(t.Context(), name, value, provider.Cond{})
	if err != nil {
		t.Fatalf("Put %q: %v", name, err)
	}
	return ver
}

func TestVault_PutGet(t *testing.T) {
	v, s, _, _ := newVault(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	cases := []struct {
		name  string
		value []byte
	}{
		{"every byte", all},
		{"every byte reversed", reversed(all)},
		{"empty", []byte{}},
		{"zeros", make([]byte, 100)},
		{"largest", pattern(provider.MaxValueSize)},
		{"ключ/пароль", []byte("значение")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if ver := vput(t, v, c.name, c.value); ver != 1 {
				t.Fatalf("first Put returned version %d", ver)
			}
			got, ver := vget(t, v, c.name)
			if !bytes.Equal(got, c.value) || ver != 1 {
				t.Fatalf("Get = (%d bytes, version %d), want the %d bytes put at version 1", len(got), ver, len(c.value))
			}
			e := get(t, s, c.name)
			if e.KeyID != "A" {
				t.Errorf("sealed under %q, want the current key A", e.KeyID)
			}
			if len(c.value) >= 8 && bytes.Contains(e.Sealed, c.value[:8]) {
				t.Errorf("the stored row holds the plaintext")
			}
			if ver := vput(t, v, c.name, []byte("second")); ver != 2 {
				t.Errorf("second Put returned version %d", ver)
			}
			if got, ver := vget(t, v, c.name); string(got) != "second" || ver != 2 {
				t.Errorf("Get after the second Put = %q, %d", got, ver)
			}
		})
	}
	if v.Domain() != "S3" || v.Store() != provider.Store(s) || v.Current() != "A" {
		t.Errorf("Domain %q, Store %v, Current %q", v.Domain(), v.Store(), v.Current())
	}
}

func reversed(b []byte) []byte {
	out := bytes.Clone(b)
	slices.Reverse(out)
	return out
}

func TestVault_Refusals(t *testing.T) {
	v, s, _, _ := newVault(t)
	ctx := t.Context()
	cases := []struct {
		desc string
		do   func() error
		want error
	}{
		{"Put invalid name", func() error { _, err := v.Put(ctx, "a\nb", []byte("v"), provider.Cond{}); return err }, provider.ErrInvalidName},
		{"Put empty name", func() error { _, err := v.Put(ctx, "", []byte("v"), provider.Cond{}); return err }, provider.ErrInvalidName},
		{"Put too large", func() error {
			_, err := v.Put(ctx, "big", make([]byte, provider.MaxValueSize+1), provider.Cond{})
			return err
		}, provider.ErrValueTooLarge},
		{"Get invalid name", func() error { _, _, err := v.Get(ctx, "\x00"); return err }, provider.ErrInvalidName},
		{"Get missing", func() error { _, _, err := v.Get(ctx, "missing"); return err }, provider.ErrNotFound},
		{"Delete invalid name", func() error { return v.Delete(ctx, "", 0) }, provider.ErrInvalidName},
		{"Delete missing", func() error { return v.Delete(ctx, "missing", 0) }, provider.ErrNotFound},
		{"Put create-only existing", func() error {
			_, err := v.Put(ctx, "existing", []byte("v"), provider.Cond{CreateOnly: true})
			return err
		}, provider.ErrExists},
		{"Put wrong version", func() error {
			_, err := v.Put(ctx, "existing", []byte("v"), provider.Cond{IfVersion: 7})
			return err
		}, provider.ErrVersionMismatch},
	}
	vput(t, v, "existing", []byte("kept"))
	for _, c := range cases {
		if err := c.do(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.desc, err, c.want)
		}
	}
	if n, _ := s.Count(ctx); n != 1 {
		t.Errorf("refused writes left %d entries, want 1", n)
	}
	if got, ver := vget(t, v, "existing"); string(got) != "kept" || ver != 1 {
		t.Errorf("refused writes changed the entry: %q %d", got, ver)
	}
	// Delete and List go through too.
	vput(t, v, "b", []byte("v"))
	if names, err := v.List(ctx, "", 10); err != nil || strings.Join(names, ",") != "b,existing" {
		t.Errorf("List = %q, %v", names, err)
	}
	if err := v.Delete(ctx, "b", 2); !errors.Is(err, provider.ErrVersionMismatch) {
		t.Errorf("Delete at a wrong version = %v", err)
	}
	if err := v.Delete(ctx, "b", 1); err != nil {
		t.Errorf("Delete = %v", err)
	}
}

func TestVault_GetUnavailableKey(t *testing.T) {
	v, _, _, _ := newVault(t)
	ctx := t.Context()
	vput(t, v, "a", []byte("value"))
	v.DropKey("A")
	if v.Key("A") != nil {
		t.Fatal("DropKey left the key")
	}
	_, _, err := v.Get(ctx, "a")
	if !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Fatalf("Get under a key not loaded = %v, want ErrKeyUnavailable", err)
	}
	reason := errors.New("kmip server kms1: dial tcp 10.0.0.7:5696: connection refused")
	v.SetUnavailable(reason)
	if v.Unavailable() != reason {
		t.Errorf("Unavailable() = %v", v.Unavailable())
	}
	_, _, err = v.Get(ctx, "a")
	if !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Fatalf("Get = %v, want ErrKeyUnavailable", err)
	}
	for _, want := range []string{reason.Error(), "S3", "A"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	v.SetUnavailable(nil)
	if v.Unavailable() != nil {
		t.Error("SetUnavailable(nil) did not clear the reason")
	}
}

func TestVault_GetCorruptRow(t *testing.T) {
	const secret = "secret-value-0123456789"
	setCT := func(mutate func(ct, other []byte) []byte) func(t *testing.T, db *sql.DB, s provider.Store) {
		return func(t *testing.T, db *sql.DB, s provider.Store) {
			ct := mutate(bytes.Clone(get(t, s, "ftp/password").Sealed), get(t, s, "other").Sealed)
			if _, err := db.Exec(`UPDATE entries SET ct = ? WHERE name = 'ftp/password'`, ct); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		desc   string
		domain string // the vault's domain when reading
		damage func(t *testing.T, db *sql.DB, s provider.Store)
		wantID string
	}{
		{"flipped version byte", "S3", setCT(func(ct, _ []byte) []byte { ct[0] ^= 1; return ct }), "A"},
		{"flipped nonce byte", "S3", setCT(func(ct, _ []byte) []byte { ct[5] ^= 1; return ct }), "A"},
		{"flipped ciphertext byte", "S3", setCT(func(ct, _ []byte) []byte { ct[provider.SealOverhead-16+3] ^= 0x80; return ct }), "A"},
		{"flipped tag byte", "S3", setCT(func(ct, _ []byte) []byte { ct[len(ct)-1] ^= 1; return ct }), "A"},
		{"truncated", "S3", setCT(func(ct, _ []byte) []byte { return ct[:10] }), "A"},
		{"empty", "S3", setCT(func(ct, _ []byte) []byte { return []byte{} }), "A"},
		{"ciphertext of another row", "S3", setCT(func(_, other []byte) []byte { return other }), "A"},
		{"row pointed at another key", "S3", func(t *testing.T, db *sql.DB, _ provider.Store) {
			if _, err := db.Exec(`INSERT INTO mks(id) VALUES ('B') ON CONFLICT DO NOTHING;
				UPDATE entries SET mk = (SELECT num FROM mks WHERE id = 'B') WHERE name = 'ftp/password'`); err != nil {
				t.Fatal(err)
			}
		}, "B"},
		{"row read by another domain", "FTP", nil, "A"},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			v, s, a, b := newVault(t)
			vput(t, v, "ftp/password", []byte(secret))
			vput(t, v, "other", []byte("other value"))
			before := get(t, s, "ftp/password")
			if c.damage != nil {
				c.damage(t, rawDB(t, s.Path()), s)
				if after := get(t, s, "ftp/password"); sameEntry(after, before) {
					t.Fatal("the damage did not change the row")
				}
			}
			if c.domain != "S3" {
				v = provider.NewVault(c.domain, s)
				v.AddKey(a)
				v.AddKey(b)
			}
			val, _, err := v.Get(t.Context(), "ftp/password")
			if err == nil {
				t.Fatalf("Get of a corrupt row returned %q", val)
			}
			var ee *provider.EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("Get = %v (%T), want an *EntryError", err, err)
			}
			if ee.Domain != c.domain || ee.Name != "ftp/password" || ee.KeyID != c.wantID {
				t.Errorf("EntryError = {%s %s %s}, want {%s ftp/password %s}", ee.Domain, ee.Name, ee.KeyID, c.domain, c.wantID)
			}
			if !errors.Is(err, provider.ErrOpen) {
				t.Errorf("Get = %v, want it to wrap ErrOpen", err)
			}
			for _, want := range []string{"domain " + c.domain, `"ftp/password"`, "key " + c.wantID} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q holds the value", err)
			}
			if c.domain == "S3" {
				if got, _ := vget(t, v, "other"); string(got) != "other value" {
					t.Errorf("other = %q: one bad row must not spoil the others", got)
				}
			}
		})
	}
}

func TestVault_PutWithoutCurrentKey(t *testing.T) {
	s := openStore(t)
	v := provider.NewVault("S3", s)
	a, _ := newKey(t, "A")
	v.AddKey(a) // in the keyring but not current
	ctx := t.Context()
	if _, err := v.Put(ctx, "a", []byte("v"), provider.Cond{}); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("Put with no current key = %v, want ErrKeyUnavailable", err)
	}
	if err := v.PutAll(ctx, []provider.Item{{Name: "a", Value: []byte("v")}}); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("PutAll with no current key = %v, want ErrKeyUnavailable", err)
	}
	if n, _ := s.Count(ctx); n != 0 {
		t.Errorf("refused Puts wrote %d entries", n)
	}
}

func TestVault_PutUnderUnloadedCurrentKey(t *testing.T) {
	v, s, _, _ := newVault(t)
	ctx := t.Context()
	v.DropKey("A") // current, but gone from the keyring
	reason := errors.New("key file S3/A.key: master key not found")
	v.SetUnavailable(reason)
	_, err := v.Put(ctx, "a", []byte("v"), provider.Cond{})
	if !errors.Is(err, provider.ErrKeyUnavailable) || !strings.Contains(err.Error(), reason.Error()) {
		t.Errorf("Put under an unloaded current key = %v, want ErrKeyUnavailable mentioning %q", err, reason)
	}
	if n, _ := s.Count(ctx); n != 0 {
		t.Errorf("the refused Put wrote %d entries", n)
	}
}

func TestVault_Switch(t *testing.T) {
	t.Run("to a key not loaded", func(t *testing.T) {
		v, _, _, _ := newVault(t)
		called := false
		err := v.Switch("C", func() error { called = true; return nil })
		if !errors.Is(err, provider.ErrKeyUnavailable) || called || v.Current() != "A" {
			t.Errorf("Switch to an unloaded key = %v (persist called %v, current %s)", err, called, v.Current())
		}
	})
	t.Run("persist fails", func(t *testing.T) {
		v, s, _, _ := newVault(t)
		boom := errors.New("disk full")
		err := v.Switch("B", func() error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("Switch = %v, want the persist error", err)
		}
		if v.Current() != "A" {
			t.Errorf("after a failed Switch, current = %s, want A", v.Current())
		}
		vput(t, v, "a", []byte("v"))
		if e := get(t, s, "a"); e.KeyID != "A" {
			t.Errorf("after a failed Switch, a Put sealed under %s, want A", e.KeyID)
		}
	})
	t.Run("persist succeeds", func(t *testing.T) {
		v, s, _, _ := newVault(t)
		called := 0
		err := v.Switch("B", func() error { called++; return nil })
		if err != nil || called != 1 || v.Current() != "B" {
			t.Fatalf("Switch = %v, persist called %d times, current %s", err, called, v.Current())
		}
		vput(t, v, "a", []byte("v"))
		if e := get(t, s, "a"); e.KeyID != "B" {
			t.Errorf("after Switch, a Put sealed under %s, want B", e.KeyID)
		}
	})
}

// gatedStore holds a Put inside the store, as if its commit were slow, until
// the test opens the gate.
type gatedStore struct {
	provider.Store
	gate    atomic.Bool
	entered chan struct{}
	release chan struct{}

	mu  sync.Mutex
	log []string
}

func (g *gatedStore) record(s string) {
	g.mu.Lock()
	g.log = append(g.log, s)
	g.mu.Unlock()
}

func (g *gatedStore) Put(ctx context.Context, e provider.Entry, c provider.Cond) (int64, error) {
	if g.gate.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	v, err := g.Store.Put(ctx, e, c)
	g.record("put " + e.Name + " committed under " + e.KeyID)
	return v, err
}

// gatedVault returns a vault of domain S3 over a gatedStore over a fresh
// SQLite store, with keys A and B in its keyring and A current.
func gatedVault(t *testing.T) (*provider.Vault, *gatedStore, *provider.SQLiteStore) {
	t.Helper()
	s := openStore(t)
	g := &gatedStore{Store: s, entered: make(chan struct{}), release: make(chan struct{})}
	v := provider.NewVault("S3", g)
	for _, id := range []string{"A", "B"} {
		k, _ := newKey(t, id)
		v.AddKey(k)
	}
	if err := v.Switch("A", nil); err != nil {
		t.Fatal(err)
	}
	return v, g, s
}

func TestVault_SwitchWaitsForPutInFlight(t *testing.T) {
	v, g, s := gatedVault(t)
	ctx := t.Context()

	g.gate.Store(true)
	putDone := make(chan error, 1)
	go func() {
		_, err := v.Put(ctx, "inflight", []byte("written before the switch"), provider.Cond{})
		putDone <- err
	}()
	<-g.entered // the Put is sealed and inside Store.Put
	g.gate.Store(false)

	switchDone := make(chan error, 1)
	go func() {
		switchDone <- v.Switch("B", func() error {
			g.record("persist")
			return nil
		})
	}()
	// While the Put is held, Switch must not get through. A Switch that
	// does not wait returns in microseconds; give it ample time to show.
	for range 20 {
		select {
		case err := <-switchDone:
			t.Fatalf("Switch returned (%v) while a Put sealed under the old key was in flight", err)
		default:
		}
		g.mu.Lock()
		ran := len(g.log) > 0
		g.mu.Unlock()
		if ran {
			t.Fatal("Switch ran persist while a Put was in flight")
		}
		sleepBriefly()
	}
	close(g.release)
	if err := <-putDone; err != nil {
		t.Fatal(err)
	}
	if err := <-switchDone; err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	log := strings.Join(g.log, "; ")
	g.mu.Unlock()
	if want := "put inflight committed under A; persist"; log != want {
		t.Errorf("order = %q, want %q", log, want)
	}
	if e := get(t, s, "inflight"); e.KeyID != "A" {
		t.Errorf("the in-flight Put was sealed under %s, want the old key A", e.KeyID)
	}
	if got, _ := vget(t, v, "inflight"); string(got) != "written before the switch" {
		t.Errorf("inflight = %q", got)
	}
	vput(t, v, "after", []byte("v"))
	if e := get(t, s, "after"); e.KeyID != "B" {
		t.Errorf("a Put after Switch was sealed under %s, want B", e.KeyID)
	}
}

// A Switch waits for the writes in flight; reads must not wait behind it.
// Under one mutex they did: a GET's key look-up queued behind the waiting
// Switch (or DropKey), itself behind every PUT in flight.
func TestVault_ReadsDoNotWaitBehindASwitch(t *testing.T) {
	v, g, _ := gatedVault(t)
	c, _ := newKey(t, "C")
	ctx := t.Context()
	vput(t, v, "there", []byte("before"))

	g.gate.Store(true)
	putDone := make(chan error, 1)
	go func() {
		_, err := v.Put(ctx, "inflight", []byte("v"), provider.Cond{})
		putDone <- err
	}()
	<-g.entered
	g.gate.Store(false)
	switchDone := make(chan error, 1)
	go func() { switchDone <- v.Switch("B", nil) }()
	for range 5 {
		sleepBriefly() // let the Switch reach its wait
	}
	select {
	case err := <-switchDone:
		t.Fatalf("Switch returned (%v) with a Put in flight", err)
	default:
	}
	readsDone := make(chan string, 1)
	go func() {
		val, _, err := v.Get(ctx, "there")
		switch {
		case err != nil || string(val) != "before":
			readsDone <- fmt.Sprintf("Get = %q, %v", val, err)
		case v.Key("A") == nil || v.Current() != "A" || v.Unavailable() != nil:
			readsDone <- fmt.Sprintf("Key(A) %v, Current %q, Unavailable %v", v.Key("A"), v.Current(), v.Unavailable())
		default:
			v.AddKey(c)
			v.DropKey("C")
			readsDone <- ""
		}
	}()
	select {
	case msg := <-readsDone:
		if msg != "" {
			t.Error(msg)
		}
	case <-time.After(30 * time.Second):
		t.Error("Get, Key, Current, AddKey and DropKey waited behind a Switch that waits for a Put in flight")
	}
	close(g.release)
	if err := <-putDone; err != nil {
		t.Fatal(err)
	}
	if err := <-switchDone; err != nil {
		t.Fatal(err)
	}
	if v.Current() != "B" {
		t.Fatalf("current after the Switch = %q, want B", v.Current())
	}
}

func TestVault_ConcurrentPutsAcrossSwitches(t *testing.T) {
	v, s, _, _ := newVault(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d/%d", w, i%10)
				val := []byte(fmt.Sprint(w, i))
				if _, err := v.Put(ctx, name, val, provider.Cond{}); err != nil {
					errs <- err
					return
				}
				got, _, err := v.Get(ctx, name)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.HasPrefix(got, []byte(fmt.Sprint(w))) {
					errs <- fmt.Errorf("%s = %q", name, got)
					return
				}
			}
		})
	}
	for i := range 40 {
		to := []string{"A", "B"}[i%2]
		if err := v.Switch(to, nil); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	names, err := v.List(ctx, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, _, err := v.Get(ctx, n); err != nil {
			t.Errorf("%s does not open: %v", n, err)
		}
		if e := get(t, s, n); e.KeyID != "A" && e.KeyID != "B" {
			t.Errorf("%s under %s", n, e.KeyID)
		}
	}
}

func TestVault_PutAll(t *testing.T) {
	items := func(bad int, badItem provider.Item) []provider.Item {
		its := []provider.Item{
			{Name: "i1", Value: []byte("v1")},
			{Name: "i2", Value: []byte("v2")},
			{Name: "i3", Value: []byte("v3")},
			{Name: "i4", Value: []byte("v4")},
			{Name: "i5", Value: []byte("v5")},
		}
		if bad > 0 {
			its[bad-1] = badItem
		}
		return its
	}
	failures := []struct {
		desc     string
		items    []provider.Item
		wantItem string
		want     error
	}{
		{"bad name at item 3", items(3, provider.Item{Name: "bad\nname", Value: []byte("v")}), "item 3", provider.ErrInvalidName},
		{"empty name at item 1", items(1, provider.Item{Name: "", Value: []byte("v")}), "item 1", provider.ErrInvalidName},
		{"too large at item 5", items(5, provider.Item{Name: "big", Value: make([]byte, provider.MaxValueSize+1)}), "item 5", provider.ErrValueTooLarge},
		{"first of two bad items", append(items(2, provider.Item{Name: "\x7f"}), provider.Item{Name: ""}), "item 2", provider.ErrInvalidName},
	}
	for _, f := range failures {
		t.Run(f.desc, func(t *testing.T) {
			v, s, _, _ := newVault(t)
			vput(t, v, "i1", []byte("kept"))
			err := v.PutAll(t.Context(), f.items)
			if !errors.Is(err, f.want) {
				t.Fatalf("PutAll = %v, want %v", err, f.want)
			}
			if !strings.Contains(err.Error(), f.wantItem+":") {
				t.Errorf("PutAll error %q does not name %s", err, f.wantItem)
			}
			if n, _ := s.Count(t.Context()); n != 1 {
				t.Errorf("a refused PutAll left %d entries, want 1", n)
			}
			if got, ver := vget(t, v, "i1"); string(got) != "kept" || ver != 1 {
				t.Errorf("a refused PutAll changed i1: %q %d", got, ver)
			}
		})
	}
	t.Run("writes all under the current key", func(t *testing.T) {
		v, s, _, _ := newVault(t)
		if err := v.Switch("B", nil); err != nil {
			t.Fatal(err)
		}
		if err := v.PutAll(t.Context(), items(0, provider.Item{})); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 5; i++ {
			name := fmt.Sprint("i", i)
			if got, _ := vget(t, v, name); string(got) != fmt.Sprint("v", i) {
				t.Errorf("%s = %q", name, got)
			}
			if e := get(t, s, name); e.KeyID != "B" {
				t.Errorf("%s sealed under %s, want B", name, e.KeyID)
			}
		}
	})
	t.Run("store failure writes nothing", func(t *testing.T) {
		v, s, _, _ := newVault(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := v.PutAll(ctx, items(0, provider.Item{})); err == nil {
			t.Fatal("PutAll with a canceled context succeeded")
		}
		if n, _ := s.Count(t.Context()); n != 0 {
			t.Errorf("a failed PutAll left %d entries", n)
		}
	})
}

// keyFixture is a domain's keys in a LocalKeys source and its metadata.
type keyFixture struct {
	src   *provider.LocalKeys
	dir   string
	store *provider.SQLiteStore
	keys  map[string]*provider.Key
	infos map[string]provider.KeyInfo
}

func (f *keyFixture) sources(loc string) (provider.KeySource, error) {
	if loc == provider.LocationLocal {
		return f.src, nil
	}
	return nil, fmt.Errorf("no key source at %q", loc)
}

// newKeyFixture creates a key per state in LocalKeys, records it in the
// store's metadata and seals an entry "under/<id>" under each.
func newKeyFixture(t *testing.T, states map[string]provider.KeyState) *keyFixture {
	t.Helper()
	src, dir := newLocal(t)
	f := &keyFixture{src: src, dir: dir, store: openStore(t), keys: map[string]*provider.Key{}, infos: map[string]provider.KeyInfo{}}
	var infos []provider.KeyInfo
	for id, st := range states {
		ref, m := localCreate(t, src, "S3", id)
		k, err := provider.NewKey(id, m)
		if err != nil {
			t.Fatal(err)
		}
		f.keys[id] = k
		ki := provider.KeyInfo{KeyRef: ref, State: st, Fingerprint: provider.Fingerprint(m)}
		f.infos[id] = ki
		infos = append(infos, ki)
		if st == provider.KeyPending {
			continue
		}
		name := "under/" + id
		sealed, err := k.Seal(nil, "S3", name, []byte("value of "+id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.Put(t.Context(), provider.Entry{Name: name, KeyID: id, Sealed: sealed}, provider.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.store.UpdateMeta(t.Context(), provider.MetaUpdate{PutKeys: infos}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *keyFixture) setInfo(t *testing.T, ki provider.KeyInfo) {
	t.Helper()
	if err := f.store.UpdateMeta(t.Context(), provider.MetaUpdate{PutKeys: []provider.KeyInfo{ki}}); err != nil {
		t.Fatal(err)
	}
}

func TestVault_LoadKeys(t *testing.T) {
	f := newKeyFixture(t, map[string]provider.KeyState{
		"cur": provider.KeyCurrent, "ret": provider.KeyRetiring, "old": provider.KeyRetired,
		"pend": provider.KeyPending, "gone": provider.KeyRetiring,
	})
	ctx := t.Context()
	if err := f.src.Destroy(ctx, f.infos["gone"].KeyRef); err != nil {
		t.Fatal(err)
	}
	v := provider.NewVault("S3", f.store)
	v.SetUnavailable(errors.New("stale reason"))
	err := v.LoadKeys(ctx, f.sources)
	if !errors.Is(err, provider.ErrKeyNotFound) || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("LoadKeys = %v, want ErrKeyNotFound for key gone", err)
	}
	if u := v.Unavailable(); u == nil || u.Error() != err.Error() {
		t.Errorf("Unavailable() = %v, want the LoadKeys error", u)
	}
	if v.Current() != "cur" {
		t.Errorf("Current() = %q, want cur", v.Current())
	}
	for id, loaded := range map[string]bool{"cur": true, "ret": true, "old": true, "pend": false, "gone": false} {
		k := v.Key(id)
		if (k != nil) != loaded {
			t.Errorf("key %s loaded = %v, want %v", id, k != nil, loaded)
		}
		if k != nil && k.Fingerprint() != f.keys[id].Fingerprint() {
			t.Errorf("key %s loaded with another fingerprint", id)
		}
	}
	for _, id := range []string{"cur", "ret", "old"} {
		if got, _ := vget(t, v, "under/"+id); string(got) != "value of "+id {
			t.Errorf("entry under %s = %q", id, got)
		}
	}
	_, _, err = v.Get(ctx, "under/gone")
	if !errors.Is(err, provider.ErrKeyUnavailable) || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Get under the missing key = %v, want ErrKeyUnavailable naming it", err)
	}
	if strings.Contains(err.Error(), "stale reason") {
		t.Errorf("LoadKeys kept the old unavailable reason: %v", err)
	}
	vput(t, v, "new", []byte("v"))
	if e := get(t, f.store, "new"); e.KeyID != "cur" {
		t.Errorf("Put after LoadKeys sealed under %s, want cur", e.KeyID)
	}

	// Once the key is back, a reload clears the reason.
	f.infos["gone"] = provider.KeyInfo{KeyRef: f.infos["gone"].KeyRef, State: provider.KeyRetired}
	if err := f.store.UpdateMeta(ctx, provider.MetaUpdate{DeleteKeys: []string{"gone"}}); err != nil {
		t.Fatal(err)
	}
	if err := v.LoadKeys(ctx, f.sources); err != nil {
		t.Fatalf("LoadKeys after the missing key left the metadata: %v", err)
	}
	if v.Unavailable() != nil {
		t.Errorf("Unavailable() = %v after a clean LoadKeys", v.Unavailable())
	}
}

func TestVault_LoadKeysFailures(t *testing.T) {
	cases := []struct {
		desc    string
		damage  func(t *testing.T, f *keyFixture)
		bad     string
		want    error
		mention string
	}{
		{"fingerprint altered in the metadata", func(t *testing.T, f *keyFixture) {
			ki := f.infos["ret"]
			fp := []byte(ki.Fingerprint)
			fp[0] ^= 1
			ki.Fingerprint = string(fp)
			f.setInfo(t, ki)
		}, "ret", provider.ErrKeyCorrupt, "fingerprint"},
		{"fingerprint of another key", func(t *testing.T, f *keyFixture) {
			ki := f.infos["ret"]
			ki.Fingerprint = f.infos["cur"].Fingerprint
			f.setInfo(t, ki)
		}, "ret", provider.ErrKeyCorrupt, "fingerprint"},
		{"key file damaged", func(t *testing.T, f *keyFixture) {
			// A key file of another id in its place.
			localCreate(t, f.src, "S3", "spare")
			b := mustRead(t, keyPath(f.dir, "S3", "spare"))
			if err := os.WriteFile(keyPath(f.dir, "S3", "ret"), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "ret", provider.ErrKeyCorrupt, "ret"},
		{"unknown location", func(t *testing.T, f *keyFixture) {
			ki := f.infos["ret"]
			ki.Location = "kms-deleted"
			f.setInfo(t, ki)
		}, "ret", nil, "kms-deleted"},
		{"current key missing", func(t *testing.T, f *keyFixture) {
			if err := f.src.Destroy(t.Context(), f.infos["cur"].KeyRef); err != nil {
				t.Fatal(err)
			}
		}, "cur", provider.ErrKeyNotFound, "cur"},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			f := newKeyFixture(t, map[string]provider.KeyState{"cur": provider.KeyCurrent, "ret": provider.KeyRetiring})
			c.damage(t, f)
			v := provider.NewVault("S3", f.store)
			err := v.LoadKeys(t.Context(), f.sources)
			if err == nil {
				t.Fatal("LoadKeys succeeded")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("LoadKeys = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("LoadKeys error %q does not mention %q", err, c.mention)
			}
			if v.Key(c.bad) != nil {
				t.Errorf("key %s was loaded despite the damage", c.bad)
			}
			good := map[string]string{"cur": "ret", "ret": "cur"}[c.bad]
			if v.Key(good) == nil {
				t.Errorf("key %s was not loaded: one bad key must not keep the others out", good)
			}
			if got, _ := vget(t, v, "under/"+good); string(got) != "value of "+good {
				t.Errorf("entry under the good key = %q", got)
			}
			if _, _, err := v.Get(t.Context(), "under/"+c.bad); !errors.Is(err, provider.ErrKeyUnavailable) {
				t.Errorf("Get under the bad key = %v, want ErrKeyUnavailable", err)
			}
			if v.Current() != "cur" {
				t.Errorf("Current() = %q, want cur even when it could not be loaded", v.Current())
			}
		})
	}
}

func TestVault_LoadKeysSkipsPending(t *testing.T) {
	f := newKeyFixture(t, map[string]provider.KeyState{"cur": provider.KeyCurrent, "pend": provider.KeyPending})
	// A PENDING key's file may not even exist yet.
	if err := f.src.Destroy(t.Context(), f.infos["pend"].KeyRef); err != nil {
		t.Fatal(err)
	}
	v := provider.NewVault("S3", f.store)
	if err := v.LoadKeys(t.Context(), f.sources); err != nil {
		t.Fatalf("LoadKeys with a missing PENDING key: %v", err)
	}
	if v.Key("pend") != nil || v.Key("cur") == nil || v.Current() != "cur" {
		t.Errorf("pend loaded %v, cur loaded %v, current %q", v.Key("pend") != nil, v.Key("cur") != nil, v.Current())
	}
}

// No entry is sealed under a RETIRED key, so one that is gone (a crash
// between DESTROY's two steps) does not make the domain unavailable.
func TestVault_LoadKeysMissingRetiredKey(t *testing.T) {
	f := newKeyFixture(t, map[string]provider.KeyState{"cur": provider.KeyCurrent, "ret": provider.KeyRetiring})
	ki := f.infos["ret"]
	ki.State = provider.KeyRetired
	f.setInfo(t, ki)
	if err := f.store.Delete(t.Context(), "under/ret", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.src.Destroy(t.Context(), ki.KeyRef); err != nil {
		t.Fatal(err)
	}
	v := provider.NewVault("S3", f.store)
	if err := v.LoadKeys(t.Context(), f.sources); err != nil {
		t.Fatalf("LoadKeys with a RETIRED key gone: %v", err)
	}
	if v.Unavailable() != nil || v.Key("cur") == nil || v.Key("ret") != nil || v.Current() != "cur" {
		t.Errorf("unavailable %v, cur loaded %v, ret loaded %v, current %q", v.Unavailable(), v.Key("cur") != nil, v.Key("ret") != nil, v.Current())
	}
	// A RETIRED key that is there but damaged is still refused.
	f2 := newKeyFixture(t, map[string]provider.KeyState{"cur": provider.KeyCurrent, "old": provider.KeyRetired})
	ki = f2.infos["old"]
	ki.Fingerprint = f2.infos["cur"].Fingerprint
	f2.setInfo(t, ki)
	v2 := provider.NewVault("S3", f2.store)
	v2.LoadKeys(t.Context(), f2.sources)
	if v2.Key("old") != nil {
		t.Error("a RETIRED key whose fingerprint does not match was loaded")
	}
}

func TestVault_LoadKeysStoreClosed(t *testing.T) {
	f := newKeyFixture(t, map[string]provider.KeyState{"cur": provider.KeyCurrent})
	f.store.Close()
	if err := provider.NewVault("S3", f.store).LoadKeys(t.Context(), f.sources); err == nil {
		t.Fatal("LoadKeys over a closed store succeeded")
	}
}

func TestLoadKey(t *testing.T) {
	f := newKeyFixture(t, map[string]provider.KeyState{"k": provider.KeyPending})
	ki := f.infos["k"]
	ki.Fingerprint = "" // PENDING keys have none yet: not checked
	k, err := provider.LoadKey(t.Context(), f.sources, ki)
	if err != nil || k.ID() != "k" || k.Fingerprint() != f.keys["k"].Fingerprint() {
		t.Fatalf("LoadKey without a fingerprint = %v, %v", k, err)
	}
	ki.Fingerprint = strings.Repeat("0", 32)
	if _, err := provider.LoadKey(t.Context(), f.sources, ki); !errors.Is(err, provider.ErrKeyCorrupt) {
		t.Errorf("LoadKey with a wrong fingerprint = %v, want ErrKeyCorrupt", err)
	}
}

func sleepBriefly() { time.Sleep(5 * time.Millisecond) }

// A reload of the keys (after an outage) must never undo a Switch made
// since the metadata it read: writes would go back to an MK about to be
// destroyed.
func TestVault_LoadKeysNeverUndoesASwitch(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	st, err := provider.OpenSQLite(filepath.Join(dir, "S3.db"), provider.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lk, err := provider.NewLocalKeys(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	sources := func(string) (provider.KeySource, error) { return lk, nil }
	var infos []provider.KeyInfo
	for _, id := range []string{"aaaa", "bbbb"} {
		ref, m, err := lk.Create(ctx, "S3", id)
		if err != nil {
			t.Fatal(err)
		}
		state := provider.KeyCurrent
		if id == "bbbb" {
			state = provider.KeyPending
		}
		infos = append(infos, provider.KeyInfo{KeyRef: ref, State: state, Fingerprint: provider.Fingerprint(m)})
	}
	if err := st.UpdateMeta(ctx, provider.MetaUpdate{PutKeys: infos}); err != nil {
		t.Fatal(err)
	}
	v := provider.NewVault("S3", st)
	if err := v.LoadKeys(ctx, sources); err != nil || v.Current() != "aaaa" {
		t.Fatalf("first load: current %q, %v", v.Current(), err)
	}
	m, err := lk.Load(ctx, infos[1].KeyRef)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := provider.NewKey("bbbb", m)
	v.AddKey(kb)
	// The switch is in memory; the metadata a concurrent reload read still
	// says aaaa is current.
	if err := v.Switch("bbbb", nil); err != nil {
		t.Fatal(err)
	}
	if err := v.LoadKeys(ctx, sources); err != nil {
		t.Fatal(err)
	}
	if got := v.Current(); got != "bbbb" {
		t.Fatalf("a reload undid the switch: current %q, want bbbb", got)
	}
}
