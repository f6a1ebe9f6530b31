package rekey

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

const testDomain = "S3"

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 22, 9, 19, 16, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []logs.Event
}

func (r *recorder) Emit(e logs.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Has makes a recorder a Journal: it holds what it was given.
func (r *recorder) Has(name, domain, keyID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Name == name && e.Domain == domain && e.KeyID == keyID {
			return true
		}
	}
	return false
}

func (r *recorder) named(name string) []logs.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logs.Event
	for _, e := range r.events {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// faultySource is the real LocalKeys with failures that tests switch on.
type faultySource struct {
	*provider.LocalKeys
	mu        sync.Mutex
	fail      map[string]error // "create", "load", "destroy"
	onDestroy func(provider.KeyRef)
}

func (f *faultySource) setFail(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, op)
	} else {
		f.fail[op] = err
	}
}

func (f *faultySource) err(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[op]
}

func (f *faultySource) Create(ctx context.Context, domain, id string) (provider.KeyRef, []byte, error) {
	if err := f.err("create"); err != nil {
		return provider.KeyRef{}, nil, err
	}
	return f.LocalKeys.Create(ctx, domain, id)
}

func (f *faultySource) Load(ctx context.Context, ref provider.KeyRef) ([]byte, error) {
	if err := f.err("load"); err != nil {
		return nil, err
	}
	return f.LocalKeys.Load(ctx, ref)
}

func (f *faultySource) Destroy(ctx context.Context, ref provider.KeyRef) error {
	if err := f.err("destroy"); err != nil {
		return err
	}
	if f.onDestroy != nil {
		f.onDestroy(ref)
	}
	return f.LocalKeys.Destroy(ctx, ref)
}

// faultyStore is the real SQLite store with failures that tests switch on.
type faultyStore struct {
	provider.Store
	mu         sync.Mutex
	rewrapErr  error
	metaErr    error
	starve     bool                         // RewrapRange finds nothing to rewrite
	beforeRewr func(after int64, to string) // before each batch
}

func (f *faultyStore) RewrapRange(ctx context.Context, from, to string, after int64, limit int, reseal provider.Reseal) (int, int64, error) {
	f.mu.Lock()
	err, hook, starve := f.rewrapErr, f.beforeRewr, f.starve
	f.mu.Unlock()
	if err != nil {
		return 0, after, err
	}
	if hook != nil {
		hook(after, to)
	}
	if starve { // as if every row were sealed under some other key
		from = "no-such-key"
	}
	return f.Store.RewrapRange(ctx, from, to, after, limit, reseal)
}

func (f *faultyStore) UpdateMeta(ctx context.Context, u provider.MetaUpdate) error {
	f.mu.Lock()
	err := f.metaErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Store.UpdateMeta(ctx, u)
}

func (f *faultyStore) set(fn func(f *faultyStore)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// env is one domain on disk with its engine.
type env struct {
	t      testing.TB
	dir    string
	sqlite *provider.SQLiteStore
	store  *faultyStore
	src    *faultySource
	vault  *provider.Vault
	eng    *Engine
	events *recorder
	clock  *fakeClock
	trace  func(step string)
	done   chan error
	skip   string // an entry checkAll leaves out (a row a test damaged)
}

type envOpts struct {
	batch  int
	events *recorder // what the events already hold (default: nothing)
	trace  func(step string)
	clock  *fakeClock
	onEnd  func(End) // Config.OnEnd
	scope  string    // logs.ScopeCluster by default
}

func openEnv(t testing.TB, dir string, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	st, err := provider.OpenSQLite(filepath.Join(dir, testDomain+".db"), provider.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lk, err := provider.NewLocalKeys(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if o.clock == nil {
		o.clock = newFakeClock()
	}
	if o.events == nil {
		o.events = &recorder{}
	}
	e := &env{t: t, dir: dir, sqlite: st, store: &faultyStore{Store: st}, src: &faultySource{LocalKeys: lk, fail: map[string]error{}},
		events: o.events, clock: o.clock, trace: o.trace, done: make(chan error, 100)}
	e.vault = provider.NewVault(testDomain, e.store)
	if err := e.vault.LoadKeys(ctx, e.sources); err != nil {
		t.Fatal(err)
	}
	e.eng, err = New(ctx, Config{
		Domain: testDomain, Scope: o.scope, Node: 1, Vault: e.vault, Sources: e.sources, Events: e.events,
		Log: zaptest.NewLogger(t), Clock: e.clock, RetryInterval: 15 * time.Minute, BatchSize: o.batch,
		OnFinish: func(_ string, err error) { e.done <- err },
		OnEnd:    o.onEnd,
		Trace: func(step string) {
			if e.trace != nil {
				e.trace(step)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.eng.Init(ctx, provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func (e *env) sources(loc string) (provider.KeySource, error) {
	if loc != provider.LocationLocal {
		return nil, fmt.Errorf("no key source %q", loc)
	}
	return e.src, nil
}

func (e *env) close() {
	e.eng.Close()
	e.sqlite.Close()
}

func value(name string, gen int) []byte {
	v := []byte(fmt.Sprintf("%s#%d|", name, gen))
	for len(v) < 64 {
		v = append(v, byte(len(v)*7))
	}
	return v
}

func (e *env) fill(n int) map[string][]byte {
	e.t.Helper()
	items := make([]provider.Item, n)
	want := map[string][]byte{}
	for i := range items {
		name := fmt.Sprintf("svc/entry-%05d", i)
		items[i] = provider.Item{Name: name, Value: value(name, 0)}
		want[name] = items[i].Value
	}
	if err := e.vault.PutAll(context.Background(), items); err != nil {
		e.t.Fatal(err)
	}
	return want
}

// wait waits for the next end of a run.
func (e *env) wait() error {
	e.t.Helper()
	select {
	case err := <-e.done:
		for e.eng.Status().Running { // OnFinish runs just before the run ends
			time.Sleep(time.Millisecond)
		}
		return err
	case <-time.After(60 * time.Second):
		e.t.Fatalf("rekey did not end; status %+v", e.eng.Status())
		return nil
	}
}

// checkAll asserts every entry opens to its wanted value under an MK that
// the key source still holds on disk (not only in memory).
func (e *env) checkAll(want map[string][]byte) {
	e.t.Helper()
	ctx := context.Background()
	names, err := e.sqlite.List(ctx, "", len(want)+10)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.skip != "" {
		names = slices.DeleteFunc(names, func(n string) bool { return n == e.skip })
	}
	if len(names) != len(want) {
		e.t.Fatalf("store has %d entries, want %d", len(names), len(want))
	}
	keys := map[string]*provider.Key{}
	for name, v := range want {
		ent, err := e.sqlite.Get(ctx, name)
		if err != nil {
			e.t.Fatalf("entry %s: %v", name, err)
		}
		k := keys[ent.KeyID]
		if k == nil {
			m, err := e.src.LocalKeys.Load(ctx, provider.KeyRef{Domain: testDomain, ID: ent.KeyID, Location: provider.LocationLocal})
			if err != nil {
				e.t.Fatalf("entry %s is sealed under key %s which is not on disk: %v", name, ent.KeyID, err)
			}
			if k, err = provider.NewKey(ent.KeyID, m); err != nil {
				e.t.Fatal(err)
			}
			keys[ent.KeyID] = k
		}
		got, err := k.Open(nil, testDomain, name, ent.Sealed)
		if err != nil || string(got) != string(v) {
			e.t.Fatalf("entry %s: got %q, %v; want %q", name, got, err, v)
		}
	}
}

// keyFiles returns the IDs of the domain's key files on disk.
func (e *env) keyFiles() []string {
	ids, err := e.src.LocalKeys.List(testDomain)
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// checkOneKey asserts the domain ends with exactly one MK, current, on disk
// and in metadata, and every entry under it.
func (e *env) checkOneKey() string {
	e.t.Helper()
	ctx := context.Background()
	infos, err := e.sqlite.Keys(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].State != provider.KeyCurrent {
		e.t.Fatalf("keys in metadata: %+v, want one CURRENT", infos)
	}
	files := e.keyFiles()
	if len(files) != 1 || files[0] != infos[0].ID {
		e.t.Fatalf("key files %v, want [%s]", files, infos[0].ID)
	}
	usage, err := e.sqlite.KeyUsage(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for id := range usage {
		if id != infos[0].ID {
			e.t.Fatalf("entries under key %s, want all under %s", id, infos[0].ID)
		}
	}
	return infos[0].ID
}

var errInjected = errors.New("injected fault")
