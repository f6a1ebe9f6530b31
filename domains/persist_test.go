package domains_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/rekey"
)

// blockSchedule makes schedule.json impossible to replace (a non-empty
// directory in its place); the returned func undoes it.
func blockSchedule(t *testing.T, e *env) func() {
	t.Helper()
	p := filepath.Join(e.dir, "schedule.json")
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(p, "blocked"), 0o700); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSchedule_SaveFailure: when the schedule cannot be saved, SetRotation
// and a whole-scope StartRekey fail and change nothing, in memory or on
// disk, and a rekey that finishes meanwhile still completes.
func TestSchedule_SaveFailure(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	before := keyIDs(t, r)
	sched := map[string]rekey.ScopeSchedule{}
	for _, scope := range domains.Scopes {
		sched[scope], _ = r.Schedule(scope)
	}
	unblock := blockSchedule(t, e)

	if _, err := r.SetRotation(logs.ScopeCluster, oneWeek); err == nil {
		t.Error("SetRotation succeeded with schedule.json unwritable")
	}
	if got, _ := r.Schedule(logs.ScopeCluster); !reflect.DeepEqual(got, sched[logs.ScopeCluster]) {
		t.Errorf("cluster schedule after a failed SetRotation = %+v, want unchanged %+v", got, sched[logs.ScopeCluster])
	}
	// A one-domain rekey needs no schedule write to start; its end cannot
	// be recorded in the schedule but the rekey completes.
	if _, err := r.StartRekey(logs.ScopeCluster, []string{"EMAIL"}); err != nil {
		t.Fatalf("StartRekey(EMAIL): %v", err)
	}
	waitActive(t, r, "EMAIL")

	for _, scope := range domains.Scopes {
		started, err := r.StartRekey(scope, nil)
		if err == nil || len(started) != 0 {
			t.Errorf("StartRekey(%s, nil) with schedule.json unwritable = %v, %v; want an error and none started", scope, started, err)
		}
	}
	for _, d := range allDomains() {
		st := status(t, r, d)
		if st.Status != domains.StatusActive || (st.KeyID != before[d]) != (d == "EMAIL") {
			t.Errorf("%s after refused starts: %+v (key before %s)", d, st, before[d])
		}
	}
	for _, scope := range domains.Scopes {
		if got, _ := r.Schedule(scope); !reflect.DeepEqual(got, sched[scope]) {
			t.Errorf("BUG: %s schedule after a whole-scope StartRekey that failed to save = %+v, want unchanged %+v "+
				"(StartRekey sets Pending and LastResult before saving and does not restore them on error: "+
				"the scope then looks in progress for ever and its rotation never fires)", scope, got, sched[scope])
		}
	}

	unblock()
	if _, err := r.SetRotation(logs.ScopeCluster, oneWeek); err != nil {
		t.Fatalf("SetRotation once writable: %v", err)
	}
	// The rotation falls due: the scheduled rekey runs.
	mid := keyIDs(t, r)
	e.clock.Advance(8 * 24 * time.Hour)
	r.Tick(e.clock.Now())
	for _, d := range domains.ClusterDomains {
		if st := waitDone(t, r, d); st.Status != domains.StatusActive || st.KeyID == mid[d] {
			s, _ := r.Schedule(logs.ScopeCluster)
			t.Fatalf("BUG: %s not rekeyed when the rotation fell due: %+v; cluster schedule %+v", d, st, s)
		}
	}
	if s := waitSchedule(t, r, logs.ScopeCluster); s.LastResult != rekey.ResultSucceeded || !s.RekeyTime.Equal(e.clock.Now()) {
		t.Errorf("cluster schedule after the scheduled rekey: %+v", s)
	}
}

// TestSchedule_SaveFailureWhenDue: a scheduled rekey that falls due while
// the schedule cannot be saved runs once it can.
func TestSchedule_SaveFailureWhenDue(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	set, err := r.SetRotation(logs.ScopeSED, oneWeek)
	if err != nil {
		t.Fatal(err)
	}
	old := keyIDs(t, r)[domains.SEDDomain]
	unblock := blockSchedule(t, e)
	e.clock.Set(set.Next().Add(time.Minute))
	r.Tick(e.clock.Now())
	waitDone(t, r, domains.SEDDomain)
	unblock()
	for range 3 {
		e.clock.Advance(time.Minute)
		r.Tick(e.clock.Now())
	}
	st := waitDone(t, r, domains.SEDDomain)
	s, _ := r.Schedule(logs.ScopeSED)
	if st.Status != domains.StatusActive || st.KeyID == old {
		t.Fatalf("BUG: SED not rekeyed once the schedule could be saved again: %+v; sed schedule %+v "+
			"(startScheduled leaves Pending set in memory when its save fails, so Due is false for ever)", st, s)
	}
	if s := waitSchedule(t, r, logs.ScopeSED); s.LastResult != rekey.ResultSucceeded {
		t.Errorf("sed schedule %+v", s)
	}
}

// TestSchedule_PendingWithoutRekeyResumes: kmd stopped (or crashed) after
// a whole-scope start recorded the schedule and before some domains had
// recorded their rekey. At the next start those domains are rekeyed and
// the scope's rekey completes, instead of waiting for ever.
func TestSchedule_PendingWithoutRekeyResumes(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	before := keyIDs(t, r)
	r.Close()
	writeClusterSchedule(t, e, map[string]any{"pending": []string{"CELOG", "JWT"}})
	r2 := e.open()
	if got, _ := r2.Schedule(logs.ScopeCluster); !slices.Equal(got.Pending, []string{"CELOG", "JWT"}) {
		t.Fatalf("schedule as loaded: %+v", got)
	}
	for range 3 {
		e.clock.Advance(retryInterval + time.Minute)
		r2.Tick(e.clock.Now())
	}
	for _, d := range []string{"CELOG", "JWT"} {
		if st := waitDone(t, r2, d); st.Status != domains.StatusActive || st.KeyID == before[d] {
			got, _ := r2.Schedule(logs.ScopeCluster)
			t.Fatalf("BUG: %s, pending in the cluster schedule, was never rekeyed: %+v; schedule %+v stays in progress "+
				"for ever and the rotation never fires again", d, st, got)
		}
	}
	if got := waitSchedule(t, r2, logs.ScopeCluster); got.LastResult != rekey.ResultSucceeded {
		t.Errorf("cluster schedule %+v, want succeeded", got)
	}
}

// TestSchedule_PendingWhoseRekeyEndedIsNotRerun: kmd was killed after a
// domain's rekey of a whole-scope rekey ended (its new MK current, the old
// destroyed) and before the schedule recorded that end. At the next start
// that domain is counted, not rekeyed again; a domain still under the MK
// it had when the scope's rekey began is rekeyed.
func TestSchedule_PendingWhoseRekeyEndedIsNotRerun(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	before := keyIDs(t, r)
	if _, err := r.StartRekey(logs.ScopeCluster, []string{"CELOG"}); err != nil {
		t.Fatal(err)
	}
	waitActive(t, r, "CELOG")
	rekeyed := keyIDs(t, r)["CELOG"]
	r.Close()
	// The schedule as the crash left it: the scope's rekey began when CELOG
	// and JWT had their old MKs; CELOG's rekey ended, unrecorded here.
	writeClusterSchedule(t, e, map[string]any{"pending": []string{"CELOG", "JWT"},
		"pending_from": map[string]string{"CELOG": before["CELOG"], "JWT": before["JWT"]}})
	r2 := e.open()
	r2.Tick(e.clock.Now())
	if st := waitDone(t, r2, "JWT"); st.Status != domains.StatusActive || st.KeyID == before["JWT"] {
		t.Fatalf("JWT, pending under its old MK, was not rekeyed: %+v", st)
	}
	if got := waitSchedule(t, r2, logs.ScopeCluster); got.LastResult != rekey.ResultSucceeded || len(got.PendingFrom) != 0 {
		t.Errorf("cluster schedule %+v, want succeeded", got)
	}
	if st := status(t, r2, "CELOG"); st.KeyID != rekeyed || st.Status != domains.StatusActive {
		t.Errorf("BUG: CELOG, whose rekey had ended (MK %s), was rekeyed again after the restart: %+v", rekeyed, st)
	}
}

// writeClusterSchedule writes schedule.json as a crash during a weekly
// whole-scope rekey of the cluster would leave it: in progress, with
// fields (the pending domains) on top.
func writeClusterSchedule(t *testing.T, e *env, fields map[string]any) {
	t.Helper()
	cluster := map[string]any{"rotation": "1W", "rekey_time": t0.Add(-time.Hour).Format(time.RFC3339),
		"last_result": rekey.ResultInProgress}
	maps.Copy(cluster, fields)
	b, err := json.Marshal(map[string]any{logs.ScopeCluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "schedule.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
