package domains_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// t0 is the fake clock's starting time: well after the wall clock, so that
// the times Tick returns never make the background scheduler spin.
var t0 = time.Date(2031, 3, 10, 9, 19, 16, 500_000_000, time.UTC)

const (
	testNode      = 3
	retryInterval = 10 * time.Minute
	waitLimit     = 20 * time.Second
)

// fakeClock is a rekey.Clock the test sets and advances.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

var _ rekey.Clock = (*fakeClock)(nil)

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	return t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// recorder is a rekey.Emitter that keeps every event.
type recorder struct {
	mu  sync.Mutex
	evs []logs.Event
}

var _ rekey.Emitter = (*recorder)(nil)

func (r *recorder) Emit(ev logs.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

// Events returns the events named name (all when name is empty) of domain
// (all when domain is empty).
func (r *recorder) Events(name, domain string) []logs.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logs.Event
	for _, ev := range r.evs {
		if (name == "" || ev.Name == name) && (domain == "" || ev.Domain == domain) {
			out = append(out, ev)
		}
	}
	return out
}

// CountByDomain counts the events named name per domain.
func (r *recorder) CountByDomain(name string) map[string]int {
	m := map[string]int{}
	for _, ev := range r.Events(name, "") {
		m[ev.Domain]++
	}
	return m
}

// tracer is the Config.Trace of every registry of a test; the hook can be
// changed while registries run.
type tracer struct {
	mu sync.Mutex
	fn func(domain, step string)
}

func (t *tracer) Trace(domain, step string) {
	t.mu.Lock()
	fn := t.fn
	t.mu.Unlock()
	if fn != nil {
		fn(domain, step)
	}
}

func (t *tracer) Set(fn func(domain, step string)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fn = fn
}

// gate blocks the first call of one domain's step until released.
type gate struct {
	reached chan struct{} // closed when the step is first reached
	release chan struct{} // closed by the test to let it go on
	once    sync.Once
	relOnce sync.Once
}

func newGate() *gate {
	return &gate{reached: make(chan struct{}), release: make(chan struct{})}
}

// hook returns a trace hook that blocks domain at step (first time only).
func (g *gate) hook(domain, step string) func(string, string) {
	return func(d, s string) {
		if d != domain || s != step {
			return
		}
		first := false
		g.once.Do(func() { first = true; close(g.reached) })
		if first {
			<-g.release
		}
	}
}

func (g *gate) wait(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(waitLimit):
		t.Fatal("trace step never reached")
	}
}

func (g *gate) open() { g.relOnce.Do(func() { close(g.release) }) }

// env is one data dir with its clock, events and trace hook, shared by the
// registries a test opens one after the other on it.
type env struct {
	t      *testing.T
	dir    string
	clock  *fakeClock
	events *recorder
	trace  *tracer
	cfg    domains.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{
		t:      t,
		dir:    filepath.Join(t.TempDir(), "data"),
		clock:  &fakeClock{now: t0},
		events: &recorder{},
		trace:  &tracer{},
	}
	e.cfg = domains.Config{
		DataDir:       e.dir,
		NodeID:        testNode,
		RetryInterval: retryInterval,
		BatchSize:     10,
		Events:        e.events,
		Log:           zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		Clock:         e.clock,
		TickMax:       time.Hour,
		SQLite:        provider.SQLiteOptions{CacheKiB: 1024, Readers: 2},
		Trace:         e.trace.Trace,
	}
	return e
}

// reg is an open registry that is closed once, at the latest when the test
// ends.
type reg struct {
	*domains.Registry
	once sync.Once
	err  error
}

func (r *reg) Close() error {
	r.once.Do(func() { r.err = r.Registry.Close() })
	return r.err
}

func (e *env) open() *reg {
	e.t.Helper()
	r, err := domains.Open(context.Background(), e.cfg)
	if err != nil {
		e.t.Fatalf("Open(%s): %v", e.dir, err)
	}
	rr := &reg{Registry: r}
	e.t.Cleanup(func() {
		e.trace.Set(nil)
		if err := rr.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return rr
}

func (e *env) localKeys() *provider.LocalKeys {
	e.t.Helper()
	l, err := provider.NewLocalKeys(filepath.Join(e.dir, "keys"))
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// keyFiles lists the IDs of domain's key files.
func (e *env) keyFiles(domain string) []string {
	e.t.Helper()
	ids, err := e.localKeys().List(domain)
	if err != nil {
		e.t.Fatalf("list key files of %s: %v", domain, err)
	}
	slices.Sort(ids)
	return ids
}

func (e *env) keyPath(domain, id string) string {
	return filepath.Join(e.dir, "keys", domain, id+".key")
}

func allDomains() []string { return append(slices.Clone(domains.ClusterDomains), domains.SEDDomain) }

func status(t *testing.T, r *reg, domain string) domains.Status {
	t.Helper()
	st, err := r.DomainStatus(context.Background(), domain)
	if err != nil {
		t.Fatalf("DomainStatus(%s): %v", domain, err)
	}
	return st
}

// waitDone waits until domain's status is one of want (ACTIVE or FAILED by
// default) and returns it.
func waitDone(t *testing.T, r *reg, domain string, want ...string) domains.Status {
	t.Helper()
	if len(want) == 0 {
		want = []string{domains.StatusActive, domains.StatusFailed}
	}
	deadline := time.Now().Add(waitLimit)
	for {
		st := status(t, r, domain)
		if slices.Contains(want, st.Status) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status still %+v after %v, want one of %v", domain, st, waitLimit, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitActive waits until every one of names is ACTIVE.
func waitActive(t *testing.T, r *reg, names ...string) {
	t.Helper()
	for _, n := range names {
		if st := waitDone(t, r, n); st.Status != domains.StatusActive {
			t.Fatalf("%s ended %s: %s", n, st.Status, st.Error)
		}
	}
}

// waitSchedule waits until scope's schedule has nothing pending.
func waitSchedule(t *testing.T, r *reg, scope string) rekey.ScopeSchedule {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		s, err := r.Schedule(scope)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Pending) == 0 && s.LastResult != rekey.ResultInProgress {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s schedule still %+v after %v", scope, s, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// keyIDs returns the current key ID of every domain.
func keyIDs(t *testing.T, r *reg) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, scope := range domains.Scopes {
		sts, err := r.Status(context.Background(), scope)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			m[st.Domain] = st.KeyID
		}
	}
	return m
}

func vault(t *testing.T, r *reg, domain string) *provider.Vault {
	t.Helper()
	v, err := r.Vault(domain)
	if err != nil {
		t.Fatalf("Vault(%s): %v", domain, err)
	}
	return v
}

// fill writes n entries name-00000… with distinct binary values in one
// step and returns them.
func fill(t *testing.T, v *provider.Vault, prefix string, n int) map[string][]byte {
	t.Helper()
	want := make(map[string][]byte, n)
	items := make([]provider.Item, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%05d", prefix, i)
		// Binary, every byte value, distinct per entry.
		val := []byte{byte(i), byte(i >> 8), 0, 0xff, '\n', 0x80}
		for j := range i % 64 {
			val = append(val, byte(j*7+i))
		}
		want[name] = val
		items = append(items, provider.Item{Name: name, Value: val})
	}
	if err := v.PutAll(context.Background(), items); err != nil {
		t.Fatalf("PutAll %s: %v", v.Domain(), err)
	}
	return want
}

// checkEntries reads back every entry of want.
func checkEntries(t *testing.T, v *provider.Vault, want map[string][]byte) {
	t.Helper()
	for name, val := range want {
		got, _, err := v.Get(context.Background(), name)
		if err != nil {
			t.Fatalf("Get %s/%s: %v", v.Domain(), name, err)
		}
		if string(got) != string(val) {
			t.Fatalf("Get %s/%s = %x, want %x", v.Domain(), name, got, val)
		}
	}
}

// corruptRow damages the ciphertext of one entry through a connection of
// its own, as a disk fault would.
func corruptRow(t *testing.T, path, name string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE entries SET ct = X'00' WHERE name = ?`, name)
	if err != nil {
		t.Fatalf("corrupt %s in %s: %v", name, path, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("corrupt %s in %s: %d rows", name, path, n)
	}
}

// rekeyState reads a store's persisted rekey state ("" when none).
func rekeyState(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	err = db.QueryRow(`SELECT value FROM state WHERE name = 'rekey'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("read rekey state of %s: %v", path, err)
	}
	return string(v)
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// openDB opens a store's database beside kmd, closed at the end of the test.
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
