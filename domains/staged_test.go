package domains_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

var sevenDays = rekey.Rotation{N: 7, Unit: 'D'}

// stageDomains runs staged rekeys of names (of scope) to STAGED.
func stageDomains(t *testing.T, r *reg, scope string, period rekey.Rotation, names ...string) {
	t.Helper()
	arg := names
	if scope == logs.ScopeSED {
		arg = nil
	}
	started, err := r.StartRekeyWith(scope, arg, rekey.StartOptions{Stage: period})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(started, names) {
		t.Fatalf("started %v, want %v", started, names)
	}
	for _, n := range names {
		if st := waitDone(t, r, n, domains.StatusStaged, domains.StatusFailed); st.Status != domains.StatusStaged {
			t.Fatalf("%s: %+v, want STAGED", n, st)
		}
	}
}

func TestStaged_StatusRefusalsAndContinue(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	want := fill(t, vault(t, r, "S3"), "s3", 50)
	before := keyIDs(t, r)
	stageDomains(t, r, logs.ScopeCluster, sevenDays, "S3")
	staged := keyIDs(t, r)
	st := status(t, r, "S3")
	until := e.clock.Now().AddDate(0, 0, 7).Truncate(time.Second)
	if st.StagedUntil == nil || !st.StagedUntil.Equal(until) || st.Rekey != nil || st.Error != "" || st.KeyID == before["S3"] {
		t.Fatalf("S3 status %+v, want STAGED until %v under a new key, no rekey running", st, until)
	}
	checkEntries(t, vault(t, r, "S3"), want)
	if files := e.keyFiles("S3"); len(files) != 2 {
		t.Fatalf("S3 key files %v, want the retired one and the new one", files)
	}

	// A rekey or migration of S3, alone or with the scope, is refused and
	// starts nothing anywhere.
	wantMsg := "S3 is STAGED until " + until.Format(time.RFC3339) +
		": run 'kmctl cluster rekey continue --domain S3' or 'kmctl cluster rekey cancel --domain S3' first"
	for what, f := range map[string]func() error{
		"rekey of S3":        func() error { _, err := r.StartRekey(logs.ScopeCluster, []string{"S3"}); return err },
		"rekey of the scope": func() error { _, err := r.StartRekey(logs.ScopeCluster, nil); return err },
		"staged rekey of S3": func() error {
			_, err := r.StartRekeyWith(logs.ScopeCluster, []string{"S3"}, rekey.StartOptions{Stage: sevenDays})
			return err
		},
		"migration of S3": func() error {
			_, err := r.Migrate(logs.ScopeCluster, []string{"S3"}, provider.LocationLocal, false)
			return err
		},
		"migration with FTP": func() error {
			_, err := r.Migrate(logs.ScopeCluster, []string{"FTP", "S3"}, provider.LocationLocal, true)
			return err
		},
		"rekey of FTP and S3": func() error { _, err := r.StartRekey(logs.ScopeCluster, []string{"FTP", "S3"}); return err },
	} {
		err := f()
		if !errors.Is(err, rekey.ErrStaged) || err.Error() != wantMsg {
			t.Errorf("%s while STAGED: %v, want %q", what, err, wantMsg)
		}
	}
	if after := keyIDs(t, r); !reflect.DeepEqual(after, staged) || after["FTP"] != before["FTP"] {
		t.Errorf("a refused start changed keys: %v -> %v", staged, after)
	}
	if s, _ := r.Schedule(logs.ScopeCluster); len(s.Pending) != 0 {
		t.Errorf("a refused whole-scope rekey left the schedule pending: %+v", s)
	}

	// Continue and cancel apply to STAGED domains only.
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"SSO"}, "SSO is not STAGED (it is ACTIVE); nothing to continue"},
		{[]string{"S3", "SSO"}, "SSO is not STAGED (it is ACTIVE); nothing to continue"},
	} {
		if _, err := r.ContinueStaged(ctx, logs.ScopeCluster, tc.names); !errors.Is(err, rekey.ErrNotStaged) || err.Error() != tc.want {
			t.Errorf("continue %v: %v, want %q", tc.names, err, tc.want)
		}
	}
	if _, err := r.CancelStaged(ctx, logs.ScopeSED, nil); err == nil || err.Error() != "SED is not STAGED (it is LOCAL); nothing to cancel" {
		t.Errorf("sed cancel: %v", err)
	}
	if st := status(t, r, "S3"); st.Status != domains.StatusStaged {
		t.Fatalf("a refused continue changed S3: %+v", st)
	}

	done, err := r.ContinueStaged(ctx, logs.ScopeCluster, nil)
	if err != nil || !reflect.DeepEqual(done, []string{"S3"}) {
		t.Fatalf("continue of every STAGED domain: %v, %v", done, err)
	}
	waitActive(t, r, "S3")
	if files := e.keyFiles("S3"); !reflect.DeepEqual(files, []string{status(t, r, "S3").KeyID}) {
		t.Fatalf("S3 key files %v after continue", files)
	}
	if _, err := r.ContinueStaged(ctx, logs.ScopeCluster, nil); err == nil || err.Error() != "no cluster domain is STAGED; nothing to continue" {
		t.Errorf("continue with none STAGED: %v", err)
	}
	checkEntries(t, vault(t, r, "S3"), want)
	if n := len(e.events.Events(logs.EventRekeyContinued, "S3")); n != 1 {
		t.Errorf("%d continued events", n)
	}
}

func TestStaged_SEDCancel(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	want := fill(t, vault(t, r, domains.SEDDomain), "drive", 20)
	old := status(t, r, domains.SEDDomain).KeyID
	stageDomains(t, r, logs.ScopeSED, sevenDays, domains.SEDDomain)
	if _, err := r.StartRekey(logs.ScopeSED, nil); err == nil ||
		!strings.HasSuffix(err.Error(), ": run 'kmctl sed rekey continue' or 'kmctl sed rekey cancel' first") {
		t.Errorf("sed rekey while STAGED: %v", err)
	}
	done, err := r.CancelStaged(ctx, logs.ScopeSED, nil)
	if err != nil || !reflect.DeepEqual(done, []string{domains.SEDDomain}) {
		t.Fatalf("cancel: %v %v", done, err)
	}
	waitActive(t, r, domains.SEDDomain)
	if st := status(t, r, domains.SEDDomain); st.KeyID != old {
		t.Fatalf("SED key %s after cancel, want the retired %s back", st.KeyID, old)
	}
	if files := e.keyFiles(domains.SEDDomain); !reflect.DeepEqual(files, []string{old}) {
		t.Fatalf("SED key files %v, want [%s]", files, old)
	}
	checkEntries(t, vault(t, r, domains.SEDDomain), want)
	ev := e.events.Events(logs.EventSedsRekeyCancelled, domains.SEDDomain)
	if len(ev) != 1 || ev[0].Node != testNode || ev[0].Scope != logs.ScopeSED {
		t.Fatalf("cancelled events %+v", ev)
	}
}

// The end of the stage period continues by itself: at a tick while kmd
// runs, and at once at the start of a kmd that was down when it came.
func TestStaged_AutoContinue(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	stageDomains(t, r, logs.ScopeCluster, rekey.Rotation{N: 3, Unit: 'h'}, "S3")
	until := *status(t, r, "S3").StagedUntil
	e.clock.Advance(time.Hour)
	stageDomains(t, r, logs.ScopeCluster, rekey.Rotation{N: 3, Unit: 'h'}, "FTP")
	if next := r.Tick(e.clock.Now()); next.IsZero() || next.After(until.Add(time.Second)) {
		t.Errorf("Tick returned %v, want the end of the stage period %v at the latest", next, until)
	}
	e.clock.Set(until.Add(-time.Minute))
	r.Tick(e.clock.Now())
	if st := status(t, r, "S3"); st.Status != domains.StatusStaged {
		t.Fatalf("S3 continued before its stage ended: %+v", st)
	}
	e.clock.Set(until.Add(time.Second))
	r.Tick(e.clock.Now())
	waitActive(t, r, "S3")

	// FTP's period, an hour later, ends while kmd is down.
	if st := status(t, r, "FTP"); st.Status != domains.StatusStaged {
		t.Fatalf("FTP: %+v, want still STAGED", st)
	}
	r.Close()
	e.clock.Advance(2 * time.Hour)
	r = e.open() // Open ticks once
	waitActive(t, r, "FTP")
	for _, d := range []string{"S3", "FTP"} {
		ev := e.events.Events(logs.EventRekeyContinued, d)
		if len(ev) != 1 || !strings.Contains(ev[0].Message, "automatically") {
			t.Errorf("%s continued events %+v", d, ev)
		}
		if files := e.keyFiles(d); len(files) != 1 {
			t.Errorf("%s key files %v, want one", d, files)
		}
	}
}

// A scheduled rekey that comes due while a domain is STAGED waits for the
// stage to end, then runs; the end of the stage is not taken for it.
func TestStaged_ScheduledRekeyWaitsForStage(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	stageDomains(t, r, logs.ScopeCluster, sevenDays, "S3")
	stagedKey := status(t, r, "S3").KeyID
	set, err := r.SetRotation(logs.ScopeCluster, rekey.Rotation{N: 1, Unit: 'D'})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(set.Next().Add(time.Minute))
	r.Tick(e.clock.Now())
	others := slices.DeleteFunc(slices.Clone(domains.ClusterDomains), func(d string) bool { return d == "S3" })
	waitActive(t, r, others...)
	s, _ := r.Schedule(logs.ScopeCluster)
	if !reflect.DeepEqual(s.Pending, []string{"S3"}) || s.LastResult != rekey.ResultInProgress {
		t.Fatalf("schedule %+v, want S3 pending", s)
	}
	if st := status(t, r, "S3"); st.Status != domains.StatusStaged || st.KeyID != stagedKey {
		t.Fatalf("S3 %+v, want still STAGED", st)
	}
	if _, err := r.ContinueStaged(ctx, logs.ScopeCluster, []string{"S3"}); err != nil {
		t.Fatal(err)
	}
	// The continue's end wakes the scheduler; its tick starts S3's rekey.
	deadline := time.Now().Add(waitLimit)
	for {
		r.Tick(e.clock.Now())
		if st := status(t, r, "S3"); st.Status == domains.StatusActive && st.KeyID != stagedKey {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("S3 not rekeyed after its stage ended: %+v", status(t, r, "S3"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	s = waitSchedule(t, r, logs.ScopeCluster)
	if s.LastResult != rekey.ResultSucceeded {
		t.Fatalf("schedule %+v, want succeeded", s)
	}
	if files := e.keyFiles("S3"); len(files) != 1 {
		t.Fatalf("S3 key files %v", files)
	}
}

// dirHashes hashes every file of dir: its path, mode and content.
func dirHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := fmt.Sprintf("%v", fi.Mode())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		m[p] = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStaged_PlanChangesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	fill(t, vault(t, r, "S3"), "s3", 25)
	fill(t, vault(t, r, "FTP"), "ftp", 5)
	stageDomains(t, r, logs.ScopeCluster, sevenDays, "SSO")
	keys, err := r.Keys(ctx, logs.ScopeCluster, []string{"S3"})
	if err != nil {
		t.Fatal(err)
	}
	// What any read does to SQLite's shared-memory index (the -shm
	// files: read marks), a status has done already.
	for _, scope := range domains.Scopes {
		if _, err := r.Status(ctx, scope); err != nil {
			t.Fatal(err)
		}
	}
	before := dirHashes(t, e.dir)
	evs := len(e.events.Events("", ""))

	p, err := r.PlanRekey(ctx, logs.ScopeCluster, []string{"S3", "FTP", "S3"}, rekey.StartOptions{Stage: sevenDays})
	if err != nil {
		t.Fatal(err)
	}
	if p.Refused != "" || len(p.Rows) != 2 || p.Stage != sevenDays {
		t.Fatalf("plan %+v, want two rows that would start", p)
	}
	s3 := p.Rows[0]
	if s3.Domain != "S3" || s3.Entries != 25 || s3.Action != domains.PlanRekey || s3.CreateAt != provider.LocationLocal ||
		s3.Current.ID != keys[0].ID || s3.Current.Fingerprint != keys[0].Fingerprint || s3.Destroy == nil || s3.Destroy.ID != keys[0].ID {
		t.Errorf("S3 plan %+v, want a rekey creating a local key and destroying %s", s3, keys[0].ID)
	}
	all, err := r.PlanRekey(ctx, logs.ScopeCluster, nil, rekey.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Rows) != 17 || !strings.HasPrefix(all.Refused, "SSO is STAGED until ") {
		t.Errorf("whole-scope plan: %d rows, refused %q; want 17 and SSO's refusal", len(all.Rows), all.Refused)
	}
	for _, row := range all.Rows {
		if (row.Action == domains.PlanRefuse) != (row.Domain == "SSO") {
			t.Errorf("%s: action %s (%s)", row.Domain, row.Action, row.Reason)
		}
	}
	if _, err := r.PlanRekey(ctx, logs.ScopeCluster, []string{"SED"}, rekey.StartOptions{}); !errors.Is(err, domains.ErrUnknownDomain) {
		t.Errorf("plan of SED in the cluster scope: %v", err)
	}
	sed, err := r.PlanRekey(ctx, logs.ScopeSED, nil, rekey.StartOptions{})
	if err != nil || len(sed.Rows) != 1 || sed.Rows[0].Node != testNode || sed.Rows[0].Action != domains.PlanRekey {
		t.Errorf("sed plan %+v, %v", sed, err)
	}

	if after := dirHashes(t, e.dir); !reflect.DeepEqual(before, after) {
		for p, h := range after {
			if before[p] != h {
				t.Errorf("%s changed by a plan", p)
			}
		}
		for p := range before {
			if _, ok := after[p]; !ok {
				t.Errorf("%s removed by a plan", p)
			}
		}
	}
	if n := len(e.events.Events("", "")); n != evs {
		t.Errorf("a plan raised %d events", n-evs)
	}
	for _, d := range []string{"S3", "FTP"} {
		if st := status(t, r, d); st.Status != domains.StatusActive {
			t.Errorf("%s after a plan: %+v", d, st)
		}
	}
}

func TestStaged_KeysListAndDelete(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	want := fill(t, vault(t, r, "S3"), "s3", 12)
	stageDomains(t, r, logs.ScopeCluster, sevenDays, "S3")
	rows, err := r.Keys(ctx, logs.ScopeCluster, []string{"S3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("S3 keys %+v, want 2", rows)
	}
	retired, current := byState(t, rows, provider.KeyRetired), byState(t, rows, provider.KeyCurrent)
	if retired.State != provider.KeyRetired || retired.Entries != 0 || !retired.DestroyAt.Equal(*status(t, r, "S3").StagedUntil) ||
		current.State != provider.KeyCurrent || current.Entries != 12 || !current.DestroyAt.IsZero() {
		t.Fatalf("S3 keys %+v", rows)
	}
	if !domains.ValidFingerprint(retired.Fingerprint) || retired.Fingerprint == current.Fingerprint {
		t.Fatalf("fingerprints %q %q", retired.Fingerprint, current.Fingerprint)
	}
	all, err := r.Keys(ctx, logs.ScopeCluster, nil)
	if err != nil || len(all) != 18 {
		t.Fatalf("cluster keys: %d rows (%v), want 18", len(all), err)
	}
	sed, err := r.Keys(ctx, logs.ScopeSED, nil)
	if err != nil || len(sed) != 1 || sed[0].Node != testNode || sed[0].Domain != domains.SEDDomain {
		t.Fatalf("sed keys %+v %v", sed, err)
	}

	for _, tc := range []struct {
		domain, fp string
		is         error
		msg        string
	}{
		{"S3", current.Fingerprint, domains.ErrKeyNotRetired, "is CURRENT"},
		{"S3", strings.ToUpper(current.Fingerprint), domains.ErrKeyNotRetired, "is CURRENT"},
		{"S3", "0123", domains.ErrBadFingerprint, "want the 32 hex digits that 'kmctl cluster keys list --domain S3' shows"},
		{"S3", strings.Repeat("g", 32), domains.ErrBadFingerprint, "invalid fingerprint"},
		{"S3", strings.Repeat("0", 32), domains.ErrKeyNotFound, "list them with 'kmctl cluster keys list --domain S3'"},
		{"FTP", retired.Fingerprint, domains.ErrKeyNotFound, "no master key of FTP has fingerprint"},
		{"SED", retired.Fingerprint, domains.ErrUnknownDomain, "SED"},
	} {
		if _, err := r.DeleteKey(ctx, logs.ScopeCluster, tc.domain, tc.fp); !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("delete %s %s: %v, want %v saying %q", tc.domain, tc.fp, err, tc.is, tc.msg)
		}
	}
	if st := status(t, r, "S3"); st.Status != domains.StatusStaged || len(e.keyFiles("S3")) != 2 {
		t.Fatalf("refused deletes changed S3: %+v %v", st, e.keyFiles("S3"))
	}
	// The retired key of a STAGED rekey: deleting it continues the rekey.
	got, err := r.DeleteKey(ctx, logs.ScopeCluster, "S3", retired.Fingerprint)
	if err != nil || got.ID != retired.ID {
		t.Fatalf("delete of the retired key: %+v, %v", got, err)
	}
	if st := status(t, r, "S3"); st.Status != domains.StatusActive || st.KeyID != current.ID {
		t.Fatalf("S3 after the delete: %+v", st)
	}
	if files := e.keyFiles("S3"); !reflect.DeepEqual(files, []string{current.ID}) {
		t.Fatalf("S3 key files %v", files)
	}
	checkEntries(t, vault(t, r, "S3"), want)
	if ev := e.events.Events(logs.EventRekeyContinued, "S3"); len(ev) != 1 || !strings.Contains(ev[0].Message, "by the operator") {
		t.Fatalf("continued events %+v", ev)
	}
}

// byState picks the one row of rows in state st.
func byState(t *testing.T, rows []domains.KeyRow, st provider.KeyState) domains.KeyRow {
	t.Helper()
	i := slices.IndexFunc(rows, func(k domains.KeyRow) bool { return k.State == st })
	if i < 0 {
		t.Fatalf("no %s key among %+v", st, rows)
	}
	return rows[i]
}

// A retired key that an entry still references is never deleted.
func TestStaged_DeleteReferencedKeyRefused(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	v := vault(t, r, "S3")
	fill(t, v, "s3", 3)
	stageDomains(t, r, logs.ScopeCluster, sevenDays, "S3")
	rows, err := r.Keys(ctx, logs.ScopeCluster, []string{"S3"})
	if err != nil {
		t.Fatal(err)
	}
	retired := byState(t, rows, provider.KeyRetired)
	// An entry left under the retired key (as damage or a bug would).
	k := v.Key(retired.ID)
	sealed, err := k.Seal(nil, "S3", "left/behind", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Store().Put(ctx, provider.Entry{Name: "left/behind", KeyID: retired.ID, Sealed: sealed}, provider.Cond{}); err != nil {
		t.Fatal(err)
	}
	_, err = r.DeleteKey(ctx, logs.ScopeCluster, "S3", retired.Fingerprint)
	if !errors.Is(err, rekey.ErrKeyInUse) || !strings.Contains(err.Error(), "still seals 1 entries") {
		t.Fatalf("delete of a referenced key: %v", err)
	}
	if files := e.keyFiles("S3"); len(files) != 2 {
		t.Fatalf("key files %v", files)
	}
	if got, _, err := v.Get(ctx, "left/behind"); err != nil || string(got) != "x" {
		t.Fatalf("entry under the retired key: %q %v", got, err)
	}
}

// A staged rekey of an MK on a KMIP server keeps the retired MK there,
// loaded again after a restart (from the server); cancel goes back to it
// and destroys the new one on the server; a rekey staged again and
// continued destroys the retired one there.
func TestStaged_OnKMIP(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()
	addKMIP(t, r, srv)
	want := fill(t, vault(t, r, domains.SEDDomain), "drive", 15)
	migrate(t, r, logs.ScopeSED, nil, "kmip1")
	onKMIP := checkOnKMIP(t, e, r, srv, domains.SEDDomain)

	stageDomains(t, r, logs.ScopeSED, sevenDays, domains.SEDDomain)
	st := status(t, r, domains.SEDDomain)
	if st.Location != "kmip1" || st.KeyID == onKMIP.KeyID {
		t.Fatalf("SED staged: %+v", st)
	}
	if keys := serverKeys(srv); len(keys) != 2 || !slices.Contains(keys, onKMIP.RemoteKeyID) || !slices.Contains(keys, st.RemoteKeyID) {
		t.Fatalf("server holds %v while STAGED, want the retired %s and the current %s", keys, onKMIP.RemoteKeyID, st.RemoteKeyID)
	}
	p, err := r.PlanRekey(ctx, logs.ScopeSED, nil, rekey.StartOptions{})
	if err != nil || p.Rows[0].Action != domains.PlanRefuse || p.Rows[0].Current.Location != "kmip1" || p.Rows[0].Current.RemoteID != st.RemoteKeyID {
		t.Fatalf("plan while STAGED on kmip1: %+v %v", p, err)
	}

	// After a restart the retired MK is loaded from the server again.
	r.Close()
	r = e.open()
	if st := status(t, r, domains.SEDDomain); st.Status != domains.StatusStaged {
		t.Fatalf("SED after a restart: %+v", st)
	}
	if vault(t, r, domains.SEDDomain).Key(onKMIP.KeyID) == nil {
		t.Fatal("the retired MK on kmip1 is not loaded after a restart")
	}
	if _, err := r.CancelStaged(ctx, logs.ScopeSED, nil); err != nil {
		t.Fatal(err)
	}
	waitActive(t, r, domains.SEDDomain)
	back := checkOnKMIP(t, e, r, srv, domains.SEDDomain)
	if back.KeyID != onKMIP.KeyID || back.RemoteKeyID != onKMIP.RemoteKeyID {
		t.Fatalf("SED after cancel %+v, want the retired %+v back", back, onKMIP)
	}
	if keys := serverKeys(srv); !slices.Equal(keys, []string{onKMIP.RemoteKeyID}) {
		t.Fatalf("server holds %v after cancel, want only %s", keys, onKMIP.RemoteKeyID)
	}
	checkEntries(t, vault(t, r, domains.SEDDomain), want)

	stageDomains(t, r, logs.ScopeSED, sevenDays, domains.SEDDomain)
	rows, err := r.Keys(ctx, logs.ScopeSED, nil)
	if err != nil {
		t.Fatal(err)
	}
	retired := byState(t, rows, provider.KeyRetired)
	if retired.Location != "kmip1" || retired.RemoteID != onKMIP.RemoteKeyID {
		t.Fatalf("retired key %+v", retired)
	}
	if _, err := r.DeleteKey(ctx, logs.ScopeSED, domains.SEDDomain, retired.Fingerprint); err != nil {
		t.Fatal(err)
	}
	now := checkOnKMIP(t, e, r, srv, domains.SEDDomain)
	if keys := serverKeys(srv); !slices.Equal(keys, []string{now.RemoteKeyID}) {
		t.Fatalf("server holds %v after the continue, want only %s", keys, now.RemoteKeyID)
	}
	checkEntries(t, vault(t, r, domains.SEDDomain), want)
}

// A whole-scope start marks its domains pending before it starts them; a
// Tick in between would start them first, as plain rekeys, and the start
// would fail as in progress. Ticks run throughout here.
func TestStaged_StartRacesNoTick(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	fill(t, vault(t, r, domains.SEDDomain), "sed", 20)
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		for {
			select {
			case <-stop:
				return
			default:
				r.Tick(e.clock.Now())
			}
		}
	}()
	defer func() { close(stop); <-ticked }()
	ctx := t.Context()
	for i := range 40 {
		if _, err := r.StartRekeyWith(logs.ScopeSED, nil, rekey.StartOptions{Stage: sevenDays}); err != nil {
			t.Fatalf("round %d: staged start of the sed scope with Ticks running: %v", i, err)
		}
		if st := waitDone(t, r, domains.SEDDomain, domains.StatusStaged, domains.StatusFailed); st.Status != domains.StatusStaged {
			t.Fatalf("round %d: SED %+v, want STAGED", i, st)
		}
		if _, err := r.CancelStaged(ctx, logs.ScopeSED, nil); err != nil {
			t.Fatalf("round %d: cancel: %v", i, err)
		}
		waitActive(t, r, domains.SEDDomain)
	}
}
