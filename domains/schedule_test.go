package domains_test

import (
	"encoding/json"
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

var (
	oneWeek  = rekey.Rotation{N: 1, Unit: 'W'}
	oneMonth = rekey.Rotation{N: 1, Unit: 'M'}
)

func TestSchedule_DefaultAndPersisted(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	for _, scope := range domains.Scopes {
		s, err := r.Schedule(scope)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Rotation.IsNever() || !s.RekeyTime.Equal(time.Unix(0, 0)) || s.LastResult != rekey.ResultNone ||
			len(s.Pending) != 0 || !s.Next().IsZero() {
			t.Errorf("%s default schedule %+v, want Never from 1970 with no result", scope, s)
		}
	}
	if next := r.Tick(e.clock.Now()); !next.IsZero() {
		t.Errorf("Tick with nothing scheduled returned %v, want zero", next)
	}

	e.clock.Advance(1234 * time.Millisecond)
	set, err := r.SetRotation(logs.ScopeCluster, oneWeek)
	if err != nil {
		t.Fatal(err)
	}
	at := e.clock.Now().Truncate(time.Second)
	if set.Rotation != oneWeek || !set.RekeyTime.Equal(at) || set.RekeyTime.Location() != time.UTC || !set.Next().Equal(at.AddDate(0, 0, 7)) {
		t.Errorf("SetRotation = %+v, want 1W from %v", set, at)
	}
	if got, _ := r.Schedule(logs.ScopeCluster); !reflect.DeepEqual(got, set) {
		t.Errorf("Schedule = %+v, want %+v", got, set)
	}
	if s, _ := r.Schedule(logs.ScopeSED); !s.Rotation.IsNever() {
		t.Errorf("sed schedule %+v changed by a cluster SetRotation", s)
	}
	if next := r.Tick(e.clock.Now()); !next.Equal(set.Next()) {
		t.Errorf("Tick returned %v, want the next rekey %v", next, set.Next())
	}
	path := filepath.Join(e.dir, "schedule.json")
	if got := mode(t, path); got != 0o600 {
		t.Errorf("%s: mode %04o, want 0600", path, got)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk map[string]rekey.ScopeSchedule
	if err := json.Unmarshal(b, &onDisk); err != nil {
		t.Fatalf("schedule.json: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(onDisk[logs.ScopeCluster], set) {
		t.Errorf("schedule.json cluster = %+v, want %+v", onDisk[logs.ScopeCluster], set)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := e.open()
	if got, _ := r2.Schedule(logs.ScopeCluster); !reflect.DeepEqual(got, set) {
		t.Errorf("schedule after reopen = %+v, want %+v", got, set)
	}
	if n := len(e.events.Events("", "")); n != 0 {
		t.Errorf("%d events, want none", n)
	}
}

// TestSchedule_MissedWhileDownRunsOnce: a rekey due while kmd was down runs
// once at start, is not started again while pending, and Never stops it.
func TestSchedule_MissedWhileDownRunsOnce(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	set, err := r.SetRotation(logs.ScopeCluster, oneWeek)
	if err != nil {
		t.Fatal(err)
	}
	before := keyIDs(t, r)
	r.Close()

	// kmd is down when the rekey falls due.
	e.clock.Set(set.Next().Add(3 * time.Hour))
	g := newGate()
	e.trace.Set(g.hook("CELOG", "phase:PREPARE"))
	r2 := e.open()
	r2.Tick(e.clock.Now())
	g.wait(t)
	s, _ := r2.Schedule(logs.ScopeCluster)
	if s.LastResult != rekey.ResultInProgress || !slices.Contains(s.Pending, "CELOG") {
		t.Fatalf("cluster schedule after a start past the due time = %+v, want in progress", s)
	}
	// While CELOG holds the scope's rekey pending, no tick starts another.
	for range 20 {
		e.clock.Advance(time.Second)
		r2.Tick(e.clock.Now())
	}
	others := slices.Clone(domains.ClusterDomains[1:])
	waitActive(t, r2, others...)
	for range 20 {
		e.clock.Advance(time.Second)
		r2.Tick(e.clock.Now())
	}
	g.open()
	waitActive(t, r2, "CELOG")
	s = waitSchedule(t, r2, logs.ScopeCluster)
	if s.LastResult != rekey.ResultSucceeded || !s.RekeyTime.Equal(e.clock.Now()) {
		t.Errorf("cluster schedule %+v, want succeeded at %v", s, e.clock.Now())
	}
	wantOnce := map[string]int{}
	for _, d := range domains.ClusterDomains {
		wantOnce[d] = 1
	}
	if got := e.events.CountByDomain(logs.EventRekeyCompleted); !reflect.DeepEqual(got, wantOnce) {
		t.Errorf("completed events per domain %v, want one per cluster domain", got)
	}
	after := keyIDs(t, r2)
	for _, d := range allDomains() {
		if (after[d] != before[d]) != (d != domains.SEDDomain) {
			t.Errorf("%s: key %s -> %s", d, before[d], after[d])
		}
	}
	// More ticks, the clock moving a little: nothing more.
	for range 30 {
		e.clock.Advance(time.Minute)
		r2.Tick(e.clock.Now())
	}
	waitActive(t, r2, domains.ClusterDomains...)
	if got := e.events.CountByDomain(logs.EventRekeyCompleted); !reflect.DeepEqual(got, wantOnce) {
		t.Errorf("completed events per domain %v after more ticks, want one each", got)
	}

	// Never stops it.
	if _, err := r2.SetRotation(logs.ScopeCluster, rekey.Never); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(366 * 24 * time.Hour)
	for range 5 {
		if next := r2.Tick(e.clock.Now()); !next.IsZero() {
			t.Errorf("Tick with Never returned %v", next)
		}
	}
	for _, d := range allDomains() {
		if st := status(t, r2, d); st.Status != domains.StatusActive || st.KeyID != after[d] {
			t.Errorf("%s with rotation Never: %+v", d, st)
		}
	}
	if got := e.events.CountByDomain(logs.EventRekeyCompleted); !reflect.DeepEqual(got, wantOnce) {
		t.Errorf("completed events per domain %v with rotation Never", got)
	}
}

// TestSchedule_ClockJumps: a clock that jumps back fires nothing then and
// delays the next rekey by no more than one rotation; one that jumps
// forward fires one rekey per domain, however often it ticks.
func TestSchedule_ClockJumps(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	set, err := r.SetRotation(logs.ScopeSED, oneWeek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetRotation(logs.ScopeCluster, oneWeek); err != nil {
		t.Fatal(err)
	}
	// Not yet due, to the second.
	e.clock.Set(set.Next().Add(-time.Second))
	r.Tick(e.clock.Now())
	if n := len(e.events.Events("", "")); n != 0 {
		t.Fatalf("%d events a second before the due time", n)
	}
	// Due: one scheduled rekey of each scope.
	e.clock.Set(set.Next())
	r.Tick(e.clock.Now())
	waitActive(t, r, allDomains()...)
	for _, scope := range domains.Scopes {
		if s := waitSchedule(t, r, scope); s.LastResult != rekey.ResultSucceeded || !s.RekeyTime.Equal(set.Next()) {
			t.Errorf("%s schedule after the scheduled rekey: %+v", scope, s)
		}
	}
	counts := func() map[string]int { return e.events.CountByDomain(logs.EventRekeyCompleted) }
	want := map[string]int{}
	for _, d := range allDomains() {
		want[d] = 1
	}
	if got := counts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("completed events %v, want one per domain", got)
	}
	done := e.clock.Now()

	// Backward ten years.
	e.clock.Set(done.AddDate(-10, 0, 0))
	for range 50 {
		e.clock.Advance(time.Second)
		r.Tick(e.clock.Now())
	}
	for _, d := range allDomains() {
		if st := status(t, r, d); st.Status != domains.StatusActive {
			t.Errorf("%s after a backward jump: %+v", d, st)
		}
	}
	if got := counts(); !reflect.DeepEqual(got, want) {
		t.Errorf("completed events %v after a backward jump, want no more", got)
	}
	// Nor is the next one skipped: it comes one rotation after the jump,
	// not ten years and a week later.
	e.clock.Advance(oneWeek.After(e.clock.Now()).Sub(e.clock.Now()))
	r.Tick(e.clock.Now())
	waitActive(t, r, allDomains()...)
	for _, scope := range domains.Scopes {
		waitSchedule(t, r, scope)
	}
	for d := range want {
		want[d] = 2
	}
	if got := counts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("completed events %v a rotation after a backward jump, want one more per domain", got)
	}
	done = e.clock.Now()

	// Forward ten years: one more rekey per domain.
	e.clock.Set(done.AddDate(10, 0, 0))
	for range 50 {
		e.clock.Advance(time.Second)
		r.Tick(e.clock.Now())
	}
	waitActive(t, r, allDomains()...)
	for _, scope := range domains.Scopes {
		waitSchedule(t, r, scope)
	}
	for range 50 {
		e.clock.Advance(time.Second)
		r.Tick(e.clock.Now())
	}
	waitActive(t, r, allDomains()...)
	for d := range want {
		want[d] = 3
	}
	if got := counts(); !reflect.DeepEqual(got, want) {
		t.Errorf("completed events %v after a forward jump, want exactly one more per domain", got)
	}
}

// TestSchedule_CalendarMonths: 1M from Jan 31 is AddDate(0, 1, 0).
func TestSchedule_CalendarMonths(t *testing.T) {
	e := newEnv(t)
	jan31 := time.Date(2031, 1, 31, 12, 0, 0, 0, time.UTC)
	e.clock.Set(jan31)
	r := e.open()
	s, err := r.SetRotation(logs.ScopeCluster, oneMonth)
	if err != nil {
		t.Fatal(err)
	}
	due := jan31.AddDate(0, 1, 0)
	if !s.Next().Equal(due) || !due.Equal(time.Date(2031, 3, 3, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("Next() = %v, want %v", s.Next(), due)
	}
	for _, at := range []time.Time{time.Date(2031, 2, 28, 12, 0, 0, 0, time.UTC), due.Add(-time.Second)} {
		e.clock.Set(at)
		if next := r.Tick(at); !next.Equal(due) {
			t.Errorf("Tick(%v) = %v, want %v", at, next, due)
		}
		if st := status(t, r, "CELOG"); st.Status != domains.StatusActive {
			t.Fatalf("rekey started at %v, before %v: %+v", at, due, st)
		}
	}
	e.clock.Set(due)
	r.Tick(due)
	waitActive(t, r, domains.ClusterDomains...)
	if s := waitSchedule(t, r, logs.ScopeCluster); s.LastResult != rekey.ResultSucceeded || !s.Next().Equal(due.AddDate(0, 1, 0)) {
		t.Errorf("schedule after the monthly rekey %+v, want next %v", s, due.AddDate(0, 1, 0))
	}
	if n := len(e.events.Events(logs.EventRekeyCompleted, "")); n != 17 {
		t.Errorf("%d completed events, want 17", n)
	}
}
