package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
)

// pemFixtures are files for kmip server create. kmctl only looks at the
// PEM block types, so the blocks hold placeholder bytes; kmd checks the
// certificates themselves.
type pemFixtures struct {
	dir                                           string
	ca, cert, key, ecKey, rsaKey                  string // good ones
	encKey, legacyEncKey, certAndKey, caAndCRL    string
	pubKey, notPEM, empty, big, exact1MiB, subdir string
	missing                                       string
}

func pemBlock(typ string, headers map[string]string, body string) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: []byte(body)}))
}

func writePEMFixtures(t *testing.T) pemFixtures {
	t.Helper()
	dir := t.TempDir()
	f := pemFixtures{dir: dir}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert := pemBlock("CERTIFICATE", nil, "client certificate")
	f.ca = write("ca.pem", "CA bundle\n"+pemBlock("CERTIFICATE", nil, "root CA")+pemBlock("CERTIFICATE", nil, "intermediate CA"))
	f.cert = write("kmd.pem", cert)
	f.key = write("kmd.key", pemBlock("PRIVATE KEY", nil, "pkcs8 key"))
	f.ecKey = write("ec.key", pemBlock("EC PARAMETERS", nil, "prime256v1")+pemBlock("EC PRIVATE KEY", nil, "ec key"))
	f.rsaKey = write("rsa.key", pemBlock("RSA PRIVATE KEY", nil, "rsa key"))
	f.encKey = write("enc.key", pemBlock("ENCRYPTED PRIVATE KEY", nil, "secret"))
	f.legacyEncKey = write("legacy.key", pemBlock("RSA PRIVATE KEY", map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, "secret"))
	f.certAndKey = write("both.pem", cert+pemBlock("PRIVATE KEY", nil, "secret"))
	f.caAndCRL = write("crl.pem", pemBlock("CERTIFICATE", nil, "root CA")+pemBlock("X509 CRL", nil, "crl"))
	f.pubKey = write("pub.pem", pemBlock("PUBLIC KEY", nil, "public"))
	f.notPEM = write("kmd.der", "\x30\x82\x01\x0asecret DER bytes")
	f.empty = write("empty.pem", "")
	f.big = write("big.pem", cert+strings.Repeat("\n", 1<<20+1-len(cert)))
	f.exact1MiB = write("exact.pem", cert+strings.Repeat("\n", 1<<20-len(cert)))
	f.subdir = filepath.Join(dir, "certs")
	if err := os.Mkdir(f.subdir, 0o700); err != nil {
		t.Fatal(err)
	}
	f.missing = filepath.Join(dir, "absent.pem")
	return f
}

// createArgs is a valid kmip server create command line; later flags in
// extra override the earlier ones.
func (f pemFixtures) createArgs(extra ...string) []string {
	return append([]string{"kmip", "server", "create", "kmip1", "--host", "kmip.example.com",
		"--ca-cert-path", f.ca, "--client-cert-path", f.cert, "--client-key-path", f.key}, extra...)
}

func sampleKMIPServer() api.KMIPServer {
	return api.KMIPServer{Name: "kmip1", Host: "kmip.example.com", Port: 5696, MinTLSVersion: "1.2", ConnectionTimeout: "10s",
		ClientCertSubject: "CN=kmd,O=Example", ClientCertExpires: time.Date(2027, 11, 22, 9, 19, 16, 0, time.FixedZone("CET", 3600)),
		Created: keyCreated, Keys: 2, Domains: []string{"S3", "SSO"}}
}

func sampleKMIPServers() api.KMIPServerList {
	return api.KMIPServerList{Servers: []api.KMIPServer{
		sampleKMIPServer(),
		{Name: "backup", Host: "kmip-backup.example.org", Port: 5697, MinTLSVersion: "1.3", ConnectionTimeout: "30s", Created: keyCreated},
	}}
}

const (
	kmipViewGolden = `Name: kmip1
Host: kmip.example.com
Port: 5696
Minimum TLS Version: 1.2
Connection Timeout: 10s
Client Certificate Subject: CN=kmd,O=Example
Client Certificate Expires: 2027-11-22T08:19:16
Created: 2026-11-22T09:19:16
Keys: 2
Domains: S3, SSO
`
	kmipListGolden = `Name    Host                     Port  Min TLS  Keys  Domains
kmip1   kmip.example.com         5696  1.2      2     S3, SSO
backup  kmip-backup.example.org  5697  1.3      0     -
Total: 2
`
	kmipVerifyGolden = `Server: kmip1 (kmip.example.com:5696)
Reachable: yes
TLS Version: TLS 1.3
KMIP Version: 1.4
Probe: ok
  create   ok
  activate ok
  locate   ok
  get      ok
  revoke   ok
  destroy  ok

Server: backup (kmip-backup.example.org:5697)
Reachable: yes
TLS Version: TLS 1.2
KMIP Version: 1.2
Probe: failed
  create   ok
  activate ok
  locate   ok
  get      failed: object not found
  revoke   skipped
  destroy  skipped
Error: the probe key could not be read back

Server: down
Reachable: no
TLS Version: -
KMIP Version: -
Probe: failed
Error: dial tcp 10.0.0.9:5696: connect: connection refused
`
)

func okSteps() []api.KMIPVerifyStep {
	var steps []api.KMIPVerifyStep
	for _, n := range []string{"create", "activate", "locate", "get", "revoke", "destroy"} {
		steps = append(steps, api.KMIPVerifyStep{Name: n, Result: "ok"})
	}
	return steps
}

func sampleVerifyOK() api.KMIPVerifyReport {
	return api.KMIPVerifyReport{Server: "kmip1", Addr: "kmip.example.com:5696", Reachable: true, TLSVersion: "TLS 1.3",
		KMIPVersion: "1.4", Steps: okSteps(), OK: true}
}

func sampleVerify() api.KMIPVerifyResponse {
	failing := okSteps()
	failing[3] = api.KMIPVerifyStep{Name: "get", Result: "failed", Error: "object not found"}
	failing[4].Result, failing[5].Result = "skipped", "skipped"
	return api.KMIPVerifyResponse{Reports: []api.KMIPVerifyReport{
		sampleVerifyOK(),
		{Server: "backup", Addr: "kmip-backup.example.org:5697", Reachable: true, TLSVersion: "TLS 1.2", KMIPVersion: "1.2",
			Steps: failing, Error: "the probe key could not be read back"},
		{Server: "down", Error: "dial tcp 10.0.0.9:5696: connect: connection refused"},
	}}
}

func TestRenderKMIPServer(t *testing.T) {
	if got := render(t, func(b *bytes.Buffer) error { return renderKMIPServer(b, sampleKMIPServer()) }); got != kmipViewGolden {
		t.Errorf("view:\n%s\nwant:\n%s", got, kmipViewGolden)
	}
	want := "Name: x\nHost: h\nPort: 1\nMinimum TLS Version: -\nConnection Timeout: -\nClient Certificate Subject: -\n" +
		"Client Certificate Expires: -\nCreated: -\nKeys: 0\nDomains: -\n"
	if got := render(t, func(b *bytes.Buffer) error {
		return renderKMIPServer(b, api.KMIPServer{Name: "x", Host: "h", Port: 1, Domains: []string{}})
	}); got != want {
		t.Errorf("sparse view:\n%q\nwant:\n%q", got, want)
	}
}

func TestRenderKMIPServers(t *testing.T) {
	if got := render(t, func(b *bytes.Buffer) error { return renderKMIPServers(b, sampleKMIPServers()) }); got != kmipListGolden {
		t.Errorf("list:\n%s\nwant:\n%s", got, kmipListGolden)
	}
	want := "Name  Host  Port  Min TLS  Keys  Domains\nTotal: 0\n"
	if got := render(t, func(b *bytes.Buffer) error { return renderKMIPServers(b, api.KMIPServerList{}) }); got != want {
		t.Errorf("empty list:\n%q\nwant:\n%q", got, want)
	}
}

func TestRenderKMIPVerify(t *testing.T) {
	if got := render(t, func(b *bytes.Buffer) error { return renderKMIPVerify(b, sampleVerify()) }); got != kmipVerifyGolden {
		t.Errorf("verify:\n%s\nwant:\n%s", got, kmipVerifyGolden)
	}
	if got := render(t, func(b *bytes.Buffer) error { return renderKMIPVerify(b, api.KMIPVerifyResponse{}) }); got != "No KMIP servers to verify\n" {
		t.Errorf("no servers: %q", got)
	}
	for _, tc := range []struct {
		steps []api.KMIPVerifyStep
		want  bool
	}{
		{nil, false},
		{[]api.KMIPVerifyStep{{Name: "create", Result: "skipped"}}, false},
		{[]api.KMIPVerifyStep{{Name: "create", Result: "ok"}, {Name: "locate", Result: "skipped"}}, true},
		{[]api.KMIPVerifyStep{{Name: "create", Result: "ok"}, {Name: "get", Result: "weird"}}, false},
	} {
		if got := probeOK(api.KMIPVerifyReport{Steps: tc.steps}); got != tc.want {
			t.Errorf("probeOK(%+v) = %v", tc.steps, got)
		}
	}
}

func TestFakeDaemon_KMIPServerCreate(t *testing.T) {
	pf := writePEMFixtures(t)
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		chdir bool
		want  api.KMIPServerCreateRequest
	}{
		{"defaults", pf.createArgs(), false, api.KMIPServerCreateRequest{
			Name: "kmip1", Host: "kmip.example.com", Port: 5696,
			CACertPEM: read(pf.ca), ClientCertPEM: read(pf.cert), ClientKeyPEM: read(pf.key),
			MinTLSVersion: "1.2", ConnectionTimeout: "10s",
			CACertFile: pf.ca, ClientCertFile: pf.cert, ClientKeyFile: pf.key,
		}},
		{"every flag, relative paths", []string{"kmip", "server", "create", "kmip-2.example_b", "--host", "2001:db8::7", "--port", "5697",
			"--ca-cert-path", "ca.pem", "--client-cert-path", "./kmd.pem", "--client-key-path=ec.key",
			"--minimum-tls-version", "1.3", "--connection-timeout", "90s"}, true, api.KMIPServerCreateRequest{
			Name: "kmip-2.example_b", Host: "2001:db8::7", Port: 5697,
			CACertPEM: read(pf.ca), ClientCertPEM: read(pf.cert), ClientKeyPEM: read(pf.ecKey),
			MinTLSVersion: "1.3", ConnectionTimeout: "1m30s",
			CACertFile: pf.ca, ClientCertFile: pf.cert, ClientKeyFile: pf.ecKey,
		}},
		{"RSA key, 1 MiB CA file", pf.createArgs("--client-key-path", pf.rsaKey, "--ca-cert-path", pf.exact1MiB), false,
			api.KMIPServerCreateRequest{
				Name: "kmip1", Host: "kmip.example.com", Port: 5696,
				CACertPEM: read(pf.exact1MiB), ClientCertPEM: read(pf.cert), ClientKeyPEM: read(pf.rsaKey),
				MinTLSVersion: "1.2", ConnectionTimeout: "10s",
				CACertFile: pf.exact1MiB, ClientCertFile: pf.cert, ClientKeyFile: pf.rsaKey,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chdir {
				t.Chdir(pf.dir)
			}
			f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 201, sampleKMIPServer()) })
			r := f.run(t, runOpts{}, tc.args...)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if want := "KMIP server " + tc.want.Name + " created\n" + kmipViewGolden; r.stdout != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
			}
			reqs := f.requests()
			if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].URI != "/v1/kmip/servers/" {
				t.Fatalf("requests %+v", reqs)
			}
			var got api.KMIPServerCreateRequest
			if err := json.Unmarshal([]byte(reqs[0].Body), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("request:\n%+v\nwant:\n%+v", got, tc.want)
			}
		})
	}

	t.Run("-o json", func(t *testing.T) {
		f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 201, sampleKMIPServer()) })
		r := f.run(t, runOpts{}, pf.createArgs("-o", "json")...)
		var got api.KMIPServer
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
			t.Fatalf("exit %d, %v:\n%s", r.code, err, r.stdout)
		}
		if want := sampleKMIPServer(); !got.ClientCertExpires.Equal(want.ClientCertExpires) || got.Name != want.Name || got.Keys != 2 {
			t.Errorf("json %+v", got)
		}
	})
}

func TestFakeDaemon_KMIPServerVerifyFailed(t *testing.T) {
	f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleVerify()) })
	r := f.run(t, runOpts{}, "kmip", "server", "verify")
	if r.code != exitFail || r.stdout != kmipVerifyGolden || r.stderr != "kmctl: error: KMIP servers backup, down failed verification\n" {
		t.Errorf("exit %d, stdout:\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].URI != "/v1/kmip/servers/-/verify" {
		t.Errorf("requests %+v", reqs)
	}

	one := api.KMIPVerifyResponse{Reports: sampleVerify().Reports[2:]}
	f = newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, one) })
	r = f.run(t, runOpts{}, "kmip", "server", "verify", "down", "-o", "json")
	var got api.KMIPVerifyResponse
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, one) {
		t.Errorf("json %v: %s", err, r.stdout)
	}
	if r.code != exitFail || r.stderr != "kmctl: error: KMIP server down failed verification\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestFakeDaemon_MigrateWait(t *testing.T) {
	t.Run("sed", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"SED"},
			api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{Node: 1, Status: api.StatusMigrating, Entries: 4, Rekey: &api.Progress{Done: 1, Total: 4}}}},
			api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{Node: 1, Status: api.StatusKMIP, Location: "kmip1", Entries: 4}}}))
		r := f.run(t, runOpts{}, "sed", "migrate", "--to-server", "kmip1", "--yes", "--wait")
		if r.code != exitOK || r.stdout != "Migration completed: SED\n" || r.stderr != "" {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		reqs := f.requests()
		if len(reqs) != 3 || reqs[0].URI != "/v1/migrate/sed" || reqs[0].Body != `{"to_server":"kmip1"}` || reqs[2].URI != "/v1/status/sed" {
			t.Errorf("requests %+v", reqs)
		}
	})

	t.Run("cluster on a terminal", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"S3"},
			clusterPoll(api.DomainStatus{Domain: "S3", Status: api.StatusMigrating, Entries: 10, Rekey: &api.Progress{Done: 5, Total: 10}}),
			clusterPoll(api.DomainStatus{Domain: "S3", Status: api.StatusActive, Location: "Local", Entries: 10})))
		r := f.run(t, runOpts{stdoutTerminal: true}, "cluster", "migrate", "--to-local", "--domain", "S3", "--yes", "--wait")
		want := "\rMigrating 1 domain(s): 5/10 entries (50%), - entries/s, ETA -" +
			"\rMigrating 1 domain(s): 10/10 entries (100%), "
		if r.code != exitOK || !strings.HasPrefix(r.stdout, want) || !strings.HasSuffix(r.stdout, "\nMigration completed: S3\n") {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
	})

	t.Run("failed", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"S3", "SSO"},
			clusterPoll(api.DomainStatus{Domain: "S3", Status: api.StatusFailed, Error: "kmip: connection refused"},
				api.DomainStatus{Domain: "SSO", Status: api.StatusKMIP})))
		r := f.run(t, runOpts{}, "cluster", "migrate", "--to-server", "kmip1", "--retry", "--yes", "--wait")
		if r.code != exitFail || r.stdout != "" || r.stderr != "kmctl: error: migration of S3 failed: kmip: connection refused\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if reqs := f.requests(); len(reqs) < 1 || reqs[0].Body != `{"to_server":"kmip1","retry":true}` {
			t.Errorf("requests %+v", reqs)
		}
	})
}

func TestFakeDaemon_MigrateConfirmation(t *testing.T) {
	f := newFakeDaemon(t, statusScript([]string{"SED"}))
	r := f.run(t, runOpts{stdin: "yes\n", stdinTerminal: true}, "sed", "migrate", "--to-local")
	if r.code != exitOK || r.stdout != migratePrompt+"Migration started: SED\n" || r.stderr != "" {
		t.Errorf("confirmed: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if want := "Are you sure you want to migrate the master keys? (yes/[no]): "; migratePrompt != want {
		t.Errorf("prompt %q, want %q", migratePrompt, want)
	}

	f = newFakeDaemon(t, statusScript([]string{"SED"}))
	for _, scope := range []string{"cluster", "sed"} {
		r = f.run(t, runOpts{stdin: "no\n", stdinTerminal: true}, scope, "migrate", "--to-local")
		if r.code != exitOK || r.stdout != migratePrompt+"Migration cancelled.\n" || r.stderr != "" {
			t.Errorf("%s cancelled: exit %d, stdout %q, stderr %q", scope, r.code, r.stdout, r.stderr)
		}
		r = f.run(t, runOpts{stdin: "yes\n"}, scope, "migrate", "--to-server", "kmip1", "--wait")
		want := "kmctl: error: refusing to migrate without confirmation: stdin is not a terminal\nhint: pass --yes to confirm non-interactively\n"
		if r.code != exitFail || r.stdout != "" || r.stderr != want {
			t.Errorf("%s without a terminal: exit %d, stdout %q, stderr %q", scope, r.code, r.stdout, r.stderr)
		}
	}
	if reqs := f.requests(); len(reqs) != 0 {
		t.Errorf("kmd was asked %+v", reqs)
	}
}

func TestRun_KMIPServerCreateUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	pf := writePEMFixtures(t)
	if err := os.Chmod(pf.key, 0); err != nil {
		t.Fatal(err)
	}
	r := kmctl(t, runOpts{}, append(pf.createArgs(), "--socket", noDaemon(t))...)
	checkUsageError(t, r, `--client-key-path "`+pf.key+`" cannot be read (permission denied)`)
}

// No error message quotes a file's contents: they may be key material.
func TestRun_KMIPServerCreateErrorsHideContents(t *testing.T) {
	pf := writePEMFixtures(t)
	sock := noDaemon(t)
	for _, tc := range []struct{ flag, path string }{
		{"--client-key-path", pf.encKey}, {"--client-key-path", pf.legacyEncKey}, {"--client-key-path", pf.notPEM},
		{"--client-cert-path", pf.encKey}, {"--client-cert-path", pf.legacyEncKey}, {"--client-cert-path", pf.notPEM},
		{"--client-cert-path", pf.certAndKey}, {"--ca-cert-path", pf.certAndKey},
	} {
		r := kmctl(t, runOpts{}, append(pf.createArgs(tc.flag, tc.path), "--socket", sock)...)
		if r.code != exitUsage || strings.Contains(r.stderr, "secret") {
			t.Errorf("%s %s: exit %d, stderr:\n%s", tc.flag, tc.path, r.code, r.stderr)
		}
	}
}

func TestFakeDaemon_KMIPCompletion(t *testing.T) {
	f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleKMIPServers()) })
	for _, args := range [][]string{
		{"__complete", "kmip", "server", "view", ""},
		{"__complete", "kmip", "server", "verify", ""},
		{"__complete", "cluster", "migrate", "--to-server", ""},
	} {
		r := f.run(t, runOpts{}, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "kmip1\nbackup\n") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	r := f.run(t, runOpts{}, "__complete", "kmip", "server", "delete", "kmip1", "")
	if r.code != exitOK || strings.Contains(r.stdout, "kmip1") {
		t.Errorf("second argument completed: %q", r.stdout)
	}
	r = kmctl(t, runOpts{}, "__complete", "--socket", noDaemon(t), "kmip", "server", "view", "")
	if r.code != exitOK || strings.Contains(r.stdout, "kmip1") {
		t.Errorf("unreachable kmd: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestFileProblem(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}, "does not exist"},
		{&fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, "cannot be read (permission denied)"},
		{&fs.PathError{Op: "read", Path: "/x", Err: syscall.EIO}, "cannot be read (input/output error)"},
		{errors.New("odd"), "cannot be read (odd)"},
	} {
		if got := fileProblem(tc.err); got != tc.want {
			t.Errorf("fileProblem(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
