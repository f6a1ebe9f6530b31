package domains_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/rekey"
)

func TestStartRekey_WholeScope(t *testing.T) {
	for _, tc := range []struct {
		scope string
		names []string
		block string // the domain held back so "in progress" can be seen
	}{
		{logs.ScopeSED, []string{domains.SEDDomain}, domains.SEDDomain},
		{logs.ScopeCluster, domains.ClusterDomains, "SSO"},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			e := newEnv(t)
			r := e.open()
			wantEntries := fill(t, vault(t, r, tc.block), "x", 30)
			before := keyIDs(t, r)
			otherScope := logs.ScopeSED
			if tc.scope == logs.ScopeSED {
				otherScope = logs.ScopeCluster
			}
			otherBefore, _ := r.Schedule(otherScope)

			g := newGate()
			e.trace.Set(g.hook(tc.block, "phase:PREPARE"))
			started, err := r.StartRekey(tc.scope, nil)
			if err != nil {
				t.Fatalf("StartRekey(%s, nil): %v", tc.scope, err)
			}
			if !slices.Equal(started, tc.names) {
				t.Fatalf("started %v, want %v", started, tc.names)
			}
			g.wait(t)
			s, _ := r.Schedule(tc.scope)
			if s.LastResult != rekey.ResultInProgress || !slices.Contains(s.Pending, tc.block) {
				t.Errorf("%s schedule during the rekey = %+v, want in progress with %s pending", tc.scope, s, tc.block)
			}
			// The rotation clock is reset at completion, on the clock of then.
			done := e.clock.Advance(90 * time.Minute)
			g.open()
			waitActive(t, r, tc.names...)
			s = waitSchedule(t, r, tc.scope)
			if s.LastResult != rekey.ResultSucceeded || len(s.Pending) != 0 || !s.RekeyTime.Equal(done) {
				t.Errorf("%s schedule after the rekey = %+v, want succeeded, nothing pending, rekey time %v", tc.scope, s, done)
			}
			after := keyIDs(t, r)
			for _, d := range allDomains() {
				if (after[d] != before[d]) != slices.Contains(tc.names, d) {
					t.Errorf("%s: key %s -> %s", d, before[d], after[d])
				}
				if slices.Contains(tc.names, d) {
					if files := e.keyFiles(d); !slices.Equal(files, []string{after[d]}) {
						t.Errorf("%s: key files %v, want [%s]", d, files, after[d])
					}
				}
			}
			checkEntries(t, vault(t, r, tc.block), wantEntries)
			want := map[string]int{}
			for _, d := range tc.names {
				want[d] = 1
			}
			if got := e.events.CountByDomain(logs.EventRekeyCompleted); !reflect.DeepEqual(got, want) {
				t.Errorf("completed events per domain %v, want %v", got, want)
			}
			for _, ev := range e.events.Events(logs.EventRekeyCompleted, "") {
				if ev.Scope != tc.scope || ev.KeyID != after[ev.Domain] {
					t.Errorf("event %+v: want scope %s, key %s", ev, tc.scope, after[ev.Domain])
				}
				if (ev.Node == testNode) != (tc.scope == logs.ScopeSED) {
					t.Errorf("event %+v: node %d", ev, ev.Node)
				}
			}
			if s, _ := r.Schedule(otherScope); !reflect.DeepEqual(s, otherBefore) {
				t.Errorf("%s schedule changed by a %s rekey: %+v -> %+v", otherScope, tc.scope, otherBefore, s)
			}
			// The schedule is persisted.
			r.Close()
			r2 := e.open()
			if got, _ := r2.Schedule(tc.scope); !reflect.DeepEqual(got, s) {
				t.Errorf("%s schedule after reopen = %+v, want %+v", tc.scope, got, s)
			}
		})
	}
}

// TestStartRekey_AllNamedIsWholeScope: naming every domain of the scope is
// a whole-scope rekey; naming all but one is not.
func TestStartRekey_AllNamedIsWholeScope(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	some := slices.Clone(domains.ClusterDomains[1:])
	if _, err := r.StartRekey(logs.ScopeCluster, some); err != nil {
		t.Fatal(err)
	}
	waitActive(t, r, some...)
	if s, _ := r.Schedule(logs.ScopeCluster); s.LastResult != rekey.ResultNone || len(s.Pending) != 0 || !s.RekeyTime.Equal(time.Unix(0, 0)) {
		t.Errorf("schedule after a 16-domain rekey = %+v, want untouched", s)
	}
	e.clock.Advance(time.Hour)
	all := append(slices.Clone(domains.ClusterDomains), "S3") // a duplicate is one domain
	started, err := r.StartRekey(logs.ScopeCluster, all)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(started, domains.ClusterDomains) {
		t.Errorf("started %v, want every cluster domain once", started)
	}
	waitActive(t, r, domains.ClusterDomains...)
	if s := waitSchedule(t, r, logs.ScopeCluster); s.LastResult != rekey.ResultSucceeded || !s.RekeyTime.Equal(e.clock.Now()) {
		t.Errorf("schedule after naming all 17 = %+v, want succeeded at %v", s, e.clock.Now())
	}
}
