package metrics_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/metrics"
	"github.com/kmd-project/kmd/provider"
)

const waitLimit = 20 * time.Second

// fixture is a real registry in a temporary data dir, its rekeys counted,
// served by the API's handler with GET /metrics.
type fixture struct {
	t   *testing.T
	dir string
	reg *domains.Registry
	h   http.Handler

	mu    sync.Mutex
	trace func(domain, step string)

	close func() error // closes the registry once
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return openFixture(t, filepath.Join(t.TempDir(), "data"))
}

// openFixture opens a registry on dir, closed at the latest when the test
// ends.
func openFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: dir}
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	rk := metrics.NewRekeys()
	reg, err := domains.Open(context.Background(), domains.Config{
		DataDir: f.dir, TickMax: time.Hour, BatchSize: 10, Log: lg,
		SQLite: provider.SQLiteOptions{CacheKiB: 1024, Readers: 2},
		Trace: func(domain, step string) {
			f.mu.Lock()
			fn := f.trace
			f.mu.Unlock()
			if fn != nil {
				fn(domain, step)
			}
		},
		OnRekeyEnd: rk.Observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.close = sync.OnceValue(reg.Close)
	t.Cleanup(func() {
		if err := f.close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
	})
	f.reg = reg
	// Scrapes come from a monitor: uid 1234 on the socket.
	policy, err := access.NewPolicy([]access.Rule{{Role: "monitor", UIDs: []int{monitorUID}}}, nil, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	h := server.New(reg, nil, lg, "test", server.WithPolicy(policy)).WithMetrics(metrics.Handler(reg, rk, lg)).Handler()
	f.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(access.WithPeer(r.Context(), &access.Peer{UID: monitorUID, GID: monitorUID, PID: 1})))
	})
	return f
}

// monitorUID is the uid the fixture's scrapes come from.
const monitorUID = 1234

// startGated starts a rekey of domain with start and blocks it at its
// first step named step; it returns once the step is reached, with the
// function that lets the rekey go on (called at the latest when the test
// ends).
func (f *fixture) startGated(domain, step string, start func()) (release func()) {
	f.t.Helper()
	reached, released := make(chan struct{}), make(chan struct{})
	var once, relOnce sync.Once
	f.mu.Lock()
	f.trace = func(d, s string) {
		if d != domain || s != step {
			return
		}
		first := false
		once.Do(func() { first = true; close(reached) })
		if first {
			<-released
		}
	}
	f.mu.Unlock()
	release = func() { relOnce.Do(func() { close(released) }) }
	f.t.Cleanup(release) // runs before the registry's Close, which waits for the rekey
	start()
	select {
	case <-reached:
	case <-time.After(waitLimit):
		f.t.Fatalf("%s never reached %s", domain, step)
	}
	return release
}

func (f *fixture) vault(domain string) *provider.Vault {
	f.t.Helper()
	v, err := f.reg.Vault(domain)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// fill writes n entries prefix-000… into domain.
func (f *fixture) fill(domain, prefix string, n int) []string {
	f.t.Helper()
	var items []provider.Item
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s-%03d", prefix, i)
		items = append(items, provider.Item{Name: name, Value: []byte(marker + name)})
		names = append(names, name)
	}
	if err := f.vault(domain).PutAll(context.Background(), items); err != nil {
		f.t.Fatal(err)
	}
	return names
}

// corrupt damages an entry's ciphertext as a disk fault would, so that
// the rekey of its domain fails on it.
func (f *fixture) corrupt(domain, name string) {
	f.t.Helper()
	db, err := sql.Open("sqlite", "file:"+f.reg.StorePath(domain)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		f.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE entries SET ct = X'00' WHERE name = ?`, name); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) status(domain string) domains.Status {
	f.t.Helper()
	st, err := f.reg.DomainStatus(context.Background(), domain)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// rekey starts a rekey of domain and waits for it to end with want.
func (f *fixture) rekey(domain, want string) domains.Status {
	f.t.Helper()
	scope := "cluster"
	if domain == domains.SEDDomain {
		scope = "sed"
	}
	if _, err := f.reg.StartRekey(scope, []string{domain}); err != nil {
		f.t.Fatal(err)
	}
	return f.waitStatus(domain, want)
}

func (f *fixture) waitStatus(domain, want string) domains.Status {
	f.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st := f.status(domain)
		if st.Status == want || (st.Status != domains.StatusInProgress && st.Status != domains.StatusMigrating) {
			if st.Status != want {
				f.t.Fatalf("%s ended %s (%s), want %s", domain, st.Status, st.Error, want)
			}
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s still %+v after %v", domain, st, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// marker starts every entry value: it must never show in the metrics.
const marker = "SECRET-VALUE-5e1d"

// scrape is one GET /metrics, parsed.
type scrape struct {
	t    *testing.T
	body []byte
	mfs  map[string]*dto.MetricFamily
}

func (f *fixture) scrape() *scrape {
	f.t.Helper()
	return scrapeHandler(f.t, f.h)
}

func scrapeHandler(t *testing.T, h http.Handler) *scrape {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	s := &scrape{t: t, body: rec.Body.Bytes()}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(s.body))
	if err != nil {
		t.Fatalf("parse GET /metrics: %v\n%s", err, s.body)
	}
	s.mfs = mfs
	if bytes.Contains(s.body, []byte(marker)) {
		t.Errorf("the metrics hold an entry value")
	}
	return s
}

var noPromtool sync.Once

// lint checks the scrape with promlint and, when it is installed, with
// `promtool check metrics`.
func (s *scrape) lint() {
	s.t.Helper()
	problems, err := promlint.New(bytes.NewReader(s.body)).Lint()
	if err != nil {
		s.t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		s.t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		noPromtool.Do(func() { s.t.Log("promtool not installed: `promtool check metrics` skipped (promlint ran)") })
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(s.body)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// labels makes a label set of name, value pairs.
func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// metric returns the series of name with exactly the labels kv, or nil.
func (s *scrape) metric(name string, kv ...string) *dto.Metric {
	want := labels(kv...)
	for _, m := range s.mfs[name].GetMetric() {
		if maps.Equal(labelMap(m), want) {
			return m
		}
	}
	return nil
}

// value returns the value of a gauge or counter series; it fails the test
// if there is none.
func (s *scrape) value(name string, kv ...string) float64 {
	s.t.Helper()
	m := s.metric(name, kv...)
	if m == nil {
		s.t.Fatalf("no series %s%v in the metrics", name, labels(kv...))
	}
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	s.t.Fatalf("%s%v is neither a gauge nor a counter", name, labels(kv...))
	return 0
}

// series returns every series of name whose labels include kv.
func (s *scrape) series(name string, kv ...string) []*dto.Metric {
	want := labels(kv...)
	var out []*dto.Metric
next:
	for _, m := range s.mfs[name].GetMetric() {
		got := labelMap(m)
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// entriesByKey returns domain's kmd_entries by key ID.
func (s *scrape) entriesByKey(domain string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.series("kmd_entries", "domain", domain) {
		out[labelMap(m)["key_id"]] = m.GetGauge().GetValue()
	}
	return out
}
