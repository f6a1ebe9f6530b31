package e2e_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// This file sorts first so that its test, the longest, starts first.

// TestRekeyLargeDomain rekeys a large domain: a second start while it runs
// is refused, SIGTERM in the middle of it stops kmd cleanly and at once,
// and after a restart the rekey resumes and completes with every entry.
func TestRekeyLargeDomain(t *testing.T) {
	t.Parallel()
	n := 100000
	if testing.Short() {
		n = 20000
	}
	step := stepper(t)
	d := startKMD(t)
	entries := genEntries("big/", n)
	d.importEntries("S3", entries) // one request
	step(fmt.Sprintf("imported %d entries", n))
	drives := genEntries("drive/", 5000)
	d.importEntries("SED", drives)
	before := d.clusterStatus()
	if got := before.row(t, "S3").Entries; got != int64(n) {
		t.Fatalf("S3 holds %d entries after the import, want %d", got, n)
	}
	keyBefore := before.row(t, "S3").KeyID

	t.Run("second sed start refused", func(t *testing.T) {
		d := d.in(t)
		sedKey := d.sedKeyID()
		d.must("sed", "rekey", "start", "--yes")
		_, stderr, code := d.kmctl("sed", "rekey", "start", "--yes")
		if code != 1 || !strings.Contains(stderr, "rekey already in progress for SED") {
			t.Errorf("second sed rekey start: exit %d, want 1 with %q; stderr:\n%s", code, "rekey already in progress for SED", stderr)
		}
		if !waitSEDKeyChange(d, sedKey, 2*time.Minute) {
			t.Fatalf("the SED rekey did not complete")
		}
		if n := d.sedStatus().Nodes[0]; n.Entries != 5000 {
			t.Errorf("SED holds %d entries after its rekey, want 5000", n.Entries)
		}
		d.checkGets("SED", sample(sortedKeys(drives), 10), drives)
	})

	d.must("cluster", "rekey", "start", "--domain", "S3", "--yes")
	t.Run("second start refused", func(t *testing.T) {
		d := d.in(t)
		_, stderr, code := d.kmctl("cluster", "rekey", "start", "--domain", "S3", "--yes")
		if code != 1 || !strings.Contains(stderr, "rekey already in progress for S3") {
			t.Errorf("second rekey start of S3: exit %d, want 1 with %q; stderr:\n%s", code, "rekey already in progress for S3", stderr)
		}
		// A whole-scope start is refused too, and starts no other domain.
		_, stderr, code = d.kmctl("cluster", "rekey", "start", "--yes")
		if code != 1 || !strings.Contains(stderr, "rekey already in progress for S3") {
			t.Errorf("whole-scope rekey start while S3 rekeys: exit %d, want 1 with %q; stderr:\n%s", code, "rekey already in progress for S3", stderr)
		}
		for _, r := range d.clusterStatus().Domains {
			if r.Domain != "S3" && (r.Status != "ACTIVE" || r.KeyID != before.row(t, r.Domain).KeyID) {
				t.Errorf("a refused whole-scope start touched %s: %+v", r.Domain, r)
			}
		}
	})

	t.Run("SIGTERM mid-rekey", func(t *testing.T) {
		d := d.in(t)
		r := d.waitDomain("S3", time.Minute, "rekey under way", func(r domainRow) bool {
			return r.Status != "IN_PROGRESS" || (r.Rekey != nil && r.Rekey.Done > 0)
		})
		if r.Status != "IN_PROGRESS" || r.Rekey.Done >= r.Rekey.Total {
			t.Fatalf("S3 rekey over before SIGTERM could interrupt it: %+v", r)
		}
		if r.Rekey.Total != int64(n) || r.Entries != int64(n) || r.Rekey.Started.IsZero() || r.KeyID == "" {
			t.Errorf("S3 status during the rekey: %+v; want total %d, %d entries, a start time and a key", r, n, n)
		}
		tableShows(t, d, "S3", "IN_PROGRESS", false)
		took := d.stop()
		t.Logf("SIGTERM at %d/%d entries: kmd exited in %v", r.Rekey.Done, r.Rekey.Total, took)
		if took > 10*time.Second {
			t.Errorf("kmd took %v to exit after SIGTERM during a rekey, want under 10s", took)
		}
		if evs := countEvents(d.eventsOffline(), "KeyManagerRekeyCompleted", "S3"); evs != 0 {
			t.Fatalf("S3 rekey completed before SIGTERM; the test did not interrupt it")
		}
	})

	t.Run("resumes after restart, writes kept", func(t *testing.T) {
		d := d.in(t)
		d.start()
		// Writes while the resumed rekey runs: replaced, new and deleted
		// entries, spread over the domain.
		r := d.clusterStatus().row(t, "S3")
		t.Logf("after restart S3 is %s, rekey %+v", r.Status, r.Rekey)
		names := sortedKeys(entries)
		updates := map[string][]byte{}
		for i, name := range sample(names, 20) {
			if i%2 == 0 {
				updates[name] = []byte("updated during the rekey " + name)
			} else {
				updates[fmt.Sprintf("new/%03d", i)] = []byte("added during the rekey")
			}
		}
		d.importEntries("S3", updates)
		maps.Copy(entries, updates)
		for i := range 5 {
			name := names[7+i*len(names)/5] // none of those updated
			d.must("entry", "delete", "S3", name)
			delete(entries, name)
		}
		d.put("S3", names[0], []byte("put during the rekey"))
		entries[names[0]] = []byte("put during the rekey")
		if r := d.clusterStatus().row(t, "S3"); r.Status != "IN_PROGRESS" {
			t.Logf("the resumed rekey ended before the writes did (%s): they did not race it", r.Status)
		}

		step("restarted, written")
		r = d.waitActive("S3", 3*time.Minute)
		step("resumed rekey completed")
		if r.KeyID == keyBefore || r.Entries != int64(len(entries)) {
			t.Errorf("S3 after the resumed rekey: %+v; want a key other than %s and %d entries", r, keyBefore, len(entries))
		}
		if got := d.list("S3"); !slices.Equal(got, sortedKeys(entries)) {
			t.Errorf("entry list S3: %d names, want %d", len(got), len(entries))
		}
		step("listed")
		check := append(sample(sortedKeys(entries), 50), sortedKeys(updates)...)
		check = append(check, names[0])
		d.checkGets("S3", check, entries)
		if got := countEvents(d.events(), "KeyManagerRekeyCompleted", "S3"); got != 1 {
			t.Errorf("%d KeyManagerRekeyCompleted events for S3, want 1", got)
		}
		if files := d.keyFiles("S3"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
			t.Errorf("keys/S3 holds %v, want only %s.key", files, r.KeyID)
		}
	})
}
