package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// Bounds of the PyKMIP steps.
const (
	// pykmip-up.sh waits up to 60 s for the port; a first run also installs
	// python3-pykmip with apt-get.
	pykUpTimeout   = 5 * time.Minute
	pykDownTimeout = 1 * time.Minute
	// kmd retries a failed rekey every --retry-interval (3s here): once
	// the server is back, the retry should be done within pykRetryLatency;
	// the poll waits longer so that a late retry is reported as late.
	pykRetryInterval  = 3 * time.Second
	pykRetryLatency   = 20 * time.Second
	pykRecoverTimeout = 75 * time.Second
)

// pykServer is a real PyKMIP server started by the project's
// scripts/pykmip-up.sh in dir.
type pykServer struct {
	t    *testing.T
	repo string // the module root
	dir  string
	env  map[string]string // PYKMIP_ADDR, PYKMIP_CA, ...
	host string
	port string
}

// startPyKMIP runs scripts/pykmip-up.sh in a new directory and stops the
// server (pykmip-down.sh) when the test ends.
func startPyKMIP(t *testing.T) *pykServer {
	t.Helper()
	repo, err := filepath.Abs("..") // the tests run in e2e/
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kmde2e-pykmip")
	if err != nil {
		t.Fatal(err)
	}
	s := &pykServer{t: t, repo: repo, dir: dir}
	t.Cleanup(func() { // runs after pykmip-down.sh, registered below
		if t.Failed() && os.Getenv("E2E_KEEP") != "" {
			t.Logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PyKMIP server log (%s/server.log):\n%s", dir, tail(filepath.Join(dir, "server.log"), 30))
		}
		s.down()
	})
	s.up("auto")
	return s
}

// up runs pykmip-up.sh DIR PORT and parses the KEY=VALUE lines it prints.
func (s *pykServer) up(port string) {
	s.t.Helper()
	stdout, stderr, err := s.script(pykUpTimeout, "pykmip-up.sh", s.dir, port)
	if err != nil {
		s.t.Fatalf("scripts/pykmip-up.sh %s %s: %v\nstderr:\n%s\nserver log:\n%s", s.dir, port, err, stderr,
			tail(filepath.Join(s.dir, "server.log"), 20))
	}
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && strings.HasPrefix(k, "PYKMIP_") {
			env[k] = v
		}
	}
	for _, k := range []string{"PYKMIP_ADDR", "PYKMIP_CA", "PYKMIP_CLIENT_CERT", "PYKMIP_CLIENT_KEY"} {
		if env[k] == "" {
			s.t.Fatalf("scripts/pykmip-up.sh printed no %s; stdout:\n%s\nstderr:\n%s", k, stdout, stderr)
		}
	}
	host, p, err := net.SplitHostPort(env["PYKMIP_ADDR"])
	if err != nil {
		s.t.Fatalf("PYKMIP_ADDR=%s: %v", env["PYKMIP_ADDR"], err)
	}
	if port != "auto" && p != port {
		s.t.Fatalf("pykmip-up.sh %s %s: the server listens on port %s", s.dir, port, p)
	}
	s.env, s.host, s.port = env, host, p
	s.t.Logf("PyKMIP listening on %s (started in %s ms)", env["PYKMIP_ADDR"], env["PYKMIP_START_MS"])
}

// down stops the server with pykmip-down.sh (idempotent).
func (s *pykServer) down() {
	s.t.Helper()
	if _, stderr, err := s.script(pykDownTimeout, "pykmip-down.sh", s.dir); err != nil {
		s.t.Errorf("scripts/pykmip-down.sh %s: %v\n%s", s.dir, err, stderr)
	}
}

// script runs bash scripts/NAME args... with a deadline.
func (s *pykServer) script(limit time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(s.repo, "scripts", name)}, args...)...)
	cmd.Dir = s.repo
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// The server it starts redirects its own output, but never let a
	// descendant that kept the pipes hang the test.
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("not done within %v: %w", limit, err)
	}
	return out.String(), errb.String(), err
}

// query runs one read-only query on PyKMIP's database (SQLAlchemy, see
// pykObject) and closes it at once, so that the server's writes are never
// blocked by the test.
func (s *pykServer) query(scan func(*sql.Rows) error, q string, args ...any) {
	s.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, "pykmip.db")+"?mode=ro")
	if err != nil {
		s.t.Fatalf("open PyKMIP database: %v", err)
	}
	defer db.Close()
	rows, err := db.Query(q, args...)
	if err != nil {
		s.t.Fatalf("PyKMIP database: %s: %v (tables: %v)", q, err, s.tables(db))
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			s.t.Fatalf("PyKMIP database: %s: %v", q, err)
		}
	}
	if err := rows.Err(); err != nil {
		s.t.Fatalf("PyKMIP database: %s: %v", q, err)
	}
}

// tables names the tables of the database, for a failure message.
func (s *pykServer) tables(db *sql.DB) []string {
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		return []string{err.Error()}
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	return names
}

// pykObject is one managed object in PyKMIP's database.
//
// The schema is PyKMIP 0.10's (Debian python3-pykmip 0.10.0), inspected with
// SELECT sql FROM sqlite_master: managed_objects(uid INTEGER PRIMARY KEY
// AUTOINCREMENT, object_type, class_type, value VARBINARY, ...) holds every
// object, its key material in value; crypto_objects(uid, state, ...) and
// keys/symmetric_keys(uid) extend it by joined-table inheritance;
// managed_object_names(mo_uid, name, ...) holds the Name attributes. The
// KMIP Unique Identifier is the decimal uid. Destroy deletes the object's
// rows (there is no "destroyed" state row left behind), so a destroyed key
// is a uid that is no longer in managed_objects.
type pykObject struct {
	uid      string
	class    string
	state    int64 // KMIP State: 1 pre-active, 2 active, 3 deactivated, ...
	names    []string
	material []byte
}

// objects lists every managed object of the server.
func (s *pykServer) objects() map[string]pykObject {
	s.t.Helper()
	objs := map[string]pykObject{}
	s.query(func(r *sql.Rows) error {
		var uid int64
		var class sql.NullString
		var state sql.NullInt64
		var value []byte
		if err := r.Scan(&uid, &class, &state, &value); err != nil {
			return err
		}
		id := strconv.FormatInt(uid, 10)
		objs[id] = pykObject{uid: id, class: class.String, state: state.Int64, material: value}
		return nil
	}, `SELECT m.uid, m.class_type, c.state, m.value
	      FROM managed_objects m LEFT JOIN crypto_objects c ON c.uid = m.uid`)
	s.query(func(r *sql.Rows) error {
		var uid int64
		var name sql.NullString
		if err := r.Scan(&uid, &name); err != nil {
			return err
		}
		id := strconv.FormatInt(uid, 10)
		if o, ok := objs[id]; ok {
			o.names = append(o.names, name.String)
			objs[id] = o
		}
		return nil
	}, `SELECT mo_uid, name FROM managed_object_names`)
	return objs
}

// object returns the managed object with KMIP unique identifier uid.
func (s *pykServer) object(uid string) (pykObject, bool) {
	s.t.Helper()
	if _, err := strconv.ParseInt(uid, 10, 64); err != nil {
		s.t.Fatalf("remote_key_id %q is not a PyKMIP unique identifier (PyKMIP numbers its objects 1, 2, ...)", uid)
	}
	o, ok := s.objects()[uid]
	return o, ok
}

// getCount counts the Gets of the object uid in the server's log (PyKMIP
// 0.10 logs "Getting a SymmetricKey with ID: N" for each).
func (s *pykServer) getCount(uid string) int {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return bytes.Count(b, []byte("Getting a SymmetricKey with ID: "+uid+"\n"))
}

// pykSED is the node row of `sed status -o json`.
func pykSED(d *daemon) nodeRow { d.t.Helper(); return d.sedStatus().Nodes[0] }

// pykWaitSED polls `sed status -o json` until cond holds and returns the
// row; it fails the test after timeout.
func pykWaitSED(d *daemon, timeout time.Duration, what string, cond func(nodeRow) bool) nodeRow {
	d.t.Helper()
	var last nodeRow
	ok := waitUntil(timeout, func() bool {
		out, _, code := d.kmctlQuiet(nil, "sed", "status", "-o", "json")
		var ss sedStatus
		if code != 0 || !decodeQuiet(out, &ss) || len(ss.Nodes) != 1 {
			return false
		}
		last = ss.Nodes[0]
		return cond(last)
	})
	if !ok {
		d.t.Fatalf("SED: %s not reached within %v; last status: %+v", what, timeout, last)
	}
	return last
}

// pykKeyFiles lists <data-dir>/keys/SED; a missing directory holds no file.
func pykKeyFiles(d *daemon) []string {
	d.t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.dataDir, "keys", "SED"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		d.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// pykNoMaterialOnDisk checks that no file of kmd's directory (data dir,
// log, output) holds any of the remote master keys' material, raw, in hex
// or in base64.
func pykNoMaterialOnDisk(d *daemon, materials map[string][]byte) {
	d.t.Helper()
	type form struct{ uid, how, s string }
	var forms []form
	for uid, m := range materials {
		forms = append(forms, form{uid, "raw", string(m)},
			form{uid, "hex", hex.EncodeToString(m)}, form{uid, "HEX", strings.ToUpper(hex.EncodeToString(m))})
		for _, b := range b64Forms(m) {
			forms = append(forms, form{uid, "base64", b})
		}
	}
	err := filepath.WalkDir(d.root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil // files come and go while kmd runs
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, f := range forms {
			if bytes.Contains(b, []byte(f.s)) {
				d.t.Errorf("%s holds the material of the KMIP key %s (%s): the master key touched kmd's disk", path, f.uid, f.how)
			}
		}
		return nil
	})
	if err != nil {
		d.t.Error(err)
	}
}

// pykServerList is `kmip server list -o json`.
type pykServerList struct {
	Servers []struct {
		Name    string   `json:"name"`
		Host    string   `json:"host"`
		Port    int      `json:"port"`
		Keys    int      `json:"keys"`
		Domains []string `json:"domains"`
	} `json:"servers"`
}

// pykVerify is `kmip server verify -o json`.
type pykVerify struct {
	Reports []struct {
		Server      string `json:"server"`
		Reachable   bool   `json:"reachable"`
		TLSVersion  string `json:"tls_version"`
		KMIPVersion string `json:"kmip_version"`
		OK          bool   `json:"ok"`
		Error       string `json:"error"`
		Steps       []struct {
			Name   string `json:"name"`
			Result string `json:"result"`
			Error  string `json:"error"`
		} `json:"steps"`
	} `json:"reports"`
}

// pykmipInstalled reports whether Debian's python3-pykmip is installed.
func pykmipInstalled() bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "python3-pykmip").Output()
	return err == nil && strings.Contains(string(out), "ok installed")
}

// TestPyKMIP_Interop keeps the SED master key on a real PyKMIP server
// (started by the project's scripts/pykmip-up.sh) and moves it through
// kmd's whole KMIP life: server create/verify/list, migration to the
// server, rekey there (old key destroyed on the server), restart (material
// pulled with Get), the server going away (rekey fails, entries stay
// usable, the retry completes once it is back), migration back to a local
// key file, and server delete.
func TestPyKMIP_Interop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a real PyKMIP server")
	}
	if os.Geteuid() != 0 && !pykmipInstalled() {
		t.Skip("python3-pykmip is not installed and not root: scripts/pykmip-up.sh could not apt-get install it")
	}
	t.Parallel()
	step := stepper(t)
	srv := startPyKMIP(t)
	step("PyKMIP up")

	d := startKMD(t, "--retry-interval", pykRetryInterval.String())
	want := genEntries("drive-", 30)
	d.importEntries("SED", want)
	// Every check reads all entries with one `entry export` and a few
	// (a long value among them) with `entry get`, byte for byte.
	sample := []string{"drive-000001", "drive-000007", "drive-000030"}
	readAll := func() {
		t.Helper()
		d.checkExport("SED", want)
		d.checkGets("SED", sample, want)
	}
	localID := pykSED(d).KeyID
	step("kmd up with 30 SED entries")

	// materials: every SED master key seen on the server, by uid.
	materials := map[string][]byte{}
	remember := func(uid string) pykObject {
		t.Helper()
		o, ok := srv.object(uid)
		if !ok {
			t.Fatalf("PyKMIP holds no object %s (remote_key_id); objects: %v", uid, sortedKeys(srv.objects()))
		}
		if len(o.material) != 32 {
			t.Errorf("PyKMIP object %s holds %d bytes of material, want an AES-256 key (32)", uid, len(o.material))
		}
		materials[uid] = o.material
		return o
	}
	// checkRemote checks the SED row of a key on the server and its object.
	checkRemote := func(what string, n nodeRow) {
		t.Helper()
		if n.Status != "KMIP" || n.Location != "pykmip" || n.RemoteKeyID == "" || n.Rekey != nil || n.Error != "" {
			t.Fatalf("sed status %s: %+v; want KMIP at pykmip with a remote key id, no error", what, n)
		}
		o := remember(n.RemoteKeyID)
		if o.state != 2 {
			t.Errorf("PyKMIP object %s (%s) is in state %d, want 2 (Active)", n.RemoteKeyID, what, o.state)
		}
		if wantName := "kmd/1/SED/" + n.KeyID; !slices.Contains(o.names, wantName) {
			t.Errorf("PyKMIP object %s (%s) is named %q, want %q", n.RemoteKeyID, what, o.names, wantName)
		}
		if files := pykKeyFiles(d); len(files) != 0 {
			t.Errorf("keys/SED holds %v %s, want no key file while the MK lives on the KMIP server", files, what)
		}
	}
	gone := func(uid, what string) {
		t.Helper()
		if o, ok := srv.object(uid); ok {
			t.Errorf("PyKMIP still holds %s %s (%s, state %d, names %q), want it destroyed", what, uid, o.class, o.state, o.names)
		}
	}

	// Create, verify, list.
	d.must("kmip", "server", "create", "pykmip", "--host", srv.host, "--port", srv.port,
		"--ca-cert-path", srv.env["PYKMIP_CA"], "--client-cert-path", srv.env["PYKMIP_CLIENT_CERT"],
		"--client-key-path", srv.env["PYKMIP_CLIENT_KEY"])
	var v pykVerify
	decodeJSON(t, "kmip server verify -o json", d.must("kmip", "server", "verify", "pykmip", "-o", "json"), &v)
	if len(v.Reports) != 1 {
		t.Fatalf("kmip server verify pykmip: %d reports, want 1: %+v", len(v.Reports), v)
	}
	if r := v.Reports[0]; r.Server != "pykmip" || !r.OK || !r.Reachable ||
		(r.TLSVersion != "TLS 1.2" && r.TLSVersion != "TLS 1.3") || !strings.HasPrefix(r.KMIPVersion, "1.") {
		t.Errorf("kmip server verify pykmip: %+v; want ok, reachable, TLS 1.2 or 1.3, KMIP 1.x", r)
	} else {
		t.Logf("verify: %s, KMIP %s, steps %+v", r.TLSVersion, r.KMIPVersion, r.Steps)
	}
	var l pykServerList
	decodeJSON(t, "kmip server list -o json", d.must("kmip", "server", "list", "-o", "json"), &l)
	if len(l.Servers) != 1 || l.Servers[0].Name != "pykmip" || l.Servers[0].Host != srv.host ||
		strconv.Itoa(l.Servers[0].Port) != srv.port || l.Servers[0].Keys != 0 {
		t.Errorf("kmip server list -o json: %+v; want pykmip at %s:%s holding no key", l.Servers, srv.host, srv.port)
	}
	step("kmip server create, verify, list")

	// Migrate to the server.
	d.must("sed", "migrate", "--to-server", "pykmip", "--yes", "--wait")
	n1 := pykSED(d)
	checkRemote("after migrate --to-server", n1)
	if n1.KeyID == localID {
		t.Errorf("the migration kept key id %s; a migration makes a new MK at the target", localID)
	}
	readAll()
	decodeJSON(t, "kmip server list -o json", d.must("kmip", "server", "list", "-o", "json"), &l)
	if len(l.Servers) != 1 || l.Servers[0].Keys != 1 || !slices.Equal(l.Servers[0].Domains, []string{"SED"}) {
		t.Errorf("kmip server list -o json after the migration: %+v; want pykmip holding 1 key, of SED", l.Servers)
	}
	if _, stderr, code := d.kmctl("kmip", "server", "delete", "pykmip"); code != 1 {
		t.Errorf("kmip server delete pykmip while the SED MK lives there: exit %d, want 1 (refused); stderr: %s", code, stderr)
	}
	pykNoMaterialOnDisk(d, materials)
	step("sed migrate --to-server")

	// Rekey on the server: a new key there, the old one destroyed.
	d.must("sed", "rekey", "start", "--yes", "--wait")
	n2 := pykSED(d)
	checkRemote("after a rekey on the server", n2)
	if n2.RemoteKeyID == n1.RemoteKeyID || n2.KeyID == n1.KeyID {
		t.Errorf("sed rekey kept key %s / remote key %s", n2.KeyID, n2.RemoteKeyID)
	}
	gone(n1.RemoteKeyID, "the master key replaced by the rekey")
	readAll()
	step("sed rekey on the server")

	// Restart: kmd pulls the material with Get.
	gets := srv.getCount(n2.RemoteKeyID)
	d.restart()
	n3 := pykSED(d)
	checkRemote("after a restart", n3)
	if n3.KeyID != n2.KeyID || n3.RemoteKeyID != n2.RemoteKeyID {
		t.Errorf("a restart changed the SED key: %s/%s, want %s/%s", n3.KeyID, n3.RemoteKeyID, n2.KeyID, n2.RemoteKeyID)
	}
	readAll()
	if srv.getCount(n2.RemoteKeyID) <= gets {
		t.Errorf("PyKMIP's log shows no Get of %s since kmd restarted, yet the entries were read: where did the material come from?", n2.RemoteKeyID)
	}
	step("kmd restarted")

	// The server goes away: the rekey fails, entries stay usable.
	completedBefore := countEvents(d.events(), "KeyManagerRekeyCompleted", "SED")
	srv.down()
	if _, stderr, code := d.kmctl("sed", "rekey", "start", "--yes", "--wait"); code != 1 {
		t.Errorf("sed rekey start --yes --wait with PyKMIP down: exit %d, want 1; stderr: %s", code, stderr)
	}
	nf := pykWaitSED(d, 10*time.Second, "FAILED", func(n nodeRow) bool { return n.Status == "FAILED" })
	if nf.Error == "" || nf.NextRetry == nil || nf.Location != "pykmip" || nf.RemoteKeyID != n2.RemoteKeyID {
		t.Errorf("sed status with PyKMIP down: %+v; want FAILED with an error and a next retry, the MK still %s at pykmip",
			nf, n2.RemoteKeyID)
	}
	failed := false
	for _, e := range d.events() {
		if e.Name == "KeyManagerSedsRekeyFailed" && e.Node == 1 {
			failed = true
			if e.Error == "" {
				t.Errorf("event %+v carries no error", e)
			}
		}
	}
	if !failed {
		t.Errorf("events list -o json: no KeyManagerSedsRekeyFailed event of node 1:\n%+v", d.events())
	}
	readAll()
	want["drive-while-kmip-down"] = []byte("\x00written\xffwhile PyKMIP was down\n")
	d.put("SED", "drive-while-kmip-down", want["drive-while-kmip-down"])
	sample = append(sample, "drive-while-kmip-down")
	readAll()
	step("PyKMIP down: rekey failed, entries usable")

	// The server comes back on the same port with its database: the
	// scheduled retry completes.
	srv.up(srv.port)
	back := time.Now()
	n4 := pykWaitSED(d, pykRecoverTimeout, "KMIP with a new remote key", func(n nodeRow) bool {
		return n.Status == "KMIP" && n.Rekey == nil && n.RemoteKeyID != "" && n.RemoteKeyID != n2.RemoteKeyID
	})
	if took := time.Since(back); took > pykRetryLatency {
		t.Errorf("the retried rekey completed %.1fs after PyKMIP was back, want within %v with --retry-interval %v: "+
			"the retry was late (compare the attempts in kmd's log with their next_retry)",
			took.Seconds(), pykRetryLatency, pykRetryInterval)
	}
	checkRemote("after the retry", n4)
	gone(n2.RemoteKeyID, "the master key replaced by the retried rekey")
	readAll()
	if got := countEvents(d.events(), "KeyManagerRekeyCompleted", "SED"); got <= completedBefore {
		t.Errorf("%d KeyManagerRekeyCompleted events of SED after the retry, want more than the %d before", got, completedBefore)
	}
	step("PyKMIP back: the retry completed")

	// Back to a local key file; then the server can go.
	d.must("sed", "migrate", "--to-local", "--yes", "--wait")
	n5 := pykSED(d)
	if n5.Status != "LOCAL" || n5.Location != "Local" || n5.RemoteKeyID != "" || n5.Error != "" || n5.Rekey != nil {
		t.Errorf("sed status after migrate --to-local: %+v; want LOCAL at Local, no remote key id", n5)
	}
	if files := pykKeyFiles(d); !slices.Equal(files, []string{n5.KeyID + ".key"}) {
		t.Errorf("keys/SED holds %v after migrate --to-local, want one key file %s.key", files, n5.KeyID)
	}
	readAll()
	gone(n4.RemoteKeyID, "the master key migrated away")
	for uid, o := range srv.objects() {
		// kmd's SED keys and verify's throwaway probe keys alike are gone.
		t.Errorf("PyKMIP still holds object %s (%s, state %d, names %q) after the SED MK left it", uid, o.class, o.state, o.names)
	}
	d.must("kmip", "server", "delete", "pykmip")
	out := d.must("kmip", "server", "list", "-o", "json")
	var raw struct {
		Servers json.RawMessage `json:"servers"`
	}
	decodeJSON(t, "kmip server list -o json", out, &raw)
	if string(raw.Servers) != "[]" {
		t.Errorf("kmip server list -o json after delete: %s, want {\"servers\":[]}", strings.TrimSpace(out))
	}
	pykNoMaterialOnDisk(d, materials)
	step("sed migrate --to-local, kmip server delete")
}
