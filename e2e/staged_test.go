package e2e_test

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// JSON shapes of `keys list -o json` and `rekey start --dry-run -o json`.

type keyRow struct {
	Domain      string     `json:"domain"`
	Node        int        `json:"node"`
	KeyID       string     `json:"key_id"`
	Fingerprint string     `json:"fingerprint"`
	State       string     `json:"state"`
	Location    string     `json:"location"`
	RemoteKeyID string     `json:"remote_key_id"`
	Created     time.Time  `json:"created"`
	Entries     int64      `json:"entries"`
	DestroyAt   *time.Time `json:"destroy_at"`
}

type keyList struct {
	Keys  []keyRow `json:"keys"`
	Total int      `json:"total"`
}

type planKey struct {
	KeyID       string `json:"key_id"`
	Fingerprint string `json:"fingerprint"`
	Location    string `json:"location"`
}

type planRow struct {
	Domain     string   `json:"domain"`
	Entries    int64    `json:"entries"`
	Action     string   `json:"action"`
	Reason     string   `json:"reason"`
	CurrentKey *planKey `json:"current_key"`
	Create     *struct {
		Location string `json:"location"`
	} `json:"create"`
	Destroy *planKey `json:"destroy"`
}

type rekeyPlan struct {
	Scope       string    `json:"scope"`
	DryRun      bool      `json:"dry_run"`
	StagePeriod string    `json:"stage_period"`
	WouldStart  bool      `json:"would_start"`
	Refused     string    `json:"refused"`
	Domains     []planRow `json:"domains"`
	Entries     int64     `json:"entries"`
	Total       int       `json:"total"`
}

// stagedRow is a status row with the staged_until field.
type stagedRow struct {
	Domain      string     `json:"domain"`
	Status      string     `json:"status"`
	KeyID       string     `json:"key_id"`
	StagedUntil *time.Time `json:"staged_until"`
}

var hexFingerprint = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (d *daemon) keys(scope string, domains ...string) keyList {
	d.t.Helper()
	args := []string{scope, "keys", "list", "-o", "json"}
	for _, dom := range domains {
		args = append(args, "--domain", dom)
	}
	var l keyList
	decodeJSON(d.t, "keys list -o json", d.must(args...), &l)
	return l
}

// keyIn returns the one key of l in state.
func keyIn(t *testing.T, l keyList, state string) keyRow {
	t.Helper()
	var found []keyRow
	for _, k := range l.Keys {
		if k.State == state {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d keys %s in %+v, want 1", len(found), state, l)
	}
	return found[0]
}

// stagedUntil reads staged_until of domain's status row (cluster scope) or
// of the node (sed scope).
func (d *daemon) stagedUntil(scope, domain string) *time.Time {
	d.t.Helper()
	var out struct {
		Domains []stagedRow `json:"domains"`
		Nodes   []stagedRow `json:"nodes"`
	}
	decodeJSON(d.t, scope+" status -o json", d.must(scope, "status", "-o", "json"), &out)
	for _, r := range append(out.Domains, out.Nodes...) {
		if r.Domain == domain || scope == "sed" {
			return r.StagedUntil
		}
	}
	d.t.Fatalf("no %s row in %s status", domain, scope)
	return nil
}

// refused runs kmctl and checks it fails with status code and one error
// line that says each of says.
func (d *daemon) refused(code int, says []string, args ...string) {
	d.t.Helper()
	stdout, stderr, got := d.kmctl(args...)
	errs := errorLines(stderr)
	if got != code || len(errs) != 1 || (code == 1 && stdout != "") {
		d.t.Errorf("kmctl %s: exit %d with %d error lines, want %d and one; stdout %q stderr:\n%s", cmdline(args), got, len(errs), code, stdout, stderr)
		return
	}
	for _, s := range says {
		if !strings.Contains(errs[0], s) {
			d.t.Errorf("kmctl %s: %q does not say %q", cmdline(args), errs[0], s)
		}
	}
}

// TestStagedRekey_StageRefuseContinue stages a rekey of S3, checks status,
// keys and entries while STAGED, that a rekey, a migration and bad
// requests are refused changing nothing, then continues it.
func TestStagedRekey_StageRefuseContinue(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	data := genEntries("st/", 200)
	d.importEntries("S3", data)
	before := d.clusterStatus().row(t, "S3").KeyID

	begin := time.Now().UTC()
	if out := d.must("cluster", "rekey", "start", "--domain", "S3", "--stage-period", "7D", "--yes", "--wait"); out != "Rekey staged: S3\n" {
		t.Fatalf("staged start --wait printed %q", out)
	}
	r := d.clusterStatus().row(t, "S3")
	until := d.stagedUntil("cluster", "S3")
	if r.Status != "STAGED" || r.KeyID == before || r.Rekey != nil || r.Error != "" || r.Entries != 200 || until == nil ||
		until.Before(begin.AddDate(0, 0, 7).Truncate(time.Second)) || until.After(time.Now().AddDate(0, 0, 7)) {
		t.Fatalf("S3 after a staged rekey: %+v, staged until %v; want STAGED under a new key for 7 days", r, until)
	}
	if table := d.must("cluster", "status"); !strings.Contains(table, "S3         STAGED") ||
		!strings.Contains(table, "retired key kept until "+until.UTC().Format("2006-01-02T15:04:05")) {
		t.Errorf("cluster status table:\n%s", table)
	}
	l := d.keys("cluster", "S3")
	retired, current := keyIn(t, l, "RETIRED"), keyIn(t, l, "CURRENT")
	if l.Total != 2 || retired.KeyID != before || retired.Entries != 0 || retired.DestroyAt == nil || !retired.DestroyAt.Equal(*until) ||
		current.KeyID != r.KeyID || current.Entries != 200 || current.DestroyAt != nil ||
		!hexFingerprint.MatchString(retired.Fingerprint) || !hexFingerprint.MatchString(current.Fingerprint) {
		t.Fatalf("keys list: %+v", l)
	}
	if files := d.keyFiles("S3"); !slices.Equal(files, sortedKeys(map[string]bool{before + ".key": true, r.KeyID + ".key": true})) {
		t.Fatalf("keys/S3 holds %v, want the retired and the current key", files)
	}
	d.checkExport("S3", data)
	d.put("S3", "written/while-staged", []byte("w"))
	data["written/while-staged"] = []byte("w")

	hint := []string{"S3 is STAGED until " + until.Format(time.RFC3339), "kmctl cluster rekey continue --domain S3", "kmctl cluster rekey cancel --domain S3"}
	d.refused(1, hint, "cluster", "rekey", "start", "--domain", "S3", "--yes")
	d.refused(1, hint, "cluster", "rekey", "start", "--yes")
	d.refused(1, hint, "cluster", "migrate", "--to-local", "--domain", "S3", "--yes")
	d.refused(1, []string{"SSO is not STAGED (it is ACTIVE); nothing to continue"}, "cluster", "rekey", "continue", "--domain", "SSO")
	d.refused(1, []string{"SSO is not STAGED (it is ACTIVE); nothing to cancel"}, "cluster", "rekey", "cancel", "--domain", "S3", "--domain", "SSO")
	d.refused(1, []string{"is CURRENT"}, "cluster", "keys", "delete", "--domain", "S3", "--fingerprint", current.Fingerprint)
	d.refused(1, []string{"list them with 'kmctl cluster keys list --domain S3'"}, "cluster", "keys", "delete", "--domain", "S3", "--fingerprint", strings.Repeat("0", 32))
	d.refused(2, []string{"32 hex digits"}, "cluster", "keys", "delete", "--domain", "S3", "--fingerprint", "abc")
	d.refused(2, []string{"Never is not allowed"}, "cluster", "rekey", "start", "--domain", "FTP", "--stage-period", "Never", "--yes")
	d.refused(2, []string{"must be positive"}, "cluster", "rekey", "start", "--domain", "FTP", "--stage-period", "0D", "--yes")
	d.refused(2, []string{"Y M W D h m s"}, "sed", "rekey", "start", "--stage-period", "7X", "--yes")
	if r := d.clusterStatus().row(t, "S3"); r.Status != "STAGED" || len(d.keyFiles("S3")) != 2 {
		t.Fatalf("refused requests changed S3: %+v %v", r, d.keyFiles("S3"))
	}
	for _, row := range d.clusterStatus().Domains {
		if row.Domain != "S3" && row.Status != "ACTIVE" {
			t.Errorf("%s is %s after refused requests", row.Domain, row.Status)
		}
	}

	if out := d.must("cluster", "rekey", "continue", "--domain", "S3", "--wait"); out != "Continue completed: S3\n" {
		t.Errorf("continue --wait printed %q", out)
	}
	r = d.waitActive("S3", 30*time.Second)
	if r.KeyID != current.KeyID {
		t.Errorf("S3 key %s after continue, want %s", r.KeyID, current.KeyID)
	}
	if files := d.keyFiles("S3"); !slices.Equal(files, []string{current.KeyID + ".key"}) {
		t.Errorf("keys/S3 holds %v after continue, want only %s.key", files, current.KeyID)
	}
	d.checkExport("S3", data)
	evs := d.events()
	for name, want := range map[string]int{"KeyManagerRekeyStaged": 1, "KeyManagerRekeyContinued": 1, "KeyManagerRekeyCompleted": 0} {
		if got := countEvents(evs, name, "S3"); got != want {
			t.Errorf("%d %s events for S3, want %d", got, name, want)
		}
	}
}

// TestStagedRekey_Kill9DuringCancel kills kmd with SIGKILL while a cancel
// re-encrypts entries back under the retired key: restarted, kmd resumes
// the cancel at once and completes it, every entry intact, the old key
// current again and the rekey's key file gone.
func TestStagedRekey_Kill9DuringCancel(t *testing.T) {
	t.Parallel()
	const n = 20000
	step := stepper(t)
	d := startKMD(t)
	entries := genEntries("c9/", n)
	d.importEntries("S3", entries)
	old := d.clusterStatus().row(t, "S3").KeyID
	d.must("cluster", "rekey", "start", "--domain", "S3", "--stage-period", "30D", "--yes", "--wait")
	staged := d.clusterStatus().row(t, "S3").KeyID
	step("staged")

	d.must("cluster", "rekey", "cancel", "--domain", "S3")
	d.put("S3", "written/during-cancel", []byte("acknowledged"))
	entries["written/during-cancel"] = []byte("acknowledged")
	r := d.waitDomain("S3", time.Minute, "cancel under way", func(r domainRow) bool {
		return r.Status != "IN_PROGRESS" || (r.Rekey != nil && r.Rekey.Done > 0)
	})
	if r.Status != "IN_PROGRESS" {
		t.Fatalf("S3 cancel over before it could be killed: %+v", r)
	}
	d.kill9()
	t.Logf("killed kmd at %d/%d entries of the cancel", r.Rekey.Done, r.Rekey.Total)
	// Both key files, unless the kill came as late as DESTROY.
	t.Logf("keys/S3 after kill -9: %v", d.keyFiles("S3"))

	d.start()
	r = d.waitActive("S3", 45*time.Second) // at once, well before the 1m retry or a tick
	step("cancel completed after the restart")
	if r.KeyID != old || r.Entries != n+1 {
		t.Errorf("S3 after the cancel: %+v; want ACTIVE under the retired key %s with %d entries", r, old, n+1)
	}
	if files := d.keyFiles("S3"); !slices.Equal(files, []string{old + ".key"}) {
		t.Errorf("keys/S3 holds %v, want only the retired key %s.key (the cancelled %s gone)", files, old, staged)
	}
	l := d.keys("cluster", "S3")
	if k := keyIn(t, l, "CURRENT"); l.Total != 1 || k.KeyID != old || k.Entries != n+1 {
		t.Errorf("keys list after the cancel: %+v", l)
	}
	d.checkExport("S3", entries)
	d.checkGets("S3", append(sample(sortedKeys(entries), 20), "written/during-cancel"), entries)
	step("checked")
	if got := countEvents(d.events(), "KeyManagerRekeyCancelled", "S3"); got != 1 {
		t.Errorf("%d KeyManagerRekeyCancelled events for S3, want 1", got)
	}
}

// TestStagedRekey_PeriodEndsWhileDown stages the SED store's rekey for a
// few seconds and stops kmd before they pass: kmd started again after the
// end of the period continues the rekey at once.
func TestStagedRekey_PeriodEndsWhileDown(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	data := genEntries("drive-", 5)
	for name, v := range data {
		d.put("SED", name, v)
	}
	old := d.sedKeyID()
	if out := d.must("sed", "rekey", "start", "--stage-period", "8s", "--yes", "--wait"); out != "Rekey staged: SED\n" {
		t.Fatalf("sed staged start printed %q", out)
	}
	until := d.stagedUntil("sed", "SED")
	n := d.sedStatus().Nodes[0]
	if n.Status != "STAGED" || until == nil || n.KeyID == old {
		t.Fatalf("sed status %+v (until %v), want STAGED under a new key", n, until)
	}
	d.stop()
	if time.Now().After(*until) {
		t.Fatalf("kmd stopped only after the stage period ended (%v); the test needs it down before", until)
	}
	if got := countEvents(d.eventsOffline(), "KeyManagerSedsRekeyContinued", "SED"); got != 0 {
		t.Fatalf("continued before kmd stopped: %d events", got)
	}
	if files := d.keyFiles("SED"); len(files) != 2 {
		t.Fatalf("keys/SED while down: %v, want both keys", files)
	}
	// Down until the period is over (a wall-clock moment, not a bound).
	time.Sleep(time.Until(until.Add(time.Second)))
	d.start()
	// At once: well before a scheduler tick (1m).
	ok := waitUntil(30*time.Second, func() bool {
		out, _, code := d.kmctlQuiet(nil, "sed", "status", "-o", "json")
		var ss sedStatus
		return code == 0 && decodeQuiet(out, &ss) && len(ss.Nodes) == 1 && ss.Nodes[0].Status == "LOCAL"
	})
	if !ok {
		t.Fatalf("SED not continued after the start: %+v", d.sedStatus())
	}
	if files := d.keyFiles("SED"); !slices.Equal(files, []string{n.KeyID + ".key"}) {
		t.Errorf("keys/SED holds %v, want only %s.key", files, n.KeyID)
	}
	d.checkExport("SED", data)
	evs := d.events()
	if got := countEvents(evs, "KeyManagerSedsRekeyStaged", "SED"); got != 1 {
		t.Errorf("%d staged events", got)
	}
	var cont []event
	for _, e := range evs {
		if e.Name == "KeyManagerSedsRekeyContinued" {
			cont = append(cont, e)
		}
	}
	if len(cont) != 1 || cont[0].Scope != "sed" || cont[0].Node != 1 || !strings.Contains(cont[0].Message, "automatically") {
		t.Errorf("continued events %+v, want one, automatic", cont)
	}
}

// dataDirHashes maps every file and directory under dir to its mode, and
// a regular file also to its size, modification time and SHA-256.
func dataDirHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		h := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h += fmt.Sprintf(" %d %s %x", len(b), fi.ModTime().UTC().Format(time.RFC3339Nano), sha256.Sum256(b))
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStagedRekey_DryRunChangesNothing runs dry runs, table and JSON, of
// both scopes, staged and not, and compares every file of the data dir
// (names, modes, mtimes, contents: SQLite's -wal and -shm files too)
// before and after, byte for byte. Then it
// deletes a STAGED domain's retired key by its fingerprint.
func TestStagedRekey_DryRunChangesNothing(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	d.importEntries("S3", genEntries("s3/", 30))
	d.importEntries("FTP", genEntries("ftp/", 4))
	d.put("SED", "drive-1", []byte("k"))
	d.must("cluster", "rekey", "start", "--domain", "SSO", "--stage-period", "7D", "--yes", "--wait")
	// What a read does to SQLite's shared-memory index (read marks) a
	// status has done already, as before any dry run an operator makes.
	d.must("cluster", "status")
	d.must("sed", "status")
	keysBefore, sedBefore, eventsBefore := d.keyIDs(), d.sedKeyID(), d.events()
	before := dataDirHashes(t, d.dataDir)

	table := d.must("cluster", "rekey", "start", "--dry-run")
	for _, s := range []string{"Dry run of a cluster rekey: nothing was changed.", "Total: 17 domain(s), 34 entries",
		"Would start: no: SSO is STAGED until"} {
		if !strings.Contains(table, s) {
			t.Errorf("dry run table does not say %q:\n%s", s, table)
		}
	}
	var p rekeyPlan
	decodeJSON(t, "dry run -o json", d.must("cluster", "rekey", "start", "--dry-run", "--domain", "S3", "--domain", "FTP",
		"--stage-period", "2W", "-o", "json"), &p)
	if !p.DryRun || !p.WouldStart || p.Refused != "" || p.StagePeriod != "2W" || p.Total != 2 || p.Entries != 34 || len(p.Domains) != 2 {
		t.Fatalf("plan %+v", p)
	}
	for _, row := range p.Domains {
		id := keysBefore[row.Domain]
		if row.Action != "rekey" || row.CurrentKey == nil || row.CurrentKey.KeyID != id || row.CurrentKey.Location != "Local" ||
			!hexFingerprint.MatchString(row.CurrentKey.Fingerprint) || row.Create == nil || row.Create.Location != "Local" ||
			row.Destroy == nil || row.Destroy.KeyID != id {
			t.Errorf("%s plan %+v, want a rekey making a local key and destroying %s", row.Domain, row, id)
		}
	}
	decodeJSON(t, "sso dry run -o json", d.must("cluster", "rekey", "start", "--dry-run", "--domain", "SSO", "-o", "json"), &p)
	if p.WouldStart || len(p.Domains) != 1 || p.Domains[0].Action != "refuse" || !strings.Contains(p.Refused, "kmctl cluster rekey continue --domain SSO") {
		t.Errorf("SSO plan %+v, want refused while STAGED", p)
	}
	if out := d.must("sed", "rekey", "start", "--dry-run", "--stage-period", "1D"); !strings.Contains(out, "Would start: yes") {
		t.Errorf("sed dry run:\n%s", out)
	}

	after := dataDirHashes(t, d.dataDir)
	if !reflect.DeepEqual(before, after) {
		for _, p := range sortedKeys(after) {
			if before[p] != after[p] {
				t.Errorf("%s: %q before the dry runs, %q after", p, before[p], after[p])
			}
		}
		for _, p := range sortedKeys(before) {
			if _, ok := after[p]; !ok {
				t.Errorf("%s removed by the dry runs", p)
			}
		}
	}
	if !reflect.DeepEqual(d.keyIDs(), keysBefore) || d.sedKeyID() != sedBefore || !reflect.DeepEqual(d.events(), eventsBefore) {
		t.Error("a dry run changed keys or events")
	}

	// SSO's retired key, deleted by its fingerprint: that continues SSO.
	retired := keyIn(t, d.keys("cluster", "SSO"), "RETIRED")
	if out := d.must("cluster", "keys", "delete", "--domain", "SSO", "--fingerprint", strings.ToUpper(retired.Fingerprint)); out !=
		fmt.Sprintf("Deleted key %s (fingerprint %s) of SSO\n", retired.KeyID, retired.Fingerprint) {
		t.Errorf("keys delete printed %q", out)
	}
	r := d.clusterStatus().row(t, "SSO")
	if r.Status != "ACTIVE" || slices.Contains(d.keyFiles("SSO"), retired.KeyID+".key") || len(d.keyFiles("SSO")) != 1 {
		t.Errorf("SSO after its retired key was deleted: %+v, files %v", r, d.keyFiles("SSO"))
	}
	d.refused(1, []string{"no master key of SSO has fingerprint " + retired.Fingerprint}, "cluster", "keys", "delete", "--domain", "SSO", "--fingerprint", retired.Fingerprint)
}

// TestStagedRekey_SED runs the sed scope's commands: a staged rekey, keys
// list, cancel, continue, and keys delete of the retired key.
func TestStagedRekey_SED(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	data := genEntries("sed-", 8)
	for name, v := range data {
		d.put("SED", name, v)
	}
	first := d.sedKeyID()
	d.refused(1, []string{"SED is not STAGED (it is LOCAL); nothing to continue"}, "sed", "rekey", "continue")
	stage := func() (retired, current keyRow) {
		t.Helper()
		if out := d.must("sed", "rekey", "start", "--stage-period", "1D", "--yes", "--wait"); out != "Rekey staged: SED\n" {
			t.Fatalf("sed staged start printed %q", out)
		}
		if n := d.sedStatus().Nodes[0]; n.Status != "STAGED" {
			t.Fatalf("sed status %+v, want STAGED", n)
		}
		if table := d.must("sed", "status"); !strings.Contains(table, " 1    STAGED  Local ") {
			t.Errorf("sed status table:\n%s", table)
		}
		l := d.keys("sed")
		retired, current = keyIn(t, l, "RETIRED"), keyIn(t, l, "CURRENT")
		if retired.Domain != "SED" || retired.Node != 1 || current.Entries != int64(len(data)) || retired.DestroyAt == nil {
			t.Fatalf("sed keys list %+v", l)
		}
		if table := d.must("sed", "keys", "list"); !strings.Contains(table, retired.Fingerprint) || !strings.Contains(table, "Total: 2") {
			t.Errorf("sed keys list table:\n%s", table)
		}
		d.refused(1, []string{"SED is STAGED until", "'kmctl sed rekey continue' or 'kmctl sed rekey cancel'"}, "sed", "rekey", "start", "--yes")
		return retired, current
	}

	retired, _ := stage()
	if retired.KeyID != first {
		t.Fatalf("retired key %s, want %s", retired.KeyID, first)
	}
	if out := d.must("sed", "rekey", "cancel", "--wait"); out != "Cancel completed: SED\n" {
		t.Errorf("sed cancel printed %q", out)
	}
	if n := d.sedStatus().Nodes[0]; n.Status != "LOCAL" || n.KeyID != first {
		t.Fatalf("SED after cancel %+v, want LOCAL under %s", n, first)
	}
	if files := d.keyFiles("SED"); !slices.Equal(files, []string{first + ".key"}) {
		t.Errorf("keys/SED after cancel: %v", files)
	}

	_, current := stage()
	if out := d.must("sed", "rekey", "continue", "--wait"); out != "Continue completed: SED\n" {
		t.Errorf("sed continue printed %q", out)
	}
	if files := d.keyFiles("SED"); !slices.Equal(files, []string{current.KeyID + ".key"}) {
		t.Errorf("keys/SED after continue: %v", files)
	}

	retired, current = stage()
	d.refused(1, []string{"is CURRENT"}, "sed", "keys", "delete", "--fingerprint", current.Fingerprint)
	d.refused(2, []string{"unknown flag: --domain"}, "sed", "keys", "delete", "--domain", "SED", "--fingerprint", retired.Fingerprint)
	d.must("sed", "keys", "delete", "--fingerprint", retired.Fingerprint)
	if n := d.sedStatus().Nodes[0]; n.Status != "LOCAL" || n.KeyID != current.KeyID {
		t.Fatalf("SED after its retired key was deleted %+v", n)
	}
	if files := d.keyFiles("SED"); !slices.Equal(files, []string{current.KeyID + ".key"}) {
		t.Errorf("keys/SED after keys delete: %v", files)
	}
	d.checkExport("SED", data)
	evs := d.events()
	for name, want := range map[string]int{"KeyManagerSedsRekeyStaged": 3, "KeyManagerSedsRekeyCancelled": 1, "KeyManagerSedsRekeyContinued": 2} {
		if got := countEvents(evs, name, "SED"); got != want {
			t.Errorf("%d %s events, want %d", got, name, want)
		}
	}
}
