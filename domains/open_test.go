package domains_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

func TestOpen_CreatesEveryDomain(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	ctx := context.Background()

	wantCluster := []string{"CELOG", "CERTSTORE", "CLOUDPOOLS", "EMAIL", "FTP", "IPMI_MGMT", "JWT", "LHOTSE",
		"NDMP", "NETWORK", "PSTORE", "RICE", "S3", "SIQ", "SNMP", "SRS", "SSO"}
	if !slices.Equal(domains.ClusterDomains, wantCluster) {
		t.Fatalf("ClusterDomains = %v, want %v", domains.ClusterDomains, wantCluster)
	}
	if got, err := domains.ScopeDomains(logs.ScopeSED); err != nil || !slices.Equal(got, []string{"SED"}) {
		t.Fatalf("ScopeDomains(sed) = %v, %v", got, err)
	}

	check := func(st domains.Status, domain string) {
		t.Helper()
		now := e.clock.Now()
		switch {
		case st.Domain != domain:
			t.Errorf("row %q, want %q", st.Domain, domain)
		case st.Status != domains.StatusActive:
			t.Errorf("%s: status %s (%s), want ACTIVE", domain, st.Status, st.Error)
		case st.Location != provider.LocationLocal:
			t.Errorf("%s: location %q, want Local", domain, st.Location)
		case st.KeyID == "":
			t.Errorf("%s: empty key ID", domain)
		case st.KeyCreated.After(now) || now.Sub(st.KeyCreated) > time.Minute:
			t.Errorf("%s: key created %v, want within the minute before %v", domain, st.KeyCreated, now)
		case st.KeyCreated.Nanosecond() != 0:
			t.Errorf("%s: key created %v, want second precision", domain, st.KeyCreated)
		case st.Entries != 0 || st.Rekey != nil || st.NextRetry != nil || st.Error != "" || st.RemoteKeyID != "":
			t.Errorf("%s: %+v, want no entries, no rekey, no retry, no error", domain, st)
		}
	}
	cluster, err := r.Status(ctx, logs.ScopeCluster)
	if err != nil {
		t.Fatal(err)
	}
	if len(cluster) != 17 {
		t.Fatalf("cluster status has %d rows, want 17", len(cluster))
	}
	for i, st := range cluster {
		check(st, wantCluster[i])
		if st.Node != 0 {
			t.Errorf("%s: node %d on a cluster row", st.Domain, st.Node)
		}
	}
	sed, err := r.Status(ctx, logs.ScopeSED)
	if err != nil {
		t.Fatal(err)
	}
	if len(sed) != 1 {
		t.Fatalf("sed status has %d rows, want 1", len(sed))
	}
	check(sed[0], domains.SEDDomain)
	if sed[0].Node != testNode {
		t.Errorf("sed row node %d, want %d", sed[0].Node, testNode)
	}

	ids := keyIDs(t, r)
	seen := map[string]bool{}
	for _, d := range allDomains() {
		if files := e.keyFiles(d); !slices.Equal(files, []string{ids[d]}) {
			t.Errorf("%s: key files %v, want exactly [%s]", d, files, ids[d])
		}
		if seen[ids[d]] {
			t.Errorf("%s: key ID %s used twice", d, ids[d])
		}
		seen[ids[d]] = true
		if got := r.StorePath(d); got != filepath.Join(e.dir, "stores", d+".db") {
			t.Errorf("StorePath(%s) = %s", d, got)
		}
	}
	if n := len(e.events.Events("", "")); n != 0 {
		t.Errorf("creating the domains raised %d events: %+v", n, e.events.Events("", ""))
	}

	// Modes while open: every file of a store (-wal and -shm included).
	checkModes := func() {
		t.Helper()
		for path, want := range map[string]os.FileMode{
			e.dir: 0o700, filepath.Join(e.dir, "keys"): 0o700, filepath.Join(e.dir, "stores"): 0o700,
		} {
			if got := mode(t, path); got != want {
				t.Errorf("%s: mode %04o, want %04o", path, got, want)
			}
		}
		for _, d := range allDomains() {
			if got := mode(t, filepath.Join(e.dir, "keys", d)); got != 0o700 {
				t.Errorf("key dir of %s: mode %04o, want 0700", d, got)
			}
			for _, id := range e.keyFiles(d) {
				if got := mode(t, e.keyPath(d, id)); got != 0o600 {
					t.Errorf("key file %s: mode %04o, want 0600", e.keyPath(d, id), got)
				}
			}
		}
		stores, err := os.ReadDir(filepath.Join(e.dir, "stores"))
		if err != nil {
			t.Fatal(err)
		}
		if len(stores) < 18 {
			t.Errorf("stores dir holds %d files, want at least 18", len(stores))
		}
		for _, f := range stores {
			if got := mode(t, filepath.Join(e.dir, "stores", f.Name())); got != 0o600 {
				t.Errorf("store file %s: mode %04o, want 0600", f.Name(), got)
			}
		}
	}
	checkModes()

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkModes()

	// Reopen, later: nothing is recreated.
	e.clock.Advance(time.Hour)
	r2 := e.open()
	if got := keyIDs(t, r2); !mapsEqual(got, ids) {
		t.Fatalf("key IDs after reopen = %v, want %v", got, ids)
	}
	for _, d := range allDomains() {
		st := status(t, r2, d)
		if st.Status != domains.StatusActive || st.KeyCreated.After(t0) {
			t.Errorf("%s after reopen: %+v", d, st)
		}
		if files := e.keyFiles(d); !slices.Equal(files, []string{ids[d]}) {
			t.Errorf("%s after reopen: key files %v, want [%s]", d, files, ids[d])
		}
	}
	checkModes()
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestOpen_EntriesSurviveReopen: entries written before a restart are read
// back after it under the same MK.
func TestOpen_EntriesSurviveReopen(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	want := fill(t, vault(t, r, "JWT"), "jwt", 40)
	sedWant := fill(t, vault(t, r, domains.SEDDomain), "drive", 5)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := e.open()
	checkEntries(t, vault(t, r2, "JWT"), want)
	checkEntries(t, vault(t, r2, domains.SEDDomain), sedWant)
	if st := status(t, r2, "JWT"); st.Entries != 40 {
		t.Errorf("JWT entries = %d, want 40", st.Entries)
	}
	if st := status(t, r2, domains.SEDDomain); st.Entries != 5 {
		t.Errorf("SED entries = %d, want 5", st.Entries)
	}
}

func TestOpen_Errors(t *testing.T) {
	t.Run("data dir is a file", func(t *testing.T) {
		e := newEnv(t)
		if err := os.WriteFile(e.dir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := domains.Open(context.Background(), e.cfg); err == nil {
			r.Close()
			t.Fatal("Open on a file succeeded")
		}
	})
	t.Run("damaged schedule", func(t *testing.T) {
		e := newEnv(t)
		e.open().Close()
		path := filepath.Join(e.dir, "schedule.json")
		if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := domains.Open(context.Background(), e.cfg)
		if err == nil {
			r.Close()
			t.Fatal("Open with a damaged schedule.json succeeded")
		}
		if !strings.Contains(err.Error(), "schedule") {
			t.Errorf("error %q does not name the schedule", err)
		}
	})
	t.Run("unknown names", func(t *testing.T) {
		e := newEnv(t)
		r := e.open()
		ctx := context.Background()
		if _, err := r.Domain("NOPE"); !errors.Is(err, domains.ErrUnknownDomain) {
			t.Errorf("Domain(NOPE) = %v, want ErrUnknownDomain", err)
		}
		if _, err := r.Vault("NOPE"); !errors.Is(err, domains.ErrUnknownDomain) {
			t.Errorf("Vault(NOPE) = %v, want ErrUnknownDomain", err)
		}
		if _, err := r.DomainStatus(ctx, "NOPE"); !errors.Is(err, domains.ErrUnknownDomain) {
			t.Errorf("DomainStatus(NOPE) = %v, want ErrUnknownDomain", err)
		}
		if _, err := r.Status(ctx, "nope"); !errors.Is(err, domains.ErrUnknownScope) {
			t.Errorf("Status(nope) = %v, want ErrUnknownScope", err)
		}
		if _, err := domains.ScopeDomains("Cluster"); !errors.Is(err, domains.ErrUnknownScope) {
			t.Errorf("ScopeDomains(Cluster) = %v, want ErrUnknownScope", err)
		}
		if _, err := r.Schedule("nope"); !errors.Is(err, domains.ErrUnknownScope) {
			t.Errorf("Schedule(nope) = %v, want ErrUnknownScope", err)
		}
		if _, err := r.SetRotation("nope", rekey.Rotation{N: 1, Unit: 'W'}); !errors.Is(err, domains.ErrUnknownScope) {
			t.Errorf("SetRotation(nope) = %v, want ErrUnknownScope", err)
		}
		d, err := r.Domain("S3")
		if err != nil || d.Name != "S3" || d.Scope != logs.ScopeCluster || d.Vault == nil {
			t.Errorf("Domain(S3) = %+v, %v", d, err)
		}
		if d, err := r.Domain(domains.SEDDomain); err != nil || d.Scope != logs.ScopeSED {
			t.Errorf("Domain(SED) = %+v, %v", d, err)
		}
		src, err := r.Sources(provider.LocationLocal)
		if err != nil || src.Location() != provider.LocationLocal {
			t.Errorf("Sources(Local) = %v, %v", src, err)
		}
		if _, err := r.Sources("kmip-1"); err == nil {
			t.Error("Sources(kmip-1) succeeded with no such source configured")
		}
	})
}

// TestOpen_Defaults: a Config with only DataDir gets node 1, the wall
// clock, a 15m retry interval and no events.
func TestOpen_Defaults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	r, err := domains.Open(context.Background(), domains.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	rr := &reg{Registry: r}
	t.Cleanup(func() { rr.Close() })
	st := status(t, rr, domains.SEDDomain)
	if st.Node != 1 || st.Status != domains.StatusActive {
		t.Errorf("SED with defaults: %+v, want node 1, ACTIVE", st)
	}
	if age := time.Since(st.KeyCreated); age < -time.Second || age > time.Minute {
		t.Errorf("SED key created %v, want now on the wall clock", st.KeyCreated)
	}
	v := vault(t, rr, domains.SEDDomain)
	want := fill(t, v, "d", 3)
	corruptRow(t, rr.StorePath(domains.SEDDomain), "d-00001")
	delete(want, "d-00001")
	if _, err := rr.StartRekey(logs.ScopeSED, nil); err != nil {
		t.Fatal(err)
	}
	st = waitDone(t, rr, domains.SEDDomain)
	if st.Status != domains.StatusFailed || st.NextRetry == nil {
		t.Fatalf("SED = %+v, want FAILED", st)
	}
	if d := time.Until(*st.NextRetry); d < 14*time.Minute || d > 15*time.Minute+time.Second {
		t.Errorf("next retry in %v, want the default 15m", d)
	}
	checkEntries(t, v, want)
}
