package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmd-project/kmd/internal/testca"
)

// Access control on the real binaries (SPEC: Access): the socket's mode
// and group, refusals of unix users by role, and the HTTPS listener's
// client certificates.

// lookupGroup returns the gid of the first of names that exists, or skips.
func lookupGroup(t *testing.T, names ...string) (string, uint32) {
	t.Helper()
	for _, n := range names {
		if g, err := user.LookupGroup(n); err == nil {
			gid, err := strconv.Atoi(g.Gid)
			if err == nil {
				return n, uint32(gid)
			}
		}
	}
	t.Skipf("none of the groups %v exists", names)
	return "", 0
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: kmctl is run as other users")
	}
}

func TestAccessSocketMode(t *testing.T) {
	t.Parallel()
	t.Run("0600 and kmd's own by default", func(t *testing.T) {
		t.Parallel()
		d := startKMD(t)
		fi, err := os.Stat(d.sock)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o600 || int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
			t.Errorf("socket %v owned by %d:%d; want 0600, owned by kmd's user %d:%d", fi.Mode(), st.Uid, st.Gid, os.Geteuid(), os.Getegid())
		}
	})
	t.Run("0660 and the group's with --socket-group", func(t *testing.T) {
		t.Parallel()
		name, gid := lookupGroup(t, "nogroup", "nobody", "users")
		for _, g := range []string{name, strconv.Itoa(int(gid))} {
			d := startKMD(t, "--socket-group", g)
			fi, err := os.Stat(d.sock)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != 0o660 || st.Gid != gid || int(st.Uid) != os.Geteuid() {
				t.Errorf("--socket-group %s: socket %v owned by %d:%d; want 0660, group %d", g, fi.Mode(), st.Uid, st.Gid, gid)
			}
			d.stop()
		}
	})
}

// asUser runs kmctl programs as other users: a copy of kmctl they may
// execute, and a daemon whose socket they can reach.
type asUser struct {
	bin string
	d   *daemon
}

func newAsUser(t *testing.T, d *daemon) *asUser {
	t.Helper()
	dir, err := os.MkdirTemp("", "kmde2e-kmctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(kmctlBin)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "kmctl")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, d.root} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return &asUser{bin: bin, d: d}
}

// run runs kmctl as uid with primary group gid and the supplementary
// groups.
func (a *asUser) run(t *testing.T, uid, gid uint32, groups []uint32, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bin, append([]string{"--socket", a.d.sock}, args...)...)
	cmd.Env = kmctlEnv()
	cmd.Dir = "/"
	if groups == nil {
		groups = []uint32{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee) && ee.Exited():
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("kmctl %s as uid %d: %v; stderr: %s", cmdline(args), uid, err, errb.String())
	return "", "", -1
}

// wantRefused checks a refused kmctl: exit 1 and the refusal on one line.
func wantRefused(t *testing.T, what string, stdout, stderr string, code int, msg string) {
	t.Helper()
	if code != 1 {
		t.Errorf("%s: exit %d, want 1; stderr:\n%s", what, code, stderr)
		return
	}
	if el := errorLines(stderr); len(el) != 1 || el[0] != "kmctl: error: "+msg {
		t.Errorf("%s: stderr\n%s\nwant the line: kmctl: error: %s", what, stderr, msg)
	}
	if stdout != "" {
		t.Errorf("%s: printed %q", what, stdout)
	}
}

// writeConfig writes a kmd config file into d's directory.
func writeConfig(t *testing.T, d *daemon, yaml string) string {
	t.Helper()
	p := filepath.Join(d.root, "kmd.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logLines returns kmd's JSON log lines with message msg.
func logLines(t *testing.T, d *daemon, msg string) []map[string]any {
	t.Helper()
	b, _ := os.ReadFile(d.logFile)
	var out []map[string]any
	for _, l := range lines(string(b)) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestAccessSocketUsers(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sockGroup, sockGID := lookupGroup(t, "nogroup", "nobody")
	monGroup, monGID := lookupGroup(t, "users", "staff", "adm")
	const nobody, s3uid, monUID = 65534, 1001, 1002
	d := newDaemon(t, kmdOptions{})
	cfg := writeConfig(t, d, fmt.Sprintf("access:\n"+
		"  - role: service:S3\n    uids: [%d]\n"+
		"  - role: monitor\n    groups: [%s]\n", s3uid, monGroup))
	d.opts.args = []string{"--config", cfg, "--socket-group", sockGroup}
	a := newAsUser(t, d)
	d.start()
	d.put("SSO", "sso-secret", []byte("sso-value"))
	keyBefore := d.clusterStatus().row(t, "S3").KeyID

	t.Run("an unmapped uid is refused", func(t *testing.T) {
		out, errs, code := a.run(t, nobody, sockGID, nil, nil, "cluster", "status")
		wantRefused(t, "cluster status as uid 65534", out, errs, code,
			"uid 65534 may not read the status of cluster: it needs the monitor role (or admin) (it has no role)")
		if !strings.Contains(errs, "hint: ") {
			t.Errorf("no hint on a refusal:\n%s", errs)
		}
		out, errs, code = a.run(t, nobody, sockGID, nil, nil, "entry", "get", "SSO", "sso-secret")
		wantRefused(t, "entry get as uid 65534", out, errs, code,
			"uid 65534 may not read entries of SSO: it needs the service:SSO role (or admin) (it has no role)")
		out, errs, code = a.run(t, nobody, sockGID, nil, nil, "cluster", "rekey", "start", "--yes")
		wantRefused(t, "rekey start as uid 65534", out, errs, code,
			"uid 65534 may not start a rekey of cluster: it needs the admin role (it has no role)")
	})

	t.Run("a uid mapped to service:S3 uses S3 and nothing else", func(t *testing.T) {
		if _, errs, code := a.run(t, s3uid, sockGID, nil, []byte("s3-value"), "entry", "put", "S3", "gw/key"); code != 0 {
			t.Fatalf("entry put S3 as uid %d: exit %d: %s", s3uid, code, errs)
		}
		if out, errs, code := a.run(t, s3uid, sockGID, nil, nil, "entry", "get", "S3", "gw/key"); code != 0 || out != "s3-value" {
			t.Errorf("entry get S3 as uid %d: exit %d, %q: %s", s3uid, code, out, errs)
		}
		if out, errs, code := a.run(t, s3uid, sockGID, nil, nil, "entry", "list", "S3"); code != 0 || out != "gw/key\n" {
			t.Errorf("entry list S3 as uid %d: exit %d, %q: %s", s3uid, code, out, errs)
		}
		const has = " (it has service:S3)"
		out, errs, code := a.run(t, s3uid, sockGID, nil, nil, "entry", "get", "SSO", "sso-secret")
		wantRefused(t, "entry get SSO", out, errs, code, "uid 1001 may not read entries of SSO: it needs the service:SSO role (or admin)"+has)
		out, errs, code = a.run(t, s3uid, sockGID, nil, nil, "entry", "get", "SSO", "no-such-entry")
		wantRefused(t, "entry get of an absent SSO entry", out, errs, code, "uid 1001 may not read entries of SSO: it needs the service:SSO role (or admin)"+has)
		out, errs, code = a.run(t, s3uid, sockGID, nil, []byte("x"), "entry", "put", "SSO", "sso-secret")
		wantRefused(t, "entry put SSO", out, errs, code, "uid 1001 may not write entries of SSO: it needs the service:SSO role (or admin)"+has)
		out, errs, code = a.run(t, s3uid, sockGID, nil, nil, "entry", "export", "S3")
		wantRefused(t, "entry export S3", out, errs, code, "uid 1001 may not export the entries of S3: it needs the admin role"+has)
		out, errs, code = a.run(t, s3uid, sockGID, nil, nil, "cluster", "rekey", "start", "--yes", "--domain", "S3")
		wantRefused(t, "rekey start", out, errs, code, "uid 1001 may not start a rekey of cluster: it needs the admin role"+has)
	})

	t.Run("a group mapped to monitor reads status, not entries", func(t *testing.T) {
		if _, errs, code := a.run(t, monUID, sockGID, []uint32{monGID}, nil, "cluster", "status"); code != 0 {
			t.Errorf("cluster status as a member of %s: exit %d: %s", monGroup, code, errs)
		}
		if _, errs, code := a.run(t, monUID, sockGID, []uint32{monGID}, nil, "events", "list"); code != 0 {
			t.Errorf("events list as a member of %s: exit %d: %s", monGroup, code, errs)
		}
		const has = " (it has monitor)"
		out, errs, code := a.run(t, monUID, sockGID, []uint32{monGID}, nil, "entry", "get", "S3", "gw/key")
		wantRefused(t, "entry get as monitor", out, errs, code, "uid 1002 may not read entries of S3: it needs the service:S3 role (or admin)"+has)
		out, errs, code = a.run(t, monUID, sockGID, []uint32{monGID}, nil, "cluster", "rekey", "start", "--yes")
		wantRefused(t, "rekey start as monitor", out, errs, code, "uid 1002 may not start a rekey of cluster: it needs the admin role"+has)
		out, errs, code = a.run(t, monUID, sockGID, []uint32{monGID}, nil, "cluster", "rekey", "modify", "--key-rotation", "6W")
		wantRefused(t, "rekey modify as monitor", out, errs, code, "uid 1002 may not change the key rotation of cluster: it needs the admin role"+has)
		// Without the group, the same uid has no role.
		out, errs, code = a.run(t, monUID, sockGID, nil, nil, "cluster", "status")
		wantRefused(t, "cluster status outside the group", out, errs, code,
			"uid 1002 may not read the status of cluster: it needs the monitor role (or admin) (it has no role)")
	})

	t.Run("without the socket's group, no way in", func(t *testing.T) {
		_, errs, code := a.run(t, s3uid, 65533, nil, nil, "entry", "list", "S3")
		if code != 1 || !strings.Contains(errs, "cannot reach kmd") || !strings.Contains(errs, "permission denied") {
			t.Errorf("entry list outside the socket's group: exit %d: %s; want 1, cannot reach kmd: permission denied", code, errs)
		}
	})

	// The refusals changed nothing, and each was logged with who asked.
	if got := d.get("SSO", "sso-secret"); string(got) != "sso-value" {
		t.Errorf("SSO entry after refused writes: %q", got)
	}
	st := d.clusterStatus().row(t, "S3")
	if st.KeyID != keyBefore || st.Rekey != nil {
		t.Errorf("S3 after refused rekeys: key %s (was %s), rekey %+v", st.KeyID, keyBefore, st.Rekey)
	}
	if v := d.rekeyView("cluster"); v.KeyRotation != "Never" {
		t.Errorf("key rotation after a refused modify: %s", v.KeyRotation)
	}
	var found bool
	for _, m := range logLines(t, d, "access refused") {
		if m["level"] != "warn" {
			t.Errorf("refusal logged at %v, want warn", m["level"])
		}
		if m["who"] == "uid 1001" && m["method"] == "PUT" && m["path"] == "/v1/domains/SSO/entries/sso-secret" && m["from"] == "unix:"+d.sock {
			found = true
		}
	}
	if !found {
		t.Errorf("no WARN \"access refused\" log line with who (uid 1001), from, method and path of the refused put:\n%s", tail(d.logFile, 20))
	}
	if b, _ := os.ReadFile(d.logFile); bytes.Contains(b, []byte("sso-value")) || bytes.Contains(b, []byte("s3-value")) {
		t.Error("kmd's log holds an entry value")
	}
}

// pki is a CA and the certificates it issued, as PEM files.
type pki struct {
	*testca.CA
	dir  string
	file string // the CA certificate
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	p := &pki{CA: testca.New(t, name, time.Time{}, time.Time{}), dir: dir, file: filepath.Join(dir, name+"-ca.pem")}
	testca.WriteFile(t, p.file, p.PEM())
	return p
}

// issue makes a certificate for subject (a server's for 127.0.0.1 when
// server is set) and returns it and the files of it and its key.
func (p *pki) issue(t *testing.T, subject pkix.Name, server bool) (tls.Certificate, string, string) {
	t.Helper()
	l := p.Issue(t, subject, server)
	base := filepath.Join(p.dir, strings.ReplaceAll(subject.CommonName, " ", "_"))
	testca.WriteFile(t, base+".pem", l.CertPEM)
	testca.WriteFile(t, base+".key", l.KeyPEM)
	return l.TLS, base + ".pem", base + ".key"
}

func TestAccessTLS(t *testing.T) {
	t.Parallel()
	d := newDaemon(t, kmdOptions{})
	ca := newPKI(t, d.root, "kmd-clients")
	other := newPKI(t, d.root, "other")
	_, srvCert, srvKey := ca.issue(t, pkix.Name{CommonName: "kmd server"}, true)
	monitorCert, _, _ := ca.issue(t, pkix.Name{CommonName: "prometheus"}, false)
	s3Cert, _, _ := ca.issue(t, pkix.Name{CommonName: "s3-gateway", Organization: []string{"Acme"}}, false)
	foreignCert, _, _ := other.issue(t, pkix.Name{CommonName: "prometheus"}, false)
	cfg := writeConfig(t, d, "access:\n"+
		"  - role: monitor\n    subjects: [\"CN=prometheus\"]\n"+
		"  - role: service:S3\n    subjects: [\"O=Acme, CN=s3-gateway\"]\n")
	d.opts.args = []string{"--config", cfg, "--listen", "127.0.0.1:0", "--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", ca.file}
	d.start()

	// The listener's address, from the start line of kmd's log.
	var addr string
	if !waitUntil(10*time.Second, func() bool {
		for _, m := range logLines(t, d, "kmd started") {
			addr, _ = m["listen"].(string)
		}
		return addr != ""
	}) {
		t.Fatalf("no listen address in kmd's start line:\n%s", tail(d.logFile, 10))
	}
	base := "https://" + addr
	roots := ca.Pool()
	client := func(cfg *tls.Config) *http.Client {
		cfg.RootCAs = roots
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	}
	call := func(c *http.Client, method, path, body string) (int, string, error) {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	// The client would send no certificate the server's CAs did not sign:
	// this one is sent whatever the server asks for.
	sendForeign := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreignCert, nil }
	t.Run("refused at the handshake", func(t *testing.T) {
		for _, c := range []struct {
			what string
			cfg  *tls.Config
			err  string
		}{
			{"no client certificate", &tls.Config{}, "certificate required"},
			{"no client certificate, TLS 1.2", &tls.Config{MaxVersion: tls.VersionTLS12}, "handshake failure"},
			{"a certificate from another CA", &tls.Config{GetClientCertificate: sendForeign}, "unknown certificate authority"},
			{"a certificate from another CA, TLS 1.2", &tls.Config{GetClientCertificate: sendForeign, MaxVersion: tls.VersionTLS12}, "unknown certificate authority"},
			{"TLS 1.1", &tls.Config{Certificates: []tls.Certificate{monitorCert}, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, "protocol version"},
		} {
			status, body, err := call(client(c.cfg), "GET", "/v1/version", "")
			if err == nil || !strings.Contains(err.Error(), "remote error: tls: ") || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %d %q, %v; want no answer and a TLS error with %q", c.what, status, body, err, c.err)
			}
			t.Logf("%s: %v", c.what, err)
			// TLS 1.2 and older settle the client certificate within the
			// handshake itself.
			if c.cfg.MaxVersion != 0 {
				cfg := c.cfg.Clone()
				cfg.RootCAs = roots
				conn, err := tls.Dial("tcp", addr, cfg)
				if err == nil {
					conn.Close()
					t.Errorf("%s: the handshake succeeded", c.what)
				}
			}
		}
	})

	t.Run("no plain HTTP", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/v1/version")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "version") {
				t.Errorf("plain HTTP: %d %q; want 400 and nothing of the API", resp.StatusCode, b)
			}
		}
	})

	t.Run("a monitor certificate reads status and may not rekey", func(t *testing.T) {
		c := client(&tls.Config{Certificates: []tls.Certificate{monitorCert}})
		status, body, err := call(c, "GET", "/v1/status/cluster", "")
		var cs clusterStatus
		if err != nil || status != 200 || json.Unmarshal([]byte(body), &cs) != nil || cs.Total != 17 {
			t.Fatalf("GET /v1/status/cluster: %d %q, %v; want 200 and 17 domains", status, body, err)
		}
		status, body, err = call(c, "POST", "/v1/rekey/cluster", `{"domains":["S3"]}`)
		want := `{"error":"CN=prometheus may not start a rekey of cluster: it needs the admin role (it has monitor)","code":"forbidden"}`
		if err != nil || status != 403 || strings.TrimSpace(body) != want {
			t.Errorf("POST /v1/rekey/cluster: %d %q, %v; want 403 %s", status, body, err, want)
		}
		status, body, err = call(c, "GET", "/v1/domains/S3/entries/k", "")
		if err != nil || status != 403 || !strings.Contains(body, "CN=prometheus may not read entries of S3") {
			t.Errorf("GET an entry as monitor: %d %q, %v; want 403", status, body, err)
		}
	})

	t.Run("a service:S3 certificate uses S3 and not SSO", func(t *testing.T) {
		c := client(&tls.Config{Certificates: []tls.Certificate{s3Cert}})
		if status, body, err := call(c, "PUT", "/v1/domains/S3/entries/k", "tls-value"); err != nil || status != 204 {
			t.Fatalf("PUT an S3 entry: %d %q, %v", status, body, err)
		}
		if status, body, err := call(c, "GET", "/v1/domains/S3/entries/k", ""); err != nil || status != 200 || body != "tls-value" {
			t.Errorf("GET the S3 entry: %d %q, %v", status, body, err)
		}
		status, body, err := call(c, "GET", "/v1/domains/SSO/entries/k", "")
		if err != nil || status != 403 || !strings.Contains(body, "CN=s3-gateway,O=Acme may not read entries of SSO: it needs the service:SSO role (or admin) (it has service:S3)") {
			t.Errorf("GET an SSO entry as service:S3: %d %q, %v; want 403", status, body, err)
		}
	})

	// The value written over TLS is the one the socket reads.
	if got := d.get("S3", "k"); string(got) != "tls-value" {
		t.Errorf("S3 entry through the socket: %q", got)
	}
	if s := d.clusterStatus().row(t, "S3"); s.Rekey != nil {
		t.Errorf("S3 rekeying after a refused start: %+v", s.Rekey)
	}
}

// TestAccessBadSettings checks that bad access settings stop kmd at once,
// exit 2, with one line saying what is wrong, and touch nothing.
func TestAccessBadSettings(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "kmde2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ca := newPKI(t, dir, "ca")
	_, cert, key := ca.issue(t, pkix.Name{CommonName: "kmd server"}, true)
	_, _, otherKey := ca.issue(t, pkix.Name{CommonName: "other"}, true)
	badRule := filepath.Join(dir, "bad-rule.yaml")
	os.WriteFile(badRule, []byte("access:\n  - role: monitor\n    user: [1001]\n"), 0o600)
	badRole := filepath.Join(dir, "bad-role.yaml")
	os.WriteFile(badRole, []byte("access:\n  - role: service:NOPE\n    uids: [1001]\n"), 0o600)
	tlsArgs := func(c, k, ca string) []string {
		return []string{"--listen", "127.0.0.1:0", "--tls-cert", c, "--tls-key", k, "--tls-client-ca", ca}
	}
	for _, c := range []struct {
		what string
		args []string
		msg  string
	}{
		{"unknown socket group", []string{"--socket-group", "kmd-no-such-group"}, `--socket-group: group "kmd-no-such-group" does not exist on this system`},
		{"--listen without TLS files", []string{"--listen", "127.0.0.1:0"}, "--listen 127.0.0.1:0 needs --tls-cert, --tls-key and --tls-client-ca"},
		{"TLS files without --listen", []string{"--tls-cert", cert}, "--tls-cert is set but --listen is not"},
		{"bad address", []string{"--listen", "localhost"}, `--listen: invalid address "localhost"`},
		{"missing cert", tlsArgs(cert+".missing", key, ca.file), "no such file"},
		{"key of another certificate", tlsArgs(cert, otherKey, ca.file), "does not match the certificate"},
		{"CA file without a certificate", tlsArgs(cert, key, key), "--tls-client-ca " + key + ": holds no certificate"},
		{"unknown key in a rule", []string{"--config", badRule}, `access rule 1: unknown key "user"; want role, uids, groups or subjects`},
		{"role of no domain", []string{"--config", badRole}, `access rule 1 (service:NOPE): invalid role "service:NOPE"`},
	} {
		dataDir := filepath.Join(dir, "data")
		args := append([]string{"--data-dir", dataDir, "--log-file", filepath.Join(dir, "kmd.log")}, c.args...)
		out, code, _ := runKMD(t, nil, args...)
		ls := lines(out)
		if code != 2 || len(ls) < 1 || !strings.HasPrefix(ls[0], "kmd: error: ") || !strings.Contains(ls[0], c.msg) {
			t.Errorf("%s: exit %d:\n%s\nwant exit 2 and one line with %q", c.what, code, out, c.msg)
		}
		for _, p := range []string{dataDir, filepath.Join(dir, "kmd.log")} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s: kmd created %s", c.what, p)
				os.RemoveAll(p)
			}
		}
	}
}
