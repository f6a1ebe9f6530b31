package domains_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// TestRekey_FailingDomainIsIndependent: one domain's failing rekey leaves
// the others to complete, destroys nothing, raises one event, is retried
// after the retry interval and not before, and then completes the scope.
func TestRekey_FailingDomainIsIndependent(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	v := vault(t, r, "S3")
	want := fill(t, v, "s3", 60)
	const bad = "s3-00035"
	corruptRow(t, r.StorePath("S3"), bad)
	delete(want, bad)
	before := keyIDs(t, r)

	if _, err := r.StartRekey(logs.ScopeCluster, nil); err != nil {
		t.Fatal(err)
	}
	failedAt := e.clock.Now()
	st := waitDone(t, r, "S3")
	others := slices.DeleteFunc(slices.Clone(domains.ClusterDomains), func(d string) bool { return d == "S3" })
	waitActive(t, r, others...)

	if st.Status != domains.StatusFailed {
		t.Fatalf("S3 = %+v, want FAILED", st)
	}
	if !strings.Contains(st.Error, "S3") || !strings.Contains(st.Error, bad) {
		t.Errorf("S3 error %q does not name the domain and the entry %s", st.Error, bad)
	}
	if st.NextRetry == nil || !st.NextRetry.Equal(failedAt.Add(retryInterval)) {
		t.Errorf("S3 next retry %v, want %v", st.NextRetry, failedAt.Add(retryInterval))
	}
	after := keyIDs(t, r)
	for _, d := range allDomains() {
		if (after[d] != before[d]) != (d != domains.SEDDomain) {
			t.Errorf("%s: key %s -> %s", d, before[d], after[d])
		}
	}
	// Nothing of S3 destroyed: both MKs there, every other entry readable,
	// and writable too.
	if files := e.keyFiles("S3"); !slices.Equal(files, sorted(before["S3"], after["S3"])) {
		t.Errorf("S3 key files %v, want the old and the new key", files)
	}
	checkEntries(t, v, want)
	if _, err := v.Put(t.Context(), "after-failure", []byte{1, 2, 3}, provider.Cond{}); err != nil {
		t.Errorf("Put into FAILED S3: %v", err)
	}
	want["after-failure"] = []byte{1, 2, 3}
	if _, _, err := v.Get(t.Context(), bad); !errors.Is(err, provider.ErrOpen) {
		t.Errorf("Get of the damaged entry = %v, want ErrOpen", err)
	}

	failed := e.events.Events(logs.EventRekeyFailed, "")
	if len(failed) != 1 {
		t.Fatalf("failure events %+v, want exactly one", failed)
	}
	if ev := failed[0]; ev.Domain != "S3" || ev.Scope != logs.ScopeCluster || ev.Attempt != 1 ||
		!strings.Contains(ev.Error, bad) || ev.KeyID != before["S3"] || ev.Node != 0 || !ev.Time.Equal(failedAt) {
		t.Errorf("failure event %+v", ev)
	}
	if n := len(e.events.Events(logs.EventSedsRekeyFailed, "")); n != 0 {
		t.Errorf("%d SED failure events for a cluster domain", n)
	}
	wantDone := map[string]int{}
	for _, d := range others {
		wantDone[d] = 1
	}
	if got := e.events.CountByDomain(logs.EventRekeyCompleted); !reflect.DeepEqual(got, wantDone) {
		t.Errorf("completed events %v, want %v", got, wantDone)
	}
	s, _ := r.Schedule(logs.ScopeCluster)
	if s.LastResult != rekey.ResultFailed || !slices.Equal(s.Pending, []string{"S3"}) {
		t.Errorf("cluster schedule %+v, want failed with S3 pending", s)
	}

	// Not yet due: Tick neither retries nor moves the retry time.
	for _, d := range []time.Duration{0, retryInterval / 2, retryInterval - time.Second} {
		e.clock.Set(failedAt.Add(d))
		if next := r.Tick(e.clock.Now()); !next.Equal(failedAt.Add(retryInterval)) {
			t.Errorf("Tick before the retry time returned %v, want the retry time %v", next, failedAt.Add(retryInterval))
		}
		st := status(t, r, "S3")
		if st.Status != domains.StatusFailed || st.NextRetry == nil || !st.NextRetry.Equal(failedAt.Add(retryInterval)) {
			t.Fatalf("S3 after Tick %v before its retry time: %+v", d, st)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(e.events.Events(logs.EventRekeyFailed, "S3")); n != 1 {
		t.Fatalf("%d failure events: Tick retried before the retry time", n)
	}

	// Due but still damaged: the retry fails again, attempt 2.
	retry := e.clock.Set(failedAt.Add(retryInterval))
	r.Tick(retry)
	if st := waitDone(t, r, "S3"); st.Status != domains.StatusFailed || !st.NextRetry.Equal(retry.Add(retryInterval)) {
		t.Fatalf("S3 after a failed retry: %+v", st)
	}
	failed = waitEvents(t, e, logs.EventRekeyFailed, "S3", 2)
	if ev := failed[1]; ev.Attempt != 2 {
		t.Errorf("second failure event %+v, want attempt 2", ev)
	}
	if files := e.keyFiles("S3"); !slices.Equal(files, sorted(before["S3"], after["S3"])) {
		t.Errorf("S3 key files after a failed retry %v: the retry must resume, not mint another key", files)
	}

	// Repaired: the next retry completes the rekey and the scope's.
	if err := v.Delete(t.Context(), bad, 0); err != nil {
		t.Fatal(err)
	}
	fixed := e.clock.Set(retry.Add(retryInterval + time.Second))
	r.Tick(fixed)
	waitActive(t, r, "S3")
	checkEntries(t, v, want)
	if st := status(t, r, "S3"); st.KeyID != after["S3"] || st.NextRetry != nil || st.Error != "" {
		t.Errorf("S3 after the retry: %+v, want key %s and no error", st, after["S3"])
	}
	if files := e.keyFiles("S3"); !slices.Equal(files, []string{after["S3"]}) {
		t.Errorf("S3 key files %v, want only [%s]", files, after["S3"])
	}
	s = waitSchedule(t, r, logs.ScopeCluster)
	if s.LastResult != rekey.ResultSucceeded || len(s.Pending) != 0 || !s.RekeyTime.Equal(fixed) {
		t.Errorf("cluster schedule %+v, want succeeded at %v", s, fixed)
	}
	if n := e.events.CountByDomain(logs.EventRekeyCompleted)["S3"]; n != 1 {
		t.Errorf("%d completed events for S3, want 1", n)
	}
}

// TestRekey_SEDFailure raises the sed scope's event, with the node.
func TestRekey_SEDFailure(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	v := vault(t, r, domains.SEDDomain)
	want := fill(t, v, "drive", 25)
	corruptRow(t, r.StorePath(domains.SEDDomain), "drive-00007")
	delete(want, "drive-00007")

	if _, err := r.StartRekey(logs.ScopeSED, nil); err != nil {
		t.Fatal(err)
	}
	st := waitDone(t, r, domains.SEDDomain)
	if st.Status != domains.StatusFailed || st.Node != testNode || !strings.Contains(st.Error, "drive-00007") {
		t.Fatalf("SED = %+v, want FAILED on node %d naming drive-00007", st, testNode)
	}
	evs := e.events.Events("", "")
	if len(evs) != 1 {
		t.Fatalf("events %+v, want exactly one", evs)
	}
	if ev := evs[0]; ev.Name != logs.EventSedsRekeyFailed || ev.Scope != logs.ScopeSED || ev.Domain != domains.SEDDomain ||
		ev.Node != testNode || ev.Attempt != 1 || !strings.Contains(ev.Error, "drive-00007") {
		t.Errorf("event %+v, want KeyManagerSedsRekeyFailed for node %d", ev, testNode)
	}
	checkEntries(t, v, want)
	if s, _ := r.Schedule(logs.ScopeSED); s.LastResult != rekey.ResultFailed || !slices.Equal(s.Pending, []string{domains.SEDDomain}) {
		t.Errorf("sed schedule %+v, want failed with SED pending", s)
	}
	if s, _ := r.Schedule(logs.ScopeCluster); s.LastResult != rekey.ResultNone {
		t.Errorf("cluster schedule %+v touched by a sed rekey", s)
	}
	// A start while FAILED retries at once.
	if err := v.Delete(t.Context(), "drive-00007", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.StartRekey(logs.ScopeSED, nil); err != nil {
		t.Fatalf("StartRekey of a FAILED domain: %v", err)
	}
	waitActive(t, r, domains.SEDDomain)
	checkEntries(t, v, want)
	if s := waitSchedule(t, r, logs.ScopeSED); s.LastResult != rekey.ResultSucceeded {
		t.Errorf("sed schedule %+v, want succeeded", s)
	}
	if ev := e.events.Events(logs.EventRekeyCompleted, domains.SEDDomain); len(ev) != 1 || ev[0].Node != testNode || ev[0].Scope != logs.ScopeSED {
		t.Errorf("completed events %+v", ev)
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// waitEvents waits until n events named name of domain were raised.
func waitEvents(t *testing.T, e *env, name, domain string, n int) []logs.Event {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		evs := e.events.Events(name, domain)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events for %s after %v, want %d", len(evs), name, domain, waitLimit, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
