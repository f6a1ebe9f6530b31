package e2e_test

import (
	"slices"
	"testing"
	"time"
)

// TestKill9DuringRekey kills kmd with SIGKILL in the middle of a rekey and
// checks that, restarted, it resumes the rekey at once and completes it
// with every entry intact and only the new key file left.
func TestKill9DuringRekey(t *testing.T) {
	t.Parallel()
	const n = 20000
	step := stepper(t)
	d := startKMD(t)
	entries := genEntries("k9/", n)
	d.importEntries("S3", entries)
	step("imported")
	keyBefore := d.clusterStatus().row(t, "S3").KeyID

	d.must("cluster", "rekey", "start", "--domain", "S3", "--yes")
	r := d.waitDomain("S3", time.Minute, "rekey under way", func(r domainRow) bool {
		return r.Status != "IN_PROGRESS" || (r.Rekey != nil && r.Rekey.Done > 0)
	})
	if r.Status != "IN_PROGRESS" {
		t.Fatalf("S3 rekey over before it could be killed: %+v", r)
	}
	d.kill9()
	t.Logf("killed kmd at %d/%d entries", r.Rekey.Done, r.Rekey.Total)
	if files := d.keyFiles("S3"); len(files) != 2 {
		t.Logf("keys/S3 after kill -9: %v", files)
	}

	// Killed again while the resumed rekey runs.
	d.start()
	if r := d.clusterStatus().row(t, "S3"); r.Status == "IN_PROGRESS" {
		d.kill9()
		t.Logf("killed kmd again at %+v", r.Rekey)
		d.start()
	}
	// At once: well before the retry interval (1m) or a scheduler tick.
	r = d.waitActive("S3", 45*time.Second)
	step("rekey completed after the restart")
	if r.KeyID == keyBefore || r.Entries != n || r.Error != "" {
		t.Errorf("S3 after restart: %+v; want ACTIVE under a new key with %d entries", r, n)
	}
	names := d.list("S3")
	if len(names) != n || !slices.Equal(names, sortedKeys(entries)) {
		t.Errorf("entry list S3: %d names, want the %d imported", len(names), n)
	}
	step("listed")
	// Every value, through export, and a sample through entry get.
	d.checkExport("S3", entries)
	step("exported")
	d.checkGets("S3", sample(sortedKeys(entries), 50), entries)
	step("50 entries read")
	if files := d.keyFiles("S3"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
		t.Errorf("keys/S3 holds %v, want only %s.key", files, r.KeyID)
	}
	if got := countEvents(d.events(), "KeyManagerRekeyCompleted", "S3"); got != 1 {
		t.Errorf("%d KeyManagerRekeyCompleted events for S3, want 1", got)
	}
	for _, o := range d.clusterStatus().Domains {
		if o.Status != "ACTIVE" {
			t.Errorf("%s is %s after the restart, want ACTIVE", o.Domain, o.Status)
		}
	}
}
