package e2e_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// TestFailedRekeyRecovery corrupts one entry's ciphertext so that S3's
// rekey fails, checks what the operator sees (exit status, status, events,
// the event hook) and that every other entry stays readable and writable,
// then removes the bad entry and checks that the retry completes the rekey.
func TestFailedRekeyRecovery(t *testing.T) {
	t.Parallel()
	d := newDaemon(t, kmdOptions{})
	hookFile := filepath.Join(d.root, "hook.jsonl")
	d.opts.args = []string{"--retry-interval", "2s", "--event-hook", "cat >> " + hookFile}
	d.start()

	want := genEntries("s3/", 49)
	want["victim"] = []byte("the entry whose ciphertext is damaged")
	d.importEntries("S3", want)
	ftp := genEntries("ftp/", 10)
	d.importEntries("FTP", ftp)
	d.stop()

	corrupt(t, filepath.Join(d.dataDir, "stores", "S3.db"), "victim")
	delete(want, "victim")

	d.start()
	keyBefore := d.clusterStatus().row(t, "S3").KeyID
	ftpKey := d.clusterStatus().row(t, "FTP").KeyID
	started := time.Now().UTC().Add(-time.Second)

	_, stderr, code := d.kmctl("cluster", "rekey", "start", "--domain", "S3", "--yes", "--wait")
	if code != 1 || !strings.Contains(stderr, "S3") || !strings.Contains(stderr, "victim") {
		t.Errorf("rekey start --wait of S3 with a damaged entry: exit %d, want 1 naming S3 and victim; stderr:\n%s", code, stderr)
	}
	if len(errorLines(stderr)) != 1 {
		t.Errorf("want one kmctl: error: line; stderr:\n%s", stderr)
	}

	// Between two retries, 2s apart, S3 is FAILED.
	r := d.waitDomain("S3", 30*time.Second, "FAILED", func(r domainRow) bool { return r.Status == "FAILED" })
	if !strings.Contains(r.Error, "victim") || r.NextRetry == nil || r.NextRetry.Before(started) || r.Rekey != nil {
		t.Errorf("S3 status after the failure: %+v; want an error naming victim, next_retry set, rekey null", r)
	}
	if r.Entries != 50 {
		t.Errorf("S3 entries %d while FAILED, want 50", r.Entries)
	}
	cs := d.clusterStatus()
	for _, o := range cs.Domains {
		if o.Domain != "S3" && o.Status != "ACTIVE" {
			t.Errorf("%s is %s while S3 failed, want ACTIVE", o.Domain, o.Status)
		}
	}
	if got := cs.row(t, "FTP").KeyID; got != ftpKey {
		t.Errorf("FTP key changed")
	}
	tableShows(t, d, "S3", "FAILED", true)

	var failed event
	for _, e := range d.events() {
		if e.Name == "KeyManagerRekeyFailed" && e.Domain == "S3" {
			failed = e
			break
		}
	}
	if failed.Attempt < 1 || failed.Scope != "cluster" || !strings.Contains(failed.Error+failed.Message, "victim") {
		t.Errorf("first KeyManagerRekeyFailed event of S3: %+v; want scope cluster, attempt >= 1, naming victim", failed)
	}

	// Every other entry stays readable; the domain stays writable.
	d.checkGets("S3", sortedKeys(want), want)
	want["written-while-failed"] = []byte("new value")
	d.put("S3", "written-while-failed", want["written-while-failed"])
	d.put("S3", "s3/000001", []byte("replaced while failed"))
	want["s3/000001"] = []byte("replaced while failed")
	d.checkGets("S3", []string{"written-while-failed", "s3/000001"}, want)
	if _, _, code := d.kmctl("entry", "get", "S3", "victim"); code != 1 {
		t.Errorf("entry get of the damaged entry: exit %d, want 1", code)
	}
	d.checkExport("FTP", ftp)

	// A whole-scope rekey meanwhile: every other domain completes, --wait
	// fails naming S3, and the scope's last result is failed.
	before := d.keyIDs()
	_, stderr, code = startRetrying(d, "cluster", "rekey", "start", "--yes", "--wait")
	if code != 1 || !strings.Contains(stderr, "S3") || !strings.Contains(stderr, "victim") {
		t.Errorf("whole-scope rekey start --wait with S3 damaged: exit %d, want 1 naming S3 and victim; stderr:\n%s", code, stderr)
	}
	after := d.keyIDs()
	for _, dom := range clusterDomains {
		if dom != "S3" && after[dom] == before[dom] {
			t.Errorf("%s kept its key in the whole-scope rekey", dom)
		}
	}
	d.checkExport("FTP", ftp)
	if v := d.rekeyView("cluster"); v.LastResult != "failed" || v.RekeyTime != "1970-01-01T00:00:00Z" {
		t.Errorf("cluster rekey view after a whole-scope rekey with S3 failing: %+v; want last_result failed, the clock not reset", v)
	}

	d.must("entry", "delete", "S3", "victim")
	r = d.waitActive("S3", time.Minute)
	if r.KeyID == keyBefore || r.Error != "" || r.NextRetry != nil || r.Entries != int64(len(want)) {
		t.Errorf("S3 after the retry: %+v; want a new key, no error, no retry, %d entries", r, len(want))
	}
	d.checkExport("S3", want)
	// S3 was the last of the whole-scope rekey: it is complete now.
	if v := d.rekeyView("cluster"); v.LastResult != "succeeded" || v.RekeyTime == "1970-01-01T00:00:00Z" {
		t.Errorf("cluster rekey view once S3 completed too: %+v; want last_result succeeded, the clock reset", v)
	}
	if files := d.keyFiles("S3"); !slices.Equal(files, []string{r.KeyID + ".key"}) {
		t.Errorf("keys/S3 holds %v, want only %s.key", files, r.KeyID)
	}
	evs := d.events()
	if n := countEvents(evs, "KeyManagerRekeyCompleted", "S3"); n != 1 {
		t.Errorf("%d KeyManagerRekeyCompleted events for S3, want 1", n)
	}
	attempts := 0
	for _, e := range evs {
		if e.Name == "KeyManagerRekeyFailed" && e.Domain == "S3" {
			if e.Attempt <= attempts {
				t.Errorf("KeyManagerRekeyFailed attempts not increasing: %d after %d", e.Attempt, attempts)
			}
			attempts = e.Attempt
		}
	}

	// The hook got the events as JSON lines.
	var hooked []event
	if !waitUntil(20*time.Second, func() bool {
		hooked = readHook(t, hookFile)
		return countEvents(hooked, "KeyManagerRekeyFailed", "S3") >= 1 && countEvents(hooked, "KeyManagerRekeyCompleted", "S3") == 1
	}) {
		b, _ := os.ReadFile(hookFile)
		t.Errorf("event hook did not get the S3 failed and completed events:\n%s", b)
	}
	for _, e := range hooked {
		if e.Name == "KeyManagerRekeyFailed" && (e.Attempt < 1 || !strings.Contains(e.Error+e.Message, "victim")) {
			t.Errorf("hooked failed event %+v: want an attempt and the error", e)
		}
	}
}

// startRetrying runs a rekey start, again while it is refused because a
// retry of a failed rekey happens to be running.
func startRetrying(d *daemon, args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	for range 50 {
		stdout, stderr, code = d.kmctl(args...)
		if code != 1 || !strings.Contains(stderr, "already in progress") {
			return
		}
		time.Sleep(pollEvery)
	}
	return
}

// corrupt replaces the ciphertext of one entry of a stopped kmd's store.
func corrupt(t *testing.T, store, name string) {
	t.Helper()
	db, err := sql.Open("sqlite", store)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(`UPDATE entries SET ct = X'0102030405' WHERE name = ?`, name)
	if err != nil {
		t.Fatalf("corrupt %s in %s: %v", name, store, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("corrupt %s in %s: %d rows, want 1", name, store, n)
	}
}

// readHook parses the event hook's output: one JSON event a line.
func readHook(t *testing.T, path string) []event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var evs []event
	for i, l := range lines(string(b)) {
		var e event
		dec := json.NewDecoder(bytes.NewReader([]byte(l)))
		if err := dec.Decode(&e); err != nil || dec.More() {
			t.Errorf("event hook line %d is not one JSON event: %q", i+1, l)
			continue
		}
		evs = append(evs, e)
	}
	return evs
}

// tableShows checks that the cluster status table shows domain with
// status, with an error or without (polling: a retry may be running when it
// is asked).
func tableShows(t *testing.T, d *daemon, domain, status string, withError bool) {
	t.Helper()
	var row string
	if !waitUntil(20*time.Second, func() bool {
		out, _, code := d.kmctlQuiet(nil, "cluster", "status")
		if code != 0 {
			return false
		}
		ls := lines(out)
		for _, l := range ls[min(2, len(ls)):] {
			c := tableRow(ls[0], l)
			if c["Domain"] == domain {
				row = l
				return c["Status"] == status && (c["Error Info(if any)"] != "") == withError
			}
		}
		return false
	}) {
		t.Errorf("cluster status table row of %s: %q, want %s (with an error: %v)", domain, row, status, withError)
	}
}
