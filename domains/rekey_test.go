package domains_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

func TestStartRekey_OneDomain(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	v := vault(t, r, "S3")
	want := fill(t, v, "s3", 500)
	before := keyIDs(t, r)
	schedBefore, _ := r.Schedule(logs.ScopeCluster)

	g := newGate()
	e.trace.Set(g.hook("S3", "rewrap:batch"))
	started, err := r.StartRekey(logs.ScopeCluster, []string{"S3"})
	if err != nil {
		t.Fatalf("StartRekey(S3): %v", err)
	}
	if !slices.Equal(started, []string{"S3"}) {
		t.Fatalf("started %v, want [S3]", started)
	}
	g.wait(t)

	// While it runs: status, a second start, and starts that include S3.
	st := status(t, r, "S3")
	if st.Status != domains.StatusInProgress || st.Rekey == nil || st.Rekey.Total != 500 ||
		st.Rekey.Done < 1 || st.Rekey.Done > 500 || !st.Rekey.Started.Equal(t0) {
		t.Errorf("S3 during its rekey: %+v (rekey %+v)", st, st.Rekey)
	}
	if st.KeyID == before["S3"] {
		t.Errorf("S3 key ID during REWRAP is still the old one: the new MK should be current for writes")
	}
	for _, names := range [][]string{{"S3"}, nil, {"CELOG", "S3"}, {"S3", "CELOG"}} {
		_, err := r.StartRekey(logs.ScopeCluster, names)
		if !errors.Is(err, rekey.ErrInProgress) || !strings.Contains(err.Error(), "rekey already in progress for S3") {
			t.Errorf("StartRekey(cluster, %v) during S3's rekey = %v, want %q", names, err, "rekey already in progress for S3")
		}
	}
	// A write during the rekey lands under the new key and survives.
	if _, err := v.Put(t.Context(), "during", []byte("written during the rekey"), provider.Cond{}); err != nil {
		t.Fatalf("Put during rekey: %v", err)
	}
	want["during"] = []byte("written during the rekey")
	g.open()

	if st := waitDone(t, r, "S3"); st.Status != domains.StatusActive || st.Rekey != nil || st.NextRetry != nil || st.Error != "" {
		t.Fatalf("S3 after its rekey: %+v", st)
	}
	after := keyIDs(t, r)
	for _, d := range allDomains() {
		changed := after[d] != before[d]
		if changed != (d == "S3") {
			t.Errorf("%s: key %s -> %s; only S3's key may change", d, before[d], after[d])
		}
	}
	checkEntries(t, v, want)
	if st := status(t, r, "S3"); st.Entries != 501 || st.KeyID != after["S3"] {
		t.Errorf("S3 status %+v, want 501 entries under %s", st, after["S3"])
	}
	if n, err := v.Store().CountByKey(t.Context(), before["S3"]); err != nil || n != 0 {
		t.Errorf("entries under the old key: %d, %v", n, err)
	}
	if files := e.keyFiles("S3"); !slices.Equal(files, []string{after["S3"]}) {
		t.Errorf("S3 key files %v, want exactly the new key [%s]", files, after["S3"])
	}
	evs := e.events.Events("", "")
	if len(evs) != 1 {
		t.Fatalf("events %+v, want exactly one", evs)
	}
	ev := evs[0]
	if ev.Name != logs.EventRekeyCompleted || ev.Scope != logs.ScopeCluster || ev.Domain != "S3" ||
		ev.KeyID != after["S3"] || ev.Node != 0 || ev.Error != "" || !ev.Time.Equal(t0) {
		t.Errorf("event %+v, want KeyManagerRekeyCompleted for S3 with key %s", ev, after["S3"])
	}
	if strings.Contains(ev.Message, "\x00") {
		t.Errorf("event message carries binary data: %q", ev.Message)
	}
	// A partial rekey does not touch the scope's schedule.
	if s, _ := r.Schedule(logs.ScopeCluster); !reflect.DeepEqual(s, schedBefore) {
		t.Errorf("cluster schedule after a one-domain rekey = %+v, want untouched %+v", s, schedBefore)
	}
}

func TestStartRekey_Refusals(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	before := keyIDs(t, r)
	for _, tc := range []struct {
		scope string
		names []string
		want  error
	}{
		{logs.ScopeCluster, []string{domains.SEDDomain}, domains.ErrUnknownDomain},
		{logs.ScopeSED, []string{"S3"}, domains.ErrUnknownDomain},
		{logs.ScopeCluster, []string{"S4"}, domains.ErrUnknownDomain},
		{logs.ScopeCluster, []string{"CELOG", "s3"}, domains.ErrUnknownDomain},
		{"Cluster", nil, domains.ErrUnknownScope},
		{"", []string{"S3"}, domains.ErrUnknownScope},
	} {
		started, err := r.StartRekey(tc.scope, tc.names)
		if !errors.Is(err, tc.want) || len(started) != 0 {
			t.Errorf("StartRekey(%q, %q) = %v, %v; want %v and nothing started", tc.scope, tc.names, started, err, tc.want)
		}
	}
	for _, d := range allDomains() {
		if st := status(t, r, d); st.Status != domains.StatusActive || st.KeyID != before[d] {
			t.Errorf("%s after refused starts: %+v", d, st)
		}
	}
	for _, scope := range domains.Scopes {
		if s, _ := r.Schedule(scope); s.LastResult != rekey.ResultNone || len(s.Pending) != 0 {
			t.Errorf("%s schedule after refused starts: %+v", scope, s)
		}
	}
	if evs := e.events.Events("", ""); len(evs) != 0 {
		t.Errorf("refused starts raised %+v", evs)
	}
}

// TestStartRekey_BusyDomainStartsNone: a start that names a running domain
// starts none of the others, whole scope or not, and leaves the schedule.
func TestStartRekey_BusyDomainStartsNone(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	before := keyIDs(t, r)
	g := newGate()
	e.trace.Set(g.hook("S3", "phase:PREPARE"))
	if _, err := r.StartRekey(logs.ScopeCluster, []string{"S3"}); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
	for _, names := range [][]string{nil, {"CELOG", "JWT", "S3"}, slices.Clone(domains.ClusterDomains)} {
		started, err := r.StartRekey(logs.ScopeCluster, names)
		if !errors.Is(err, rekey.ErrInProgress) || len(started) != 0 {
			t.Errorf("StartRekey(cluster, %v) = %v, %v; want ErrInProgress and none started", names, started, err)
		}
	}
	for _, d := range allDomains() {
		if d == "S3" {
			continue
		}
		if st := status(t, r, d); st.Status != domains.StatusActive {
			t.Errorf("%s started by a refused start: %+v", d, st)
		}
	}
	if s, _ := r.Schedule(logs.ScopeCluster); s.LastResult != rekey.ResultNone || len(s.Pending) != 0 {
		t.Errorf("cluster schedule after a refused whole-scope start: %+v", s)
	}
	g.open()
	waitActive(t, r, "S3")
	after := keyIDs(t, r)
	for _, d := range allDomains() {
		if (after[d] != before[d]) != (d == "S3") {
			t.Errorf("%s: key %s -> %s; only S3's may change", d, before[d], after[d])
		}
	}
	if got := e.events.CountByDomain(logs.EventRekeyCompleted); !reflect.DeepEqual(got, map[string]int{"S3": 1}) {
		t.Errorf("completed events per domain %v, want only S3 once", got)
	}
}

// A start asked for while a run that has done its work records its end
// (a migration's, here: a rekey asked for during one must wait for it)
// is not refused as "in progress": it waits for the end, then starts.
func TestStartRekey_WhileARunRecordsItsEnd(t *testing.T) {
	e := newEnv(t)
	recording := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	e.cfg.OnRekeyEnd = func(end rekey.End) {
		if end.Domain == "S3" {
			once.Do(func() {
				close(recording)
				<-release
			})
		}
	}
	var released sync.Once
	let := func() { released.Do(func() { close(release) }) }
	r := e.open()
	t.Cleanup(let) // before the registry closes, should the test fail first
	before := keyIDs(t, r)
	if _, err := r.StartRekey(logs.ScopeCluster, []string{"S3"}); err != nil {
		t.Fatal(err)
	}
	<-recording // S3's rekey is done and is recording its end
	done := make(chan error, 1)
	go func() {
		_, err := r.StartRekey(logs.ScopeCluster, []string{"S3"})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("StartRekey answered %v before the first run had recorded its end", err)
	case <-time.After(50 * time.Millisecond):
	}
	let()
	if err := <-done; err != nil {
		t.Fatalf("StartRekey right after a run's end = %v, want it started", err)
	}
	st := waitDone(t, r, "S3")
	if st.Status != domains.StatusActive || st.KeyID == before["S3"] {
		t.Fatalf("S3 after two rekeys: %+v", st)
	}
	if n := len(e.events.Events(logs.EventRekeyCompleted, "S3")); n != 2 {
		t.Errorf("%d completed rekeys of S3, want 2", n)
	}
}
