package provider_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmd-project/kmd/provider"
)

func openStore(t *testing.T) *provider.SQLiteStore {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "S3.db"))
}

func openStoreAt(t *testing.T, path string) *provider.SQLiteStore {
	t.Helper()
	s, err := provider.OpenSQLite(path, provider.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawDB is a second, independent connection to a store's file, as an
// operator's sqlite3 shell or a damaged disk would be.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func put(t *testing.T, s provider.Store, name, keyID, sealed string) int64 {
	t.Helper()
	v, err := s.Put(t.Context(), provider.Entry{Name: name, KeyID: keyID, Sealed: []byte(sealed)}, provider.Cond{})
	if err != nil {
		t.Fatalf("Put %q: %v", name, err)
	}
	return v
}

func get(t *testing.T, s provider.Store, name string) provider.Entry {
	t.Helper()
	e, err := s.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get %q: %v", name, err)
	}
	return e
}

func wantAbsent(t *testing.T, s provider.Store, name string) {
	t.Helper()
	if e, err := s.Get(t.Context(), name); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("Get %q = (%+v, %v), want ErrNotFound", name, e, err)
	}
}

func sameEntry(a, b provider.Entry) bool {
	return a.Name == b.Name && a.KeyID == b.KeyID && a.Version == b.Version && string(a.Sealed) == string(b.Sealed) &&
		a.Created.Equal(b.Created) && a.Updated.Equal(b.Updated) && a.Ref == b.Ref
}

func TestSQLite_PutVersions(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	steps := []struct {
		key, sealed string
		at          time.Time
		want        int64
	}{
		{"A", "v1", t1, 1},
		{"B", "v2", t1.Add(time.Second), 2},
		{"B", "v3", t1.Add(2 * time.Second), 3},
	}
	var ref int64
	for _, st := range steps {
		v, err := s.Put(ctx, provider.Entry{Name: "ftp/password", KeyID: st.key, Sealed: []byte(st.sealed), Updated: st.at}, provider.Cond{})
		if err != nil {
			t.Fatal(err)
		}
		if v != st.want {
			t.Fatalf("Put %s returned version %d, want %d", st.sealed, v, st.want)
		}
		e := get(t, s, "ftp/password")
		if e.Version != st.want || e.KeyID != st.key || string(e.Sealed) != st.sealed {
			t.Fatalf("after Put %s: Get = %+v", st.sealed, e)
		}
		if !e.Created.Equal(t1) || !e.Updated.Equal(st.at) {
			t.Errorf("after Put %s: Created %v Updated %v, want %v and %v", st.sealed, e.Created, e.Updated, t1, st.at)
		}
		if e.Created.Location() != time.UTC {
			t.Errorf("Created is in %v, want UTC", e.Created.Location())
		}
		if ref == 0 {
			ref = e.Ref
		}
		if e.Ref == 0 || e.Ref != ref {
			t.Errorf("Ref = %d, want a stable non-zero handle (%d)", e.Ref, ref)
		}
	}
	// A zero Updated means now.
	before := time.Now()
	put(t, s, "fresh", "A", "v")
	after := time.Now()
	if e := get(t, s, "fresh"); e.Updated.Before(before) || e.Updated.After(after) || !e.Created.Equal(e.Updated) {
		t.Errorf("Put with zero Updated stored Created %v Updated %v, want both in [%v, %v]", e.Created, e.Updated, before, after)
	}
	wantAbsent(t, s, "missing")
}

func TestSQLite_PutConditions(t *testing.T) {
	cases := []struct {
		desc    string
		name    string
		cond    provider.Cond
		want    int64
		wantErr error
	}{
		{"create-only, absent", "b", provider.Cond{CreateOnly: true}, 1, nil},
		{"create-only, present", "a", provider.Cond{CreateOnly: true}, 0, provider.ErrExists},
		{"if-version right", "a", provider.Cond{IfVersion: 2}, 3, nil},
		{"if-version older", "a", provider.Cond{IfVersion: 1}, 0, provider.ErrVersionMismatch},
		{"if-version newer", "a", provider.Cond{IfVersion: 3}, 0, provider.ErrVersionMismatch},
		{"if-version, absent", "b", provider.Cond{IfVersion: 1}, 0, provider.ErrVersionMismatch},
		{"no condition, present", "a", provider.Cond{}, 3, nil},
		{"no condition, absent", "b", provider.Cond{}, 1, nil},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			s := openStore(t)
			put(t, s, "a", "A", "old1")
			put(t, s, "a", "A", "old2")
			before := get(t, s, "a")
			v, err := s.Put(t.Context(), provider.Entry{Name: c.name, KeyID: "B", Sealed: []byte("new")}, c.cond)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || v != 0 {
					t.Fatalf("Put = (%d, %v), want (0, %v)", v, err, c.wantErr)
				}
				if c.name == "a" {
					if after := get(t, s, "a"); !sameEntry(after, before) {
						t.Errorf("a refused Put changed the entry: %+v -> %+v", before, after)
					}
				} else {
					wantAbsent(t, s, c.name)
				}
				return
			}
			if err != nil || v != c.want {
				t.Fatalf("Put = (%d, %v), want (%d, nil)", v, err, c.want)
			}
			if e := get(t, s, c.name); e.Version != c.want || e.KeyID != "B" || string(e.Sealed) != "new" {
				t.Errorf("after Put: %+v", e)
			}
		})
	}
}

func TestSQLite_Delete(t *testing.T) {
	cases := []struct {
		desc      string
		name      string
		ifVersion int64
		wantErr   error
	}{
		{"plain", "a", 0, nil},
		{"plain, absent", "b", 0, provider.ErrNotFound},
		{"if-version right", "a", 2, nil},
		{"if-version older", "a", 1, provider.ErrVersionMismatch},
		{"if-version newer", "a", 3, provider.ErrVersionMismatch},
		{"if-version, absent", "b", 1, provider.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			s := openStore(t)
			put(t, s, "a", "A", "v1")
			put(t, s, "a", "A", "v2")
			put(t, s, "other", "A", "v")
			before := get(t, s, "a")
			err := s.Delete(t.Context(), c.name, c.ifVersion)
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Fatalf("Delete = %v, want %v", err, c.wantErr)
			}
			switch {
			case c.wantErr == nil:
				wantAbsent(t, s, c.name)
				if err := s.Delete(t.Context(), c.name, c.ifVersion); !errors.Is(err, provider.ErrNotFound) {
					t.Errorf("second Delete = %v, want ErrNotFound", err)
				}
			case c.name == "a":
				if after := get(t, s, "a"); !sameEntry(after, before) {
					t.Errorf("a refused Delete changed the entry")
				}
			}
			if n, _ := s.Count(t.Context()); (c.wantErr == nil && n != 1) || (c.wantErr != nil && n != 2) {
				t.Errorf("Count after Delete = %d", n)
			}
			get(t, s, "other")
		})
	}
}

func TestSQLite_List(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	got, err := s.List(ctx, "", 10)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("List of an empty store = %#v, %v; want an empty, non-nil slice", got, err)
	}
	names := []string{"b", "a", "B", "a/b", "a.b", "ключ", "é", "ab", "a b", "~", "Z", "a0", "日本"}
	for _, n := range names {
		put(t, s, n, "A", "v")
	}
	want := slices.Clone(names)
	sort.Strings(want) // bytewise
	if got, err := s.List(ctx, "", 100); err != nil || !slices.Equal(got, want) {
		t.Fatalf("List = %q, %v; want %q", got, err, want)
	}
	for _, limit := range []int{1, 2, 3, 5, 13, 20} {
		var all []string
		after := ""
		for pages := 0; ; pages++ {
			page, err := s.List(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			if pages > len(names) {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			all = append(all, page...)
			after = page[len(page)-1]
		}
		if !slices.Equal(all, want) {
			t.Errorf("limit %d: paged %q, want %q", limit, all, want)
		}
	}
	if got, err := s.List(ctx, "a", 3); err != nil || !slices.Equal(got, want[slices.Index(want, "a")+1:][:3]) {
		t.Errorf("List after \"a\" = %q, want the 3 names after it", got)
	}
	got, err = s.List(ctx, want[len(want)-1], 10)
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("List after the last name = %#v, %v; want an empty, non-nil slice", got, err)
	}
}

func TestSQLite_Counts(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	if u, err := s.KeyUsage(ctx); err != nil || len(u) != 0 {
		t.Fatalf("KeyUsage of an empty store = %v, %v", u, err)
	}
	for i := range 3 {
		put(t, s, fmt.Sprint("a", i), "A", "v")
	}
	put(t, s, "b0", "B", "v")
	put(t, s, "b1", "B", "v")
	put(t, s, "c0", "C", "v")
	check := func(step string, total int64, usage map[string]int64) {
		t.Helper()
		if n, err := s.Count(ctx); err != nil || n != total {
			t.Errorf("%s: Count = %d, %v; want %d", step, n, err, total)
		}
		got, err := s.KeyUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for id, want := range usage {
			if n, err := s.CountByKey(ctx, id); err != nil || n != want {
				t.Errorf("%s: CountByKey(%s) = %d, %v; want %d", step, id, n, err, want)
			}
			if want != 0 && got[id] != want {
				t.Errorf("%s: KeyUsage[%s] = %d, want %d", step, id, got[id], want)
			}
		}
		for id, n := range got {
			if usage[id] != n {
				t.Errorf("%s: KeyUsage has %s: %d, want %d", step, id, n, usage[id])
			}
		}
	}
	check("start", 6, map[string]int64{"A": 3, "B": 2, "C": 1, "none": 0})
	put(t, s, "a0", "B", "v") // moved by a service write
	check("after a write under B", 6, map[string]int64{"A": 2, "B": 3, "C": 1})
	if err := s.Delete(ctx, "c0", 0); err != nil {
		t.Fatal(err)
	}
	check("after a delete", 5, map[string]int64{"A": 2, "B": 3, "C": 0})
}

// marked is a Reseal that marks what it rewrote, keeping the old value.
func marked(dst []byte, name string, sealed []byte) ([]byte, error) {
	dst = append(dst, "rewrapped:"+name+":"...)
	return append(dst, sealed...), nil
}

// rewrapAll runs RewrapRange over the whole store, limit rows at a time,
// and returns how many it rewrote.
func rewrapAll(t *testing.T, s *provider.SQLiteStore, from, to string, limit int, reseal provider.Reseal) int {
	t.Helper()
	total := 0
	var after int64
	for calls := 0; ; calls++ {
		if calls > 100 {
			t.Fatalf("RewrapRange(%s, limit %d) does not reach the end", from, limit)
		}
		n, next, err := s.RewrapRange(t.Context(), from, to, after, limit, reseal)
		if err != nil {
			t.Fatal(err)
		}
		if n > limit || next < after || (next == after && n != 0) {
			t.Fatalf("RewrapRange(after %d, limit %d) = %d rows, next %d", after, limit, n, next)
		}
		total += n
		if next == after {
			return total
		}
		after = next
	}
}

func TestSQLite_RewrapRange(t *testing.T) {
	for _, limit := range []int{1, 2, 3, 7, 1000} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			s := openStore(t)
			ctx := t.Context()
			for _, n := range []string{"r1", "r2", "r3", "r4", "r5"} {
				put(t, s, n, "A", "a:"+n)
			}
			put(t, s, "r4", "A", "a:r4")
			put(t, s, "r4", "A", "a:r4") // version 3
			put(t, s, "x", "B", "b:x")
			put(t, s, "r2", "A", "service-write")
			if err := s.Delete(ctx, "r3", 0); err != nil { // a gap in the ids
				t.Fatal(err)
			}
			before := map[string]provider.Entry{}
			for _, n := range []string{"r1", "r2", "r4", "r5", "x"} {
				before[n] = get(t, s, n)
			}
			if n := rewrapAll(t, s, "A", "B", limit, marked); n != 4 {
				t.Errorf("rewrote %d rows, want 4", n)
			}
			for _, name := range []string{"r1", "r2", "r4", "r5"} {
				e, b := get(t, s, name), before[name]
				if e.KeyID != "B" || string(e.Sealed) != "rewrapped:"+name+":"+string(b.Sealed) {
					t.Errorf("%s not rewrapped from its value: %+v", name, e)
				}
				if e.Version != b.Version || !e.Updated.Equal(b.Updated) || !e.Created.Equal(b.Created) || e.Ref != b.Ref {
					t.Errorf("%s: RewrapRange changed version or times: %+v -> %+v", name, b, e)
				}
			}
			wantAbsent(t, s, "r3")
			if e := get(t, s, "x"); !sameEntry(e, before["x"]) {
				t.Errorf("an entry already under B changed: %+v", e)
			}
			if n, _ := s.CountByKey(ctx, "A"); n != 0 {
				t.Errorf("CountByKey(A) = %d, want 0", n)
			}
			if u, err := s.KeyUsage(ctx); err != nil || len(u) != 1 || u["B"] != 5 {
				t.Errorf("KeyUsage = %v, %v; want B: 5", u, err)
			}
			// Again: nothing is left under A.
			if n := rewrapAll(t, s, "A", "B", limit, marked); n != 0 {
				t.Errorf("a second pass rewrote %d rows", n)
			}
			if n := rewrapAll(t, s, "never-used", "B", limit, marked); n != 0 {
				t.Errorf("a pass from an unknown key rewrote %d rows", n)
			}
			// Service writes still work, and still bump versions.
			if v := put(t, s, "r1", "B", "later"); v != before["r1"].Version+1 {
				t.Errorf("Put after RewrapRange returned version %d, want %d", v, before["r1"].Version+1)
			}
		})
	}
	t.Run("empty store", func(t *testing.T) {
		s := openStore(t)
		if n, next, err := s.RewrapRange(t.Context(), "A", "B", 0, 10, marked); n != 0 || next != 0 || err != nil {
			t.Errorf("RewrapRange on an empty store = %d, %d, %v; want the end", n, next, err)
		}
		if _, _, err := s.RewrapRange(t.Context(), "A", "B", 0, 0, marked); err == nil {
			t.Error("RewrapRange with limit 0 succeeded")
		}
	})
}

// A rekey's writer keeps to its page cache while other stores are read.
// SQLite's page cache is one for every connection here, and a full cache
// takes another's least recently used page: without RewrapRange giving
// those back, the rewrap kept every page a status poll of the other stores
// left behind, and grew by them for as long as it ran.
func TestSQLite_RewrapKeepsToItsCache(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	const cacheKiB = 256
	s, err := provider.OpenSQLite(filepath.Join(dir, "S3.db"), provider.SQLiteOptions{CacheKiB: cacheKiB})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entries := make([]provider.Entry, 20000)
	for i := range entries {
		entries[i] = provider.Entry{Name: fmt.Sprintf("e%06d", i), KeyID: "A", Sealed: bytes.Repeat([]byte{byte(i)}, 256)}
	}
	if _, err := s.Import(ctx, provider.Each(entries)); err != nil {
		t.Fatal(err)
	}
	var others []*provider.SQLiteStore
	for _, d := range []string{"FTP", "JWT", "NDMP", "SNMP", "SSO", "SIQ", "RICE", "SRS"} {
		o := openStoreAt(t, filepath.Join(dir, d+".db"))
		put(t, o, "x", "K", "v")
		others = append(others, o)
	}
	poll := func() { // what a cluster status reads of each store
		for _, o := range others {
			if _, err := o.Count(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := o.Keys(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	same := func(dst []byte, _ string, sealed []byte) ([]byte, error) { return append(dst, sealed...), nil }
	most := 0
	var after int64
	for batch := 0; ; batch++ {
		if batch%5 == 0 {
			poll()
		}
		n, next, err := s.RewrapRange(ctx, "A", "B", after, 200, same)
		if err != nil {
			t.Fatal(err)
		}
		used, err := s.WriterCacheBytes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, used)
		if n == 0 {
			break
		}
		after = next
	}
	// The cache counts each page with its header: 2x the budget is room
	// for those and for what the batch itself took from the others.
	if most > 2*cacheKiB<<10 {
		t.Errorf("the rewrap's page cache grew to %d KiB; its budget is %d KiB", most>>10, cacheKiB)
	}
}

// nameError keeps the name reseal was given, as an EntryError does.
type nameError struct{ name string }

func (e *nameError) Error() string { return "cannot reseal " + e.name }

func TestSQLite_RewrapRangeIsAtomic(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	for _, n := range []string{"r1", "r2", "r3", "r4"} {
		put(t, s, n, "A", "a:"+n)
	}
	failAt := func(bad string) provider.Reseal {
		return func(dst []byte, name string, sealed []byte) ([]byte, error) {
			if name == bad {
				return nil, &nameError{name}
			}
			return marked(dst, name, sealed)
		}
	}
	_, next, err := s.RewrapRange(ctx, "A", "B", 0, 10, failAt("r3"))
	var ne *nameError
	if !errors.As(err, &ne) || next != 0 {
		t.Fatalf("RewrapRange with a failing reseal = next %d, %v; want reseal's error", next, err)
	}
	// The error outlives the statement: the name it kept must too.
	if ne.name != "r3" {
		t.Errorf("the error's name is %q after the statement, want r3", ne.name)
	}
	if n, _ := s.CountByKey(ctx, "A"); n != 4 {
		t.Errorf("a failed RewrapRange left %d of 4 rows under A: it is not atomic", n)
	}
	if u, _ := s.KeyUsage(ctx); u["A"] != 4 || u["B"] != 0 {
		t.Errorf("a failed RewrapRange changed the kept counts: %v", u)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.RewrapRange(canceled, "A", "B", 0, 10, marked); err == nil {
		t.Error("RewrapRange with a canceled context succeeded")
	}
	if n, _ := s.CountByKey(ctx, "A"); n != 4 {
		t.Errorf("a canceled RewrapRange moved rows: %d left under A", n)
	}
	if n := rewrapAll(t, s, "A", "B", 10, marked); n != 4 {
		t.Errorf("RewrapRange after the failures rewrote %d, want 4", n)
	}
	// Service writes after it are fsynced again: a write and a reopen keep it.
	put(t, s, "r5", "B", "after")
	if e := get(t, s, "r5"); string(e.Sealed) != "after" {
		t.Errorf("r5 = %+v", e)
	}
}

func TestSQLite_Import(t *testing.T) {
	t.Run("writes all", func(t *testing.T) {
		s := openStore(t)
		put(t, s, "a", "A", "old")
		n, err := s.Import(t.Context(), provider.Each([]provider.Entry{
			{Name: "a", KeyID: "B", Sealed: []byte("new-a")},
			{Name: "b", KeyID: "B", Sealed: []byte("new-b")},
			{Name: "c", KeyID: "B", Sealed: []byte("new-c")},
		}))
		if err != nil || n != 3 {
			t.Fatalf("Import = %d, %v; want 3", n, err)
		}
		for name, v := range map[string]int64{"a": 2, "b": 1, "c": 1} {
			if e := get(t, s, name); e.Version != v || e.KeyID != "B" || string(e.Sealed) != "new-"+name {
				t.Errorf("%s after PutAll: %+v", name, e)
			}
		}
		if n, err := s.Import(t.Context(), provider.Each[provider.Entry](nil)); err != nil || n != 0 {
			t.Errorf("Import of nothing = %d, %v", n, err)
		}
		if u, _ := s.KeyUsage(t.Context()); !maps.Equal(u, map[string]int64{"B": 3}) {
			t.Errorf("KeyUsage after the import = %v, want B: 3", u)
		}
	})
	// Replaces, duplicates at several distances and a change of key in
	// the middle of a larger import.
	t.Run("many", func(t *testing.T) {
		s := openStore(t)
		put(t, s, "e0005", "A", "old")
		put(t, s, "e0150", "A", "old")
		var es []provider.Entry
		for i := range 300 {
			key := "B"
			if i >= 200 && i < 210 {
				key = "C" // a run under another key in the middle
			}
			es = append(es, provider.Entry{Name: fmt.Sprintf("e%04d", i), KeyID: key, Sealed: []byte(fmt.Sprint("v", i))})
		}
		n, err := s.Import(t.Context(), provider.Each(es))
		if err != nil || n != 300 {
			t.Fatalf("Import = %d, %v; want 300", n, err)
		}
		for i, e := range es {
			got := get(t, s, e.Name)
			want := int64(1)
			if i == 5 || i == 150 {
				want = 2
			}
			if got.Version != want || got.KeyID != e.KeyID || string(got.Sealed) != string(e.Sealed) {
				t.Errorf("%s after the import: %+v, want version %d under %s", e.Name, got, want, e.KeyID)
			}
		}
		if u, _ := s.KeyUsage(t.Context()); !maps.Equal(u, map[string]int64{"B": 290, "C": 10}) {
			t.Errorf("KeyUsage after the import = %v, want B: 290, C: 10", u)
		}
		for _, c := range []struct{ first, again int }{{3, 40}, {10, 100}, {70, 75}, {150, 290}} {
			dupes := slices.Clone(es)
			dupes[c.again].Name = dupes[c.first].Name
			_, err := s.Import(t.Context(), provider.Each(dupes))
			var dup *provider.DuplicateError
			if !errors.As(err, &dup) || dup.Index != c.again || dup.Name != es[c.first].Name {
				t.Errorf("Import with item %d a second time at %d: %v, want a DuplicateError at %d", c.first, c.again, err, c.again)
			}
		}
		if e := get(t, s, "e0000"); e.Version != 1 {
			t.Errorf("a refused import changed e0000: %+v", e)
		}
	})
	// The rows run without the request's context; its end must still stop
	// the import and undo all of it.
	t.Run("cancelled midway imports nothing", func(t *testing.T) {
		s := openStore(t)
		put(t, s, "e0005", "A", "old")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		i := 0
		n, err := s.Import(ctx, func() (provider.Entry, error) {
			if i == 1000 {
				cancel()
			}
			if i == 5000 {
				return provider.Entry{}, io.EOF
			}
			i++
			return provider.Entry{Name: fmt.Sprintf("e%04d", i-1), KeyID: "B", Sealed: []byte("v")}, nil
		})
		if !errors.Is(err, context.Canceled) || n != 0 {
			t.Fatalf("Import cancelled after 1000 items = %d, %v; want 0 and context.Canceled", n, err)
		}
		if i >= 5000 {
			t.Errorf("the import read all %d items after its context ended", i)
		}
		if u, _ := s.KeyUsage(t.Context()); !maps.Equal(u, map[string]int64{"A": 1}) {
			t.Errorf("KeyUsage after a cancelled import = %v, want only A: 1", u)
		}
		if e := get(t, s, "e0005"); e.Version != 1 || e.KeyID != "A" {
			t.Errorf("a cancelled import changed e0005: %+v", e)
		}
	})
	t.Run("NOT NULL refuses a nil ciphertext", func(t *testing.T) {
		s := openStore(t)
		if _, err := s.Put(t.Context(), provider.Entry{Name: "a", KeyID: "A"}, provider.Cond{}); err == nil {
			t.Fatal("Put of a nil ciphertext succeeded")
		}
		wantAbsent(t, s, "a")
	})
	failures := []struct {
		desc string
		ctx  func(context.Context) context.Context
		es   []provider.Entry
	}{
		{"a bad entry in the middle", func(c context.Context) context.Context { return c }, []provider.Entry{
			{Name: "x", KeyID: "B", Sealed: []byte("x")},
			{Name: "keep", KeyID: "B", Sealed: []byte("replaced")},
			{Name: "bad", KeyID: "B", Sealed: nil},
			{Name: "y", KeyID: "B", Sealed: []byte("y")},
		}},
		{"a name twice", func(c context.Context) context.Context { return c }, []provider.Entry{
			{Name: "x", KeyID: "B", Sealed: []byte("x")},
			{Name: "keep", KeyID: "B", Sealed: []byte("replaced")},
			{Name: "y", KeyID: "B", Sealed: []byte("y")},
			{Name: "x", KeyID: "B", Sealed: []byte("x again")},
		}},
		{"a name that was there twice", func(c context.Context) context.Context { return c }, []provider.Entry{
			{Name: "x", KeyID: "B", Sealed: []byte("x")},
			{Name: "keep", KeyID: "B", Sealed: []byte("replaced")},
			{Name: "y", KeyID: "B", Sealed: []byte("y")},
			{Name: "keep", KeyID: "B", Sealed: []byte("replaced again")},
		}},
		{"a canceled context", func(c context.Context) context.Context {
			c, cancel := context.WithCancel(c)
			cancel()
			return c
		}, []provider.Entry{
			{Name: "x", KeyID: "B", Sealed: []byte("x")},
			{Name: "keep", KeyID: "B", Sealed: []byte("replaced")},
		}},
	}
	for _, f := range failures {
		t.Run(f.desc, func(t *testing.T) {
			s := openStore(t)
			put(t, s, "keep", "A", "kept")
			before := get(t, s, "keep")
			_, err := s.Import(f.ctx(t.Context()), provider.Each(f.es))
			if err == nil {
				t.Fatal("Import succeeded")
			}
			var dup *provider.DuplicateError
			switch {
			case strings.Contains(f.desc, "twice"):
				if name := f.es[3].Name; !errors.As(err, &dup) || dup.Name != name || dup.Index != 3 {
					t.Errorf("Import of a name twice: %v (%+v), want a DuplicateError for %s at 3", err, dup, name)
				}
			case len(f.es) > 2 && !strings.Contains(err.Error(), `"bad"`):
				t.Errorf("Import error %q does not name the entry that failed", err)
			}
			for _, name := range []string{"x", "y", "bad"} {
				wantAbsent(t, s, name)
			}
			if after := get(t, s, "keep"); !sameEntry(after, before) {
				t.Errorf("a failed Import changed an existing entry: %+v", after)
			}
			if n, _ := s.Count(t.Context()); n != 1 {
				t.Errorf("Count after a failed Import = %d, want 1", n)
			}
		})
	}
}

func sameKeys(a, b []provider.KeyInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].KeyRef != b[i].KeyRef || a[i].State != b[i].State || a[i].Fingerprint != b[i].Fingerprint || !a[i].Created.Equal(b[i].Created) {
			return false
		}
	}
	return true
}

func TestSQLite_UpdateMeta(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	t1 := time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC)
	k1 := provider.KeyInfo{
		KeyRef:      provider.KeyRef{Domain: "S3", ID: "k1", Location: provider.LocationLocal},
		State:       provider.KeyCurrent,
		Fingerprint: "00112233445566778899aabbccddeeff",
		Created:     t1,
	}
	k2 := provider.KeyInfo{
		KeyRef:  provider.KeyRef{Domain: "S3", ID: "k2", Location: "kms1", RemoteID: "5f1d-uuid"},
		State:   provider.KeyPending,
		Created: t1.Add(time.Nanosecond),
	}
	if ks, err := s.Keys(ctx); err != nil || len(ks) != 0 {
		t.Fatalf("Keys of a new store = %v, %v", ks, err)
	}
	// Put in reverse order: Keys sorts by creation.
	err := s.UpdateMeta(ctx, provider.MetaUpdate{PutKeys: []provider.KeyInfo{k2, k1}, Set: map[string][]byte{"rekey": []byte(`{"phase":"PREPARE"}`), "other": {0, 1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys := func(step string, want ...provider.KeyInfo) {
		t.Helper()
		got, err := s.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !sameKeys(got, want) {
			t.Errorf("%s: Keys =\n%+v\nwant\n%+v", step, got, want)
		}
		for _, k := range got {
			if k.Created.Location() != time.UTC {
				t.Errorf("%s: Created of %s in %v, want UTC", step, k.ID, k.Created.Location())
			}
		}
	}
	checkState := func(step, name string, want []byte) {
		t.Helper()
		got, err := s.State(ctx, name)
		if err != nil || string(got) != string(want) || (got == nil) != (want == nil) {
			t.Errorf("%s: State(%s) = %q, %v; want %q", step, name, got, err, want)
		}
	}
	checkKeys("put", k1, k2)
	checkState("put", "rekey", []byte(`{"phase":"PREPARE"}`))
	checkState("put", "other", []byte{0, 1, 2})
	checkState("put", "never", nil)

	// Replace both, move state on, in one step.
	k1.State, k2.State, k2.Fingerprint = provider.KeyRetiring, provider.KeyCurrent, "ffeeddccbbaa99887766554433221100"
	err = s.UpdateMeta(ctx, provider.MetaUpdate{PutKeys: []provider.KeyInfo{k1, k2}, Set: map[string][]byte{"rekey": []byte(`{"phase":"REWRAP"}`)}, Unset: []string{"other"}})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys("replace", k1, k2)
	checkState("replace", "rekey", []byte(`{"phase":"REWRAP"}`))
	checkState("replace", "other", nil)

	// A failing update changes nothing: the NULL value fails after the
	// key writes have run.
	k3 := provider.KeyInfo{KeyRef: provider.KeyRef{Domain: "S3", ID: "k3", Location: provider.LocationLocal}, State: provider.KeyPending, Created: t1.Add(time.Hour)}
	err = s.UpdateMeta(ctx, provider.MetaUpdate{
		PutKeys:    []provider.KeyInfo{k3},
		DeleteKeys: []string{"k1"},
		Set:        map[string][]byte{"x": []byte("y"), "bad": nil},
		Unset:      []string{"rekey"},
	})
	if err == nil {
		t.Fatal("UpdateMeta with a NULL state value succeeded")
	}
	checkKeys("failed update", k1, k2)
	checkState("failed update", "rekey", []byte(`{"phase":"REWRAP"}`))
	checkState("failed update", "x", nil)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.UpdateMeta(canceled, provider.MetaUpdate{DeleteKeys: []string{"k1"}}); err == nil {
		t.Error("UpdateMeta with a canceled context succeeded")
	}
	checkKeys("canceled update", k1, k2)

	err = s.UpdateMeta(ctx, provider.MetaUpdate{DeleteKeys: []string{"k1", "never"}, Unset: []string{"rekey", "never"}})
	if err != nil {
		t.Fatal(err)
	}
	checkKeys("delete", k2)
	checkState("delete", "rekey", nil)

	// A zero Created means now.
	before := time.Now()
	if err := s.UpdateMeta(ctx, provider.MetaUpdate{PutKeys: []provider.KeyInfo{{KeyRef: provider.KeyRef{Domain: "S3", ID: "k4", Location: provider.LocationLocal}, State: provider.KeyPending}}}); err != nil {
		t.Fatal(err)
	}
	ks, _ := s.Keys(ctx)
	if c := ks[len(ks)-1].Created; ks[len(ks)-1].ID != "k4" || c.Before(before) || c.After(time.Now()) {
		t.Errorf("key with zero Created stored %v", c)
	}
}

func TestSQLite_StateEmptyValueIsSet(t *testing.T) {
	s := openStore(t)
	if err := s.UpdateMeta(t.Context(), provider.MetaUpdate{Set: map[string][]byte{"empty": {}}}); err != nil {
		t.Fatal(err)
	}
	v, err := s.State(t.Context(), "empty")
	if err != nil || v == nil || len(v) != 0 {
		t.Errorf("State of a value set to empty = %#v, %v; want a non-nil empty slice (nil means unset)", v, err)
	}
}

func TestSQLite_FileModes(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprint("existing file ", existing), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "S3.db")
			if existing {
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := openStoreAt(t, p)
			put(t, s, "a", "A", "v")
			if s.Path() != p {
				t.Errorf("Path() = %q, want %q", s.Path(), p)
			}
			for _, f := range []string{p, p + "-wal", p + "-shm"} {
				wantMode(t, f, 0o600)
			}
		})
	}
}

func TestSQLite_ReopenKeepsEverything(t *testing.T) {
	p := filepath.Join(t.TempDir(), "S3.db")
	ctx := t.Context()
	s, err := provider.OpenSQLite(p, provider.SQLiteOptions{CacheKiB: 1024, Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "a", "A", "a1")
	put(t, s, "a", "A", "a2")
	put(t, s, "b", "A", "b1")
	put(t, s, "c", "A", "c1")
	k := provider.KeyInfo{KeyRef: provider.KeyRef{Domain: "S3", ID: "A", Location: provider.LocationLocal}, State: provider.KeyCurrent, Fingerprint: "fp", Created: time.Unix(0, 42).UTC()}
	if err := s.UpdateMeta(ctx, provider.MetaUpdate{PutKeys: []provider.KeyInfo{k}, Set: map[string][]byte{"rekey": []byte("st")}}); err != nil {
		t.Fatal(err)
	}
	// committed with synchronous=NORMAL
	if n, _, err := s.RewrapRange(ctx, "A", "B", 0, 1, marked); err != nil || n != 1 {
		t.Fatalf("RewrapRange = %d, %v", n, err)
	}
	if err := s.Delete(ctx, "c", 0); err != nil {
		t.Fatal(err)
	}
	before := map[string]provider.Entry{"a": get(t, s, "a"), "b": get(t, s, "b")}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStoreAt(t, p)
	for name, b := range before {
		if e := get(t, s, name); !sameEntry(e, b) {
			t.Errorf("%s after reopen = %+v, want %+v", name, e, b)
		}
	}
	wantAbsent(t, s, "c")
	if ks, err := s.Keys(ctx); err != nil || !sameKeys(ks, []provider.KeyInfo{k}) {
		t.Errorf("Keys after reopen = %+v, %v", ks, err)
	}
	if v, _ := s.State(ctx, "rekey"); string(v) != "st" {
		t.Errorf("State after reopen = %q", v)
	}
	if v := put(t, s, "a", "A", "a3"); v != 3 {
		t.Errorf("Put after reopen returned version %d, want 3", v)
	}
}

func userVersion(t *testing.T, path string) int {
	t.Helper()
	var v int
	if err := rawDB(t, path).QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSQLite_Schema(t *testing.T) {
	p := filepath.Join(t.TempDir(), "S3.db")
	s, err := provider.OpenSQLite(p, provider.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "a", "A", "v")
	s.Close()
	cur := userVersion(t, p)
	if cur < 1 {
		t.Fatalf("user_version of a new store = %d, want the schema version", cur)
	}
	// Opening again keeps it.
	s = openStoreAt(t, p)
	get(t, s, "a")
	s.Close()
	if v := userVersion(t, p); v != cur {
		t.Fatalf("reopening changed user_version from %d to %d", cur, v)
	}

	newer := cur + 1
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = provider.OpenSQLite(p, provider.SQLiteOptions{})
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite of a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), fmt.Sprint(newer)) {
		t.Errorf("error %q does not say the schema is newer", err)
	}
	if v := userVersion(t, p); v != newer {
		t.Errorf("the refused open changed user_version to %d", v)
	}
}

func TestSQLite_OpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"missing directory":   filepath.Join(dir, "no", "such", "S3.db"),
		"not a database":      garbage,
		"path is a directory": dir,
	}
	for desc, p := range cases {
		t.Run(desc, func(t *testing.T) {
			s, err := provider.OpenSQLite(p, provider.SQLiteOptions{})
			if err == nil {
				s.Close()
				t.Fatalf("OpenSQLite(%s) succeeded", p)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestSQLite_Sync(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	put(t, s, "a", "A", "v")
	if err := s.UpdateMeta(ctx, provider.MetaUpdate{Set: map[string][]byte{"rekey": []byte("st")}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Sync(ctx); err != nil {
			t.Fatalf("Sync #%d: %v", i+1, err)
		}
	}
	if e := get(t, s, "a"); e.Version != 1 || string(e.Sealed) != "v" {
		t.Errorf("Sync changed an entry: %+v", e)
	}
	if v, _ := s.State(ctx, "rekey"); string(v) != "st" {
		t.Errorf("Sync changed a state value: %q", v)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Sync(canceled); err == nil {
		t.Error("Sync with a canceled context succeeded")
	}
}

// A reader whose snapshot predates the last commits keeps a checkpoint from
// finishing; Sync must make the writes durable anyway, without breaking the
// reader's snapshot. How long it takes is logged, not asserted: a Sync that
// waits for readers holds the only writer connection, and every service
// write with it, for SQLite's busy timeout (10 s).
func TestSQLite_SyncWithOpenReader(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	for i := range 10 {
		put(t, s, fmt.Sprint("e", i), "A", "v")
	}
	reader := rawDB(t, s.Path())
	rows, err := reader.QueryContext(ctx, `SELECT name FROM entries ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatal("no rows")
	}
	seen := 1
	// Commits the reader cannot see, so a checkpoint cannot pass it:
	// a service write and a rewrap batch, committed with synchronous=NORMAL.
	put(t, s, "late", "A", "v")
	if _, _, err := s.RewrapRange(ctx, "A", "B", 0, 5, marked); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Sync(ctx)
	t.Logf("Sync with an open reader took %v", time.Since(start))
	if err != nil {
		t.Fatalf("Sync with an open reader: %v", err)
	}
	for rows.Next() {
		seen++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("the reader's query failed after Sync: %v", err)
	}
	rows.Close()
	if seen != 10 {
		t.Errorf("the reader saw %d rows, want its snapshot's 10", seen)
	}
	if n, _ := s.CountByKey(ctx, "B"); n != 5 {
		t.Errorf("after Sync, %d rows under B, want 5", n)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync after the reader finished: %v", err)
	}
}

func TestSQLite_Concurrency(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	const workers, rounds = 8, 25
	put(t, s, "cas", "A", "0")
	var wg sync.WaitGroup
	shared := make([][]int64, workers)
	creates := make([]error, workers)
	errs := make(chan error, workers*rounds*4)
	for w := range workers {
		wg.Go(func() {
			own := fmt.Sprint("own", w)
			_, creates[w] = s.Put(ctx, provider.Entry{Name: "once", KeyID: "A", Sealed: []byte(own)}, provider.Cond{CreateOnly: true})
			for r := range rounds {
				if v, err := s.Put(ctx, provider.Entry{Name: own, KeyID: "A", Sealed: []byte(fmt.Sprint(r))}, provider.Cond{}); err != nil || v != int64(r+1) {
					errs <- fmt.Errorf("%s round %d: version %d, %v", own, r, v, err)
				}
				v, err := s.Put(ctx, provider.Entry{Name: "shared", KeyID: "A", Sealed: []byte(own)}, provider.Cond{})
				if err != nil {
					errs <- err
				}
				shared[w] = append(shared[w], v)
				// Compare-and-swap until it lands.
				for {
					e, err := s.Get(ctx, "cas")
					if err != nil {
						errs <- err
						return
					}
					_, err = s.Put(ctx, provider.Entry{Name: "cas", KeyID: "A", Sealed: []byte("x")}, provider.Cond{IfVersion: e.Version})
					if err == nil {
						break
					}
					if !errors.Is(err, provider.ErrVersionMismatch) {
						errs <- err
						return
					}
				}
				if _, err := s.List(ctx, "", 5); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	won := 0
	for w, err := range creates {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, provider.ErrExists):
			t.Errorf("create-only Put of worker %d: %v", w, err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent create-only Puts succeeded, want exactly 1", won)
	}
	var all []int64
	for _, vs := range shared {
		all = append(all, vs...)
	}
	slices.Sort(all)
	for i, v := range all {
		if v != int64(i+1) {
			t.Fatalf("versions returned for the shared entry are not 1..%d: %v", workers*rounds, all)
		}
	}
	if e := get(t, s, "shared"); e.Version != workers*rounds {
		t.Errorf("shared entry at version %d, want %d", e.Version, workers*rounds)
	}
	if e := get(t, s, "cas"); e.Version != 1+workers*rounds {
		t.Errorf("compare-and-swap entry at version %d, want %d: an update was lost", e.Version, 1+workers*rounds)
	}
	for w := range workers {
		if e := get(t, s, fmt.Sprint("own", w)); e.Version != rounds || string(e.Sealed) != fmt.Sprint(rounds-1) {
			t.Errorf("own%d = version %d %q", w, e.Version, e.Sealed)
		}
	}
	if n, _ := s.Count(ctx); n != workers+3 {
		t.Errorf("Count = %d, want %d", n, workers+3)
	}
}

// schemaV1 is the schema of the first release, byte for byte: files written
// by it must keep opening, whatever migrations later versions add.
const schemaV1 = `
CREATE TABLE entries (
	id      INTEGER PRIMARY KEY,
	name    TEXT    NOT NULL UNIQUE,
	mk      TEXT    NOT NULL,
	version INTEGER NOT NULL,
	ct      BLOB    NOT NULL,
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL
);
CREATE INDEX entries_mk ON entries(mk);
CREATE TABLE keys (
	id          TEXT PRIMARY KEY,
	domain      TEXT NOT NULL,
	state       TEXT NOT NULL,
	location    TEXT NOT NULL,
	remote_id   TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	created     INTEGER NOT NULL
);
CREATE TABLE state (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
INSERT INTO entries VALUES (1, 'a', 'A', 3, x'0102', 10, 30), (7, 'b', 'B', 1, x'03', 20, 20);
INSERT INTO keys VALUES ('A', 'S3', 'RETIRING', 'Local', '', 'fpA', 1), ('B', 'S3', 'CURRENT', 'Local', '', 'fpB', 2);
INSERT INTO state VALUES ('rekey', x'7b7d');
PRAGMA user_version = 1;
`

// TestSQLite_MigratesSchema1: a store written under schema 1 opens with
// every entry, version, time and MK as it was, the kept counts equal to the
// rows, and ids never reused: none of a row there is, nor, where schema 1
// already had AUTOINCREMENT, of a row deleted.
func TestSQLite_MigratesSchema1(t *testing.T) {
	t.Run("first release", func(t *testing.T) { testMigratesSchema1(t, schemaV1, 7) })
	autoinc := strings.Replace(schemaV1, "id      INTEGER PRIMARY KEY,", "id      INTEGER PRIMARY KEY AUTOINCREMENT,", 1)
	t.Run("with AUTOINCREMENT", func(t *testing.T) { testMigratesSchema1(t, autoinc, 9) })
}

func testMigratesSchema1(t *testing.T, schema string, maxID int64) {
	p := filepath.Join(t.TempDir(), "S3.db")
	db := rawDB(t, p)
	if _, err := db.Exec(`PRAGMA journal_mode = WAL`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema); err != nil {
		t.Fatal(err)
	}
	// Row 9 existed and was deleted.
	if _, err := db.Exec(`INSERT INTO entries VALUES (9, 'gone', 'A', 1, x'09', 5, 5); DELETE FROM entries WHERE id = 9`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := openStoreAt(t, p)
	ctx := t.Context()
	if v := userVersion(t, p); v != 2 {
		t.Errorf("user_version after the migration = %d, want 2", v)
	}
	a, b := get(t, s, "a"), get(t, s, "b")
	if a.KeyID != "A" || a.Version != 3 || string(a.Sealed) != "\x01\x02" || a.Ref != 1 ||
		a.Created.UnixNano() != 10 || a.Updated.UnixNano() != 30 {
		t.Errorf("entry a after the migration: %+v", a)
	}
	if b.KeyID != "B" || b.Version != 1 || string(b.Sealed) != "\x03" || b.Ref != 7 {
		t.Errorf("entry b after the migration: %+v", b)
	}
	usage, err := s.KeyUsage(ctx)
	if err != nil || !maps.Equal(usage, map[string]int64{"A": 1, "B": 1}) {
		t.Errorf("KeyUsage after the migration = %v, %v", usage, err)
	}
	if n, _ := s.Count(ctx); n != 2 {
		t.Errorf("Count after the migration = %d, want 2", n)
	}
	if keys, err := s.Keys(ctx); err != nil || len(keys) != 2 {
		t.Errorf("Keys after the migration = %+v, %v", keys, err)
	}
	if st, err := s.State(ctx, "rekey"); err != nil || string(st) != "{}" {
		t.Errorf("state after the migration = %q, %v", st, err)
	}
	var leftovers int
	if err := rawDB(t, p).QueryRow(`SELECT count(*) FROM sqlite_master WHERE name IN ('entries_v1', 'entries_mk')`).Scan(&leftovers); err != nil || leftovers != 0 {
		t.Errorf("schema 1's table or index left behind: %d, %v", leftovers, err)
	}
	put(t, s, "c", "B", "v")
	if c := get(t, s, "c"); c.Ref <= maxID {
		t.Errorf("a new entry got id %d, reusing an id of the first release's rows", c.Ref)
	}
	s.Close()
	s = openStoreAt(t, p) // and again: nothing is migrated twice
	if n, _ := s.Count(ctx); n != 3 {
		t.Errorf("Count after reopening = %d, want 3", n)
	}
}

// A rekey's WAL is copied back by the checkpointer, beside the writer,
// and so is that of service writes.
func TestSQLite_CheckpointsBesideTheWriter(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	const n = 20000
	next := 0
	if _, err := s.Import(ctx, func() (provider.Entry, error) {
		if next == n {
			return provider.Entry{}, io.EOF
		}
		next++
		return provider.Entry{Name: fmt.Sprintf("e%06d", next), KeyID: "A", Sealed: bytes.Repeat([]byte{1}, 285)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := rewrapAll(t, s, "A", "B", 1000, marked); got != n {
		t.Fatalf("rewrote %d rows, want %d", got, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Checkpoints() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint ran for a rewrap of 20000 rows")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if u, _ := s.KeyUsage(ctx); u["B"] != n {
		t.Errorf("KeyUsage = %v", u)
	}

	s = openStore(t)
	for i := range 200 {
		put(t, s, fmt.Sprint("w", i), "A", "v")
	}
	deadline = time.Now().Add(30 * time.Second)
	for s.Checkpoints() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint ran for 200 service writes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A new store gets 16 KiB pages; one made with another size keeps it.
func TestSQLite_PageSize(t *testing.T) {
	s := openStore(t)
	put(t, s, "a", "A", "v")
	var size int
	if err := rawDB(t, s.Path()).QueryRow(`PRAGMA page_size`).Scan(&size); err != nil || size != 16384 {
		t.Errorf("page size of a new store = %d, %v; want 16384", size, err)
	}
	old := filepath.Join(t.TempDir(), "old.db")
	db := rawDB(t, old)
	if _, err := db.Exec(`PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE x(y)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openStoreAt(t, old)
	put(t, s, "a", "A", "v")
	if err := rawDB(t, old).QueryRow(`PRAGMA page_size`).Scan(&size); err != nil || size != 4096 {
		t.Errorf("page size of a store made with 4096 = %d, %v; want it kept", size, err)
	}
	if e := get(t, s, "a"); string(e.Sealed) != "v" {
		t.Errorf("a = %+v", e)
	}
}
