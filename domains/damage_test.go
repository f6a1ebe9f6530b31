package domains_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// removeStore deletes a domain's database files, as a lost disk would.
func removeStore(t *testing.T, path string) {
	t.Helper()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// checkOthersWork: every domain but broken is ACTIVE and takes writes.
func checkOthersWork(t *testing.T, r *reg, broken string) {
	t.Helper()
	for _, d := range allDomains() {
		if d == broken {
			continue
		}
		if st := status(t, r, d); st.Status != domains.StatusActive {
			t.Errorf("%s beside a damaged %s: %+v", d, broken, st)
		}
	}
	v := vault(t, r, "S3")
	if _, err := v.Put(t.Context(), "beside-"+broken, []byte("ok"), provider.Cond{}); err != nil {
		t.Fatalf("S3 Put beside a damaged %s: %v", broken, err)
	}
	if got, _, err := v.Get(t.Context(), "beside-"+broken); err != nil || string(got) != "ok" {
		t.Fatalf("S3 Get beside a damaged %s: %q, %v", broken, got, err)
	}
}

func TestOpen_MissingStore(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	fill(t, vault(t, r, "FTP"), "ftp", 10)
	ids := keyIDs(t, r)
	path := r.StorePath("FTP")
	r.Close()
	removeStore(t, path)

	r2 := e.open()
	st := status(t, r2, "FTP")
	if st.Status != domains.StatusFailed || !strings.Contains(st.Error, "FTP") || !strings.Contains(st.Error, "missing") {
		t.Fatalf("FTP with its store gone: %+v, want FAILED saying the store of FTP is missing", st)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an empty store was created in place of the missing one: %v", err)
	}
	if _, err := r2.Vault("FTP"); !errors.Is(err, domains.ErrUnavailable) {
		t.Errorf("Vault(FTP) = %v, want ErrUnavailable", err)
	}
	for _, names := range [][]string{{"FTP"}, nil, {"CELOG", "FTP"}} {
		if started, err := r2.StartRekey(logs.ScopeCluster, names); err == nil || len(started) != 0 {
			t.Errorf("StartRekey(cluster, %v) with FTP unavailable = %v, %v; want an error and none started", names, started, err)
		}
	}
	if files := e.keyFiles("FTP"); !slices.Equal(files, []string{ids["FTP"]}) {
		t.Errorf("FTP key files %v, want [%s] kept", files, ids["FTP"])
	}
	r2.Tick(e.clock.Now())
	if st := status(t, r2, "FTP"); st.Status != domains.StatusFailed {
		t.Errorf("FTP after Tick: %+v", st)
	}
	sts, err := r2.Status(t.Context(), logs.ScopeCluster)
	if err != nil || len(sts) != 17 {
		t.Fatalf("cluster status: %d rows, %v", len(sts), err)
	}
	checkOthersWork(t, r2, "FTP")
}

func TestOpen_KeyFileReadableByOthers(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	want := fill(t, vault(t, r, "NDMP"), "ndmp", 20)
	id := keyIDs(t, r)["NDMP"]
	r.Close()
	kp := e.keyPath("NDMP", id)
	if err := os.Chmod(kp, 0o644); err != nil {
		t.Fatal(err)
	}

	r2 := e.open()
	st := status(t, r2, "NDMP")
	if st.Status != domains.StatusFailed || !strings.Contains(st.Error, kp) || !strings.Contains(st.Error, "chmod 600") {
		t.Fatalf("NDMP with a 0644 key file: %+v, want FAILED naming %s and chmod 600", st, kp)
	}
	if st.KeyID != id || st.Entries != 20 || st.NextRetry == nil {
		t.Errorf("NDMP status %+v, want key %s, 20 entries and a retry time", st, id)
	}
	v := vault(t, r2, "NDMP")
	if _, _, err := v.Get(t.Context(), "ndmp-00003"); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("Get with the key refused = %v, want ErrKeyUnavailable", err)
	}
	if _, err := v.Put(t.Context(), "new", []byte("x"), provider.Cond{}); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("Put with the key refused = %v, want ErrKeyUnavailable", err)
	}
	checkOthersWork(t, r2, "NDMP")
	r2.Tick(e.clock.Now())
	if st := status(t, r2, "NDMP"); st.Status != domains.StatusFailed {
		t.Errorf("NDMP after a Tick with the file still 0644: %+v", st)
	}

	if err := os.Chmod(kp, 0o600); err != nil {
		t.Fatal(err)
	}
	r2.Tick(e.clock.Now())
	if st := status(t, r2, "NDMP"); st.Status != domains.StatusActive || st.Error != "" || st.NextRetry != nil || st.KeyID != id {
		t.Fatalf("NDMP after chmod 600 and a Tick: %+v, want ACTIVE under %s", st, id)
	}
	checkEntries(t, v, want)
	if n := len(e.events.Events("", "")); n != 0 {
		t.Errorf("%d events", n)
	}
}

func TestOpen_TruncatedKeyFile(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	fill(t, vault(t, r, "SNMP"), "snmp", 15)
	id := keyIDs(t, r)["SNMP"]
	path := r.StorePath("SNMP")
	r.Close()
	kp := e.keyPath("SNMP", id)
	full, err := os.ReadFile(kp)
	if err != nil {
		t.Fatal(err)
	}
	damaged := full[:len(full)/2]
	if err := os.WriteFile(kp, damaged, 0o600); err != nil {
		t.Fatal(err)
	}

	r2 := e.open()
	st := status(t, r2, "SNMP")
	if st.Status != domains.StatusFailed || !strings.Contains(st.Error, "corrupt") || st.KeyID != id || st.Entries != 15 {
		t.Fatalf("SNMP with a truncated key file: %+v, want FAILED, corrupt, key %s, 15 entries", st, id)
	}
	v := vault(t, r2, "SNMP")
	if _, _, err := v.Get(t.Context(), "snmp-00001"); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("Get = %v, want ErrKeyUnavailable", err)
	}
	checkOthersWork(t, r2, "SNMP")
	nothingDestroyed := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(kp); err != nil || !bytes.Equal(b, damaged) {
			t.Errorf("%s: key file %s changed or removed (%v)", when, kp, err)
		}
		if n, err := v.Store().CountByKey(t.Context(), id); err != nil || n != 15 {
			t.Errorf("%s: %d entries under %s, %v; want 15", when, n, id, err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: store: %v", when, err)
		}
	}
	r2.Tick(e.clock.Now())
	nothingDestroyed("after Tick")

	// A rekey cannot read the entries: it fails and destroys nothing.
	if _, err := r2.StartRekey(logs.ScopeCluster, []string{"SNMP"}); err != nil {
		t.Fatalf("StartRekey(SNMP): %v", err)
	}
	st = waitDone(t, r2, "SNMP")
	if st.Status != domains.StatusFailed || !strings.Contains(st.Error, "SNMP") {
		t.Errorf("SNMP rekey with its key corrupt: %+v, want FAILED", st)
	}
	nothingDestroyed("after a failed rekey")
	if files := e.keyFiles("SNMP"); len(files) != 2 || !slices.Contains(files, id) {
		t.Errorf("SNMP key files %v, want the damaged one and the new one", files)
	}
	if evs := e.events.Events(logs.EventRekeyFailed, "SNMP"); len(evs) != 1 || evs[0].Attempt != 1 {
		t.Errorf("failure events %+v, want one", evs)
	}
	r2.Tick(e.clock.Now().Add(2 * retryInterval))
	waitDone(t, r2, "SNMP")
	nothingDestroyed("after a failed retry")
}

// TestSchedule_UnavailableDomainDoesNotStallScope: a scheduled cluster
// rekey that finds a domain unavailable (store missing) rekeys the others;
// once the store is restored and kmd restarted, that domain's part runs too
// and the scope's rekey completes, so rotation goes on.
func TestSchedule_UnavailableDomainDoesNotStallScope(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	want := fill(t, vault(t, r, "FTP"), "ftp", 10)
	set, err := r.SetRotation(logs.ScopeCluster, oneWeek)
	if err != nil {
		t.Fatal(err)
	}
	ftpKey := keyIDs(t, r)["FTP"]
	path := r.StorePath("FTP")
	r.Close()
	backup := filepath.Join(t.TempDir(), "FTP.db")
	if err := os.Rename(path, backup); err != nil {
		t.Fatal(err)
	}
	removeStore(t, path)

	// Due while FTP's store is gone.
	e.clock.Set(set.Next().Add(time.Minute))
	r2 := e.open()
	r2.Tick(e.clock.Now())
	others := slices.DeleteFunc(slices.Clone(domains.ClusterDomains), func(d string) bool { return d == "FTP" })
	waitActive(t, r2, others...)
	if st := status(t, r2, "FTP"); st.Status != domains.StatusFailed {
		t.Fatalf("FTP: %+v", st)
	}
	s, _ := r2.Schedule(logs.ScopeCluster)
	if !slices.Equal(s.Pending, []string{"FTP"}) {
		t.Errorf("cluster schedule %+v, want FTP pending", s)
	}
	if s.LastResult == rekey.ResultSucceeded {
		t.Errorf("cluster schedule %+v: succeeded without FTP", s)
	}
	r2.Close()

	// The operator restores the store from backup and restarts kmd.
	if err := os.Rename(backup, path); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	r3 := e.open()
	for range 3 {
		e.clock.Advance(retryInterval + time.Minute)
		r3.Tick(e.clock.Now())
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if st := status(t, r3, "FTP"); st.KeyID != ftpKey && st.Status == domains.StatusActive {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := status(t, r3, "FTP")
	s, _ = r3.Schedule(logs.ScopeCluster)
	if st.KeyID == ftpKey || len(s.Pending) != 0 || s.LastResult != rekey.ResultSucceeded {
		t.Errorf("BUG: after FTP's store was restored, FTP was never rekeyed (status %s, key %s unchanged: %v) "+
			"and the cluster schedule stays %+v for ever: the scope's scheduled rotation never fires again", st.Status, st.KeyID, st.KeyID == ftpKey, s)
	}
	checkEntries(t, vault(t, r3, "FTP"), want)
}

// TestOpen_DomainThatCannotOpen: whatever keeps one domain from opening,
// that domain is FAILED with a reason naming it and the others work.
func TestOpen_DomainThatCannotOpen(t *testing.T) {
	for _, tc := range []struct {
		name, domain string
		damage       func(t *testing.T, e *env)
		want         string
	}{
		{"store is a directory", "PSTORE", func(t *testing.T, e *env) {
			p := filepath.Join(e.dir, "stores", "PSTORE.db")
			removeStore(t, p)
			if err := os.MkdirAll(filepath.Join(p, "x"), 0o700); err != nil {
				t.Fatal(err)
			}
			// Without key files it is not "missing": it cannot be opened.
			if err := os.RemoveAll(filepath.Join(e.dir, "keys", "PSTORE")); err != nil {
				t.Fatal(err)
			}
		}, "PSTORE.db"},
		{"damaged rekey state", "RICE", func(t *testing.T, e *env) {
			db := openDB(t, filepath.Join(e.dir, "stores", "RICE.db"))
			if _, err := db.Exec(`INSERT INTO state(name, value) VALUES ('rekey', '{not json')`); err != nil {
				t.Fatal(err)
			}
		}, "rekey state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.open().Close()
			tc.damage(t, e)
			r := e.open()
			st := status(t, r, tc.domain)
			if st.Status != domains.StatusFailed || !strings.Contains(st.Error, tc.domain) || !strings.Contains(st.Error, tc.want) {
				t.Fatalf("%s: %+v, want FAILED naming %s and %q", tc.domain, st, tc.domain, tc.want)
			}
			if _, err := r.Vault(tc.domain); !errors.Is(err, domains.ErrUnavailable) {
				t.Errorf("Vault(%s) = %v, want ErrUnavailable", tc.domain, err)
			}
			if _, err := r.StartRekey(logs.ScopeCluster, []string{tc.domain}); !errors.Is(err, domains.ErrUnavailable) {
				t.Errorf("StartRekey(%s) = %v, want ErrUnavailable", tc.domain, err)
			}
			r.Tick(e.clock.Now().Add(2 * retryInterval))
			checkOthersWork(t, r, tc.domain)
			time.Sleep(50 * time.Millisecond)
			if evs := e.events.Events("", ""); len(evs) != 0 {
				t.Errorf("events %+v: no rekey was asked for", evs)
			}
		})
	}
}

// TestOpen_FirstKeyFailure: a domain whose first MK cannot be created at
// Open is FAILED and stays consistent: Open does not go on creating it
// behind the registry's back (a hidden second attempt that raises a "rekey
// failed ... retry at" event no retry follows, and that, when it succeeds,
// leaves a domain with a current key reported FAILED and unusable).
func TestOpen_FirstKeyFailure(t *testing.T) {
	e := newEnv(t)
	e.open().Close()
	removeStore(t, filepath.Join(e.dir, "stores", "SIQ.db"))
	kd := filepath.Join(e.dir, "keys", "SIQ")
	if err := os.RemoveAll(kd); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kd, nil, 0o600); err != nil { // a file where the key dir goes
		t.Fatal(err)
	}
	// The cause goes away right after Open's own attempt failed.
	var prepares atomic.Int32
	e.trace.Set(func(d, step string) {
		if d == "SIQ" && step == "phase:PREPARE" && prepares.Add(1) == 2 {
			os.Remove(kd)
		}
	})
	r := e.open()
	// Let anything Open started in the background end.
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ids, _ := e.localKeys().List("SIQ"); len(ids) > 0 {
			time.Sleep(50 * time.Millisecond)
			break
		}
	}

	st := status(t, r, "SIQ")
	if st.Status != domains.StatusFailed || !strings.Contains(st.Error, "SIQ") || !strings.Contains(st.Error, "create first key") {
		t.Fatalf("SIQ = %+v, want FAILED saying its first key could not be created", st)
	}
	if _, err := r.Vault("SIQ"); !errors.Is(err, domains.ErrUnavailable) {
		t.Errorf("Vault(SIQ) = %v, want ErrUnavailable", err)
	}
	checkOthersWork(t, r, "SIQ")
	if evs := e.events.Events("", ""); len(evs) != 0 {
		t.Errorf("BUG: events %+v raised for a domain that failed to open; no rekey was asked for "+
			"and no retry will follow (Open resumes the engines of domains that failed to open)", evs)
	}
	if ids, _ := e.localKeys().List("SIQ"); st.KeyID != "" || len(ids) != 0 {
		t.Errorf("BUG: SIQ is reported FAILED (%q) yet has current key %q and key files %v: "+
			"Open resumed the failed first-key creation in the background", st.Error, st.KeyID, ids)
	}

	// A restart once the cause is gone creates the key.
	r.Close()
	e.trace.Set(nil)
	os.Remove(kd)
	r2 := e.open()
	waitActive(t, r2, "SIQ")
	if st := status(t, r2, "SIQ"); st.KeyID == "" || !slices.Equal(e.keyFiles("SIQ"), []string{st.KeyID}) {
		t.Errorf("SIQ after restart: %+v, key files %v", st, e.keyFiles("SIQ"))
	}
}

// TestStatus_UnavailableKeyRetryTime: the retry time shown for a domain
// whose MK cannot be loaded is on the registry's clock, like every other
// time it reports, and within TickMax of it.
func TestStatus_UnavailableKeyRetryTime(t *testing.T) {
	e := newEnv(t)
	r0 := e.open()
	id := keyIDs(t, r0)["CELOG"]
	r0.Close()
	if err := os.Chmod(e.keyPath("CELOG", id), 0o640); err != nil {
		t.Fatal(err)
	}
	r := e.open()
	st := status(t, r, "CELOG")
	now := e.clock.Now()
	if st.Status != domains.StatusFailed || st.NextRetry == nil {
		t.Fatalf("CELOG = %+v, want FAILED with a retry time", st)
	}
	if st.NextRetry.Before(now.Truncate(time.Second)) || st.NextRetry.After(now.Add(e.cfg.TickMax)) {
		t.Errorf("BUG: CELOG next retry %v, want within TickMax after the registry clock's %v "+
			"(domainStatus uses time.Now() instead of cfg.Clock for an unavailable vault)", st.NextRetry, now)
	}
}
