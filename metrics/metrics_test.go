package metrics_test

import (
	"context"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/metrics"
	"github.com/kmd-project/kmd/rekey"
)

func allDomains() []string { return append(slices.Clone(domains.ClusterDomains), domains.SEDDomain) }

func scopeOf(domain string) string {
	if domain == domains.SEDDomain {
		return "sed"
	}
	return "cluster"
}

// checkStates checks that domain's kmd_rekey_state is 1 for want alone.
func checkStates(t *testing.T, s *scrape, domain, want string) {
	t.Helper()
	for _, st := range metrics.States {
		v := s.value("kmd_rekey_state", "scope", scopeOf(domain), "domain", domain, "state", st)
		if (v == 1) != (st == want) || (v != 0 && v != 1) {
			t.Errorf("kmd_rekey_state{domain=%s,state=%s} = %v, want %s to be the one at 1", domain, st, v, want)
		}
	}
}

// TestMetrics_Rekey scrapes a new registry, then during and after a rekey
// of FTP, and checks the values against the registry's status.
func TestMetrics_Rekey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 25
	names := f.fill("FTP", "ftp-user", n)
	f.fill(domains.SEDDomain, "drive", 3)
	before := f.status("FTP")

	s := f.scrape()
	s.lint()
	for _, d := range allDomains() {
		scope := scopeOf(d)
		st := f.status(d)
		if got := s.value("kmd_master_key_created_timestamp_seconds", "scope", scope, "domain", d); got != float64(st.KeyCreated.Unix()) {
			t.Errorf("%s key created %v, want %d (status)", d, got, st.KeyCreated.Unix())
		}
		if age := s.value("kmd_master_key_age_seconds", "scope", scope, "domain", d); age <= 0 || age > time.Since(st.KeyCreated).Seconds() {
			t.Errorf("%s key age %v s: want above 0 and at most %v s", d, age, time.Since(st.KeyCreated).Seconds())
		}
		wantEntries := map[string]float64{st.KeyID: float64(st.Entries)}
		if got := s.entriesByKey(d); !maps.Equal(got, wantEntries) {
			t.Errorf("%s kmd_entries by key %v, want %v", d, got, wantEntries)
		}
		checkStates(t, s, d, domains.StatusActive)
		for _, res := range []string{metrics.ResultSucceeded, metrics.ResultFailed} {
			if v := s.value("kmd_rekeys_total", "scope", scope, "domain", d, "result", res); v != 0 {
				t.Errorf("%s kmd_rekeys_total{result=%s} = %v before any rekey", d, res, v)
			}
		}
		if v := s.value("kmd_rekey_consecutive_failures", "scope", scope, "domain", d); v != 0 {
			t.Errorf("%s consecutive failures %v", d, v)
		}
		if m := s.metric("kmd_rekey_duration_seconds", "scope", scope, "domain", d); m.GetHistogram().GetSampleCount() != 0 {
			t.Errorf("%s rekey duration histogram %v before any rekey", d, m)
		}
	}
	if got := s.entriesByKey("FTP")[before.KeyID]; got != n {
		t.Errorf("FTP entries under %s = %v, want %d", before.KeyID, got, n)
	}
	if got := s.entriesByKey(domains.SEDDomain); len(got) != 1 || slices.Collect(maps.Values(got))[0] != 3 {
		t.Errorf("SED kmd_entries %v, want 3 under its one key", got)
	}
	for _, scope := range domains.Scopes {
		if v := s.value("kmd_key_rotation_seconds", "scope", scope); v != 0 {
			t.Errorf("%s rotation %v s, want 0 (Never)", scope, v)
		}
		if m := s.metric("kmd_next_rekey_timestamp_seconds", "scope", scope); m != nil {
			t.Errorf("%s next rekey %v with rotation Never, want none", scope, m)
		}
	}
	for _, fam := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if s.mfs[fam] == nil {
			t.Errorf("no %s: the standard collectors are missing", fam)
		}
	}
	for _, name := range names {
		if strings.Contains(string(s.body), name) {
			t.Fatalf("the metrics name entry %s", name)
		}
	}

	// The rotation and the next scheduled rekey.
	rot, err := rekey.ParseRotation("6W")
	if err != nil {
		t.Fatal(err)
	}
	sched, err := f.reg.SetRotation("cluster", rot)
	if err != nil {
		t.Fatal(err)
	}
	s = f.scrape()
	if v := s.value("kmd_key_rotation_seconds", "scope", "cluster"); v != (6 * 7 * 24 * time.Hour).Seconds() {
		t.Errorf("cluster rotation %v s, want 6 weeks", v)
	}
	if v := s.value("kmd_next_rekey_timestamp_seconds", "scope", "cluster"); v != float64(sched.Next().Unix()) {
		t.Errorf("cluster next rekey %v, want %d", v, sched.Next().Unix())
	}
	if v := s.value("kmd_key_rotation_seconds", "scope", "sed"); v != 0 {
		t.Errorf("sed rotation %v s, want 0", v)
	}

	// During the rekey, after its first batch of 10.
	started := time.Now()
	release := f.startGated("FTP", "rewrap:batch", func() {
		if _, err := f.reg.StartRekey("cluster", []string{"FTP"}); err != nil {
			t.Fatal(err)
		}
	})
	s = f.scrape()
	s.lint()
	checkStates(t, s, "FTP", domains.StatusInProgress)
	if done, planned := s.value("kmd_rekey_in_progress_entries_done", "scope", "cluster", "domain", "FTP"),
		s.value("kmd_rekey_in_progress_entries_planned", "scope", "cluster", "domain", "FTP"); done != 10 || planned != n {
		t.Errorf("FTP progress %v of %v, want 10 of %d", done, planned, n)
	}
	mid := f.status("FTP")
	if got, want := s.entriesByKey("FTP"), map[string]float64{before.KeyID: n - 10, mid.KeyID: 10}; !maps.Equal(got, want) {
		t.Errorf("FTP kmd_entries during the rekey %v, want %v (old and new key)", got, want)
	}
	if m := s.series("kmd_rekey_in_progress_entries_done", "domain", "S3"); len(m) != 0 {
		t.Errorf("S3 has rekey progress %v with no rekey", m)
	}
	release()
	after := f.waitStatus("FTP", domains.StatusActive)
	took := time.Since(started)

	s = f.scrape()
	s.lint()
	if after.KeyID == before.KeyID {
		t.Fatalf("FTP key unchanged: %s", after.KeyID)
	}
	checkStates(t, s, "FTP", domains.StatusActive)
	if got, want := s.entriesByKey("FTP"), map[string]float64{after.KeyID: n}; !maps.Equal(got, want) {
		t.Errorf("FTP kmd_entries after the rekey %v, want %v", got, want)
	}
	if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "FTP", "result", "succeeded"); v != 1 {
		t.Errorf("FTP rekeys succeeded %v, want 1", v)
	}
	if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "FTP", "result", "failed"); v != 0 {
		t.Errorf("FTP rekeys failed %v, want 0", v)
	}
	if v := s.value("kmd_entries_reencrypted_total", "scope", "cluster", "domain", "FTP"); v != n {
		t.Errorf("FTP entries re-encrypted %v, want %d", v, n)
	}
	h := s.metric("kmd_rekey_duration_seconds", "scope", "cluster", "domain", "FTP").GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() < 0 || h.GetSampleSum() > took.Seconds() {
		t.Errorf("FTP duration histogram: %d samples, sum %v s; want 1, between 0 and %v s", h.GetSampleCount(), h.GetSampleSum(), took.Seconds())
	}
	checkBuckets(t, h)
	if v := s.value("kmd_master_key_created_timestamp_seconds", "scope", "cluster", "domain", "FTP"); v != float64(after.KeyCreated.Unix()) {
		t.Errorf("FTP key created %v, want %d", v, after.KeyCreated.Unix())
	}
	for _, d := range allDomains() {
		if d == "FTP" {
			continue
		}
		if v := s.value("kmd_rekeys_total", "scope", scopeOf(d), "domain", d, "result", "succeeded"); v != 0 {
			t.Errorf("%s rekeys succeeded %v: only FTP was rekeyed", d, v)
		}
	}
}

// checkBuckets checks the duration buckets: 0.1 s to 1 h, cumulative.
func checkBuckets(t *testing.T, h *dto.Histogram) {
	t.Helper()
	var bounds []float64
	var last uint64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		if b.GetCumulativeCount() < last || b.GetCumulativeCount() > h.GetSampleCount() {
			t.Errorf("bucket le=%v holds %d after %d of %d", b.GetUpperBound(), b.GetCumulativeCount(), last, h.GetSampleCount())
		}
		last = b.GetCumulativeCount()
	}
	if len(bounds) == 0 || bounds[0] != 0.1 || bounds[len(bounds)-1] != 3600 && !math.IsInf(bounds[len(bounds)-1], 1) {
		t.Errorf("duration buckets %v, want 0.1 s to 1 h", bounds)
	}
	if !slices.Contains(bounds, 3600) {
		t.Errorf("duration buckets %v have no 1 h bound", bounds)
	}
}

// TestMetrics_FailedRekey: each failed run counts as failed and raises
// the consecutive failures; the retry that completes counts as succeeded,
// resets them, and the entries re-encrypted over all runs add up to the
// domain's entries.
func TestMetrics_FailedRekey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const n = 30
	names := f.fill("S3", "s3-key", n)
	bad := names[17]
	f.corrupt("S3", bad)
	before := f.status("S3")

	for attempt := 1; attempt <= 2; attempt++ {
		st := f.rekey("S3", domains.StatusFailed)
		s := f.scrape()
		s.lint()
		checkStates(t, s, "S3", domains.StatusFailed)
		if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "S3", "result", "failed"); v != float64(attempt) {
			t.Errorf("attempt %d: S3 rekeys failed %v", attempt, v)
		}
		if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "S3", "result", "succeeded"); v != 0 {
			t.Errorf("attempt %d: S3 rekeys succeeded %v", attempt, v)
		}
		if v := s.value("kmd_rekey_consecutive_failures", "scope", "cluster", "domain", "S3"); v != float64(attempt) {
			t.Errorf("attempt %d: S3 consecutive failures %v", attempt, v)
		}
		if st.NextRetry == nil {
			t.Fatalf("attempt %d: FAILED S3 has no next retry: %+v", attempt, st)
		}
		if v := s.value("kmd_next_retry_timestamp_seconds", "scope", "cluster", "domain", "S3"); v != float64(st.NextRetry.UnixNano())/1e9 {
			t.Errorf("attempt %d: S3 next retry %v, want %v", attempt, v, st.NextRetry)
		}
		if m := s.metric("kmd_rekey_duration_seconds", "scope", "cluster", "domain", "S3"); m.GetHistogram().GetSampleCount() != 0 {
			t.Errorf("attempt %d: a failed run was counted as a completed rekey's duration", attempt)
		}
		// What the runs re-encrypted is what sits under the new key.
		byKey := s.entriesByKey("S3")
		if got, want := s.value("kmd_entries_reencrypted_total", "scope", "cluster", "domain", "S3"), byKey[st.KeyID]; got != want {
			t.Errorf("attempt %d: S3 re-encrypted %v, but %v entries are under the new key (%v)", attempt, got, want, byKey)
		}
		if byKey[before.KeyID]+byKey[st.KeyID] != n || byKey[before.KeyID] == 0 {
			t.Errorf("attempt %d: S3 entries by key %v, want %d under the old and the new key", attempt, byKey, n)
		}
		if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "FTP", "result", "failed"); v != 0 {
			t.Errorf("FTP counted S3's failure: %v", v)
		}
	}

	// The damaged entry goes; the retry completes.
	if err := f.vault("S3").Delete(context.Background(), bad, 0); err != nil {
		t.Fatal(err)
	}
	st := f.rekey("S3", domains.StatusActive)
	s := f.scrape()
	s.lint()
	checkStates(t, s, "S3", domains.StatusActive)
	if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "S3", "result", "succeeded"); v != 1 {
		t.Errorf("S3 rekeys succeeded %v, want 1", v)
	}
	if v := s.value("kmd_rekeys_total", "scope", "cluster", "domain", "S3", "result", "failed"); v != 2 {
		t.Errorf("S3 rekeys failed %v, want 2", v)
	}
	if v := s.value("kmd_rekey_consecutive_failures", "scope", "cluster", "domain", "S3"); v != 0 {
		t.Errorf("S3 consecutive failures %v after the rekey completed", v)
	}
	if m := s.series("kmd_next_retry_timestamp_seconds", "domain", "S3"); len(m) != 0 {
		t.Errorf("S3 next retry %v after the rekey completed", m)
	}
	if m := s.metric("kmd_rekey_duration_seconds", "scope", "cluster", "domain", "S3"); m.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("S3 duration samples %d, want 1", m.GetHistogram().GetSampleCount())
	}
	if got, want := s.entriesByKey("S3"), map[string]float64{st.KeyID: n - 1}; !maps.Equal(got, want) {
		t.Errorf("S3 entries by key %v, want %v", got, want)
	}
	if v := s.value("kmd_entries_reencrypted_total", "scope", "cluster", "domain", "S3"); v != n-1 {
		t.Errorf("S3 re-encrypted %v over its runs, want %d, each entry once", v, n-1)
	}
}

// TestMetrics_Families holds metrics.Families to a scrape in which every
// family shows: a rotation set, one rekey running and one failed.
func TestMetrics_Families(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.fill("FTP", "ftp", 25)
	f.corrupt("S3", f.fill("S3", "s3", 5)[2])
	if _, err := f.reg.SetRotation("sed", rekey.Rotation{N: 90, Unit: 'D'}); err != nil {
		t.Fatal(err)
	}
	f.rekey("S3", domains.StatusFailed)
	f.startGated("FTP", "rewrap:batch", func() {
		if _, err := f.reg.StartRekey("cluster", []string{"FTP"}); err != nil {
			t.Fatal(err)
		}
	})
	s := f.scrape()
	s.lint()

	want := map[string]metrics.Family{}
	for _, fam := range metrics.Families() {
		want[fam.Name] = fam
	}
	for name, mf := range s.mfs {
		if !strings.HasPrefix(name, "kmd_") {
			continue
		}
		fam, ok := want[name]
		if !ok {
			t.Errorf("%s is exported but not in metrics.Families", name)
			continue
		}
		delete(want, name)
		if got := strings.ToLower(mf.GetType().String()); got != fam.Type {
			t.Errorf("%s is a %s, Families says %s", name, got, fam.Type)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		for _, m := range mf.GetMetric() {
			if got := slices.Sorted(maps.Keys(labelMap(m))); !slices.Equal(got, slices.Sorted(slices.Values(fam.Labels))) {
				t.Errorf("%s series has labels %v, Families says %v", name, got, fam.Labels)
			}
		}
	}
	for name := range want {
		t.Errorf("%s is in metrics.Families but not exported", name)
	}
}

// TestMetrics_UnavailableDomain: a domain that could not be opened is
// FAILED, with no key or entry series, and the scrape still answers.
func TestMetrics_UnavailableDomain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.fill("SNMP", "community", 4)
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.reg.StorePath("SNMP")); err != nil {
		t.Fatal(err)
	}
	f = openFixture(t, f.dir)
	if st := f.status("SNMP"); st.Status != domains.StatusFailed {
		t.Fatalf("SNMP without its store: %+v, want FAILED", st)
	}
	s := f.scrape()
	s.lint()
	checkStates(t, s, "SNMP", domains.StatusFailed)
	for _, name := range []string{"kmd_entries", "kmd_master_key_age_seconds", "kmd_master_key_created_timestamp_seconds"} {
		if m := s.series(name, "domain", "SNMP"); len(m) != 0 {
			t.Errorf("%s of the unavailable SNMP: %v", name, m)
		}
	}
	checkStates(t, s, "FTP", domains.StatusActive)
	if got := s.entriesByKey("FTP"); len(got) != 1 {
		t.Errorf("FTP entries by key %v, want its one key", got)
	}
}

// TestMetrics_OnlyGET: /metrics answers GET (and HEAD); another method
// is no endpoint of the API.
func TestMetrics_OnlyGET(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, httptest.NewRequest(method, "/metrics", nil))
		// Not a route: the catch-all, which is for admins only, refuses
		// the monitor the fixture scrapes as.
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"code"`) {
			t.Errorf("%s /metrics: %d %s, want 403 with the API's error body", method, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("HEAD /metrics: %d", rec.Code)
	}
}
