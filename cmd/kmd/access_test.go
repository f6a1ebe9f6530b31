package main

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/internal/testca"
)

// writePEM writes PEM blocks to dir/name and returns the path.
func writePEM(t *testing.T, dir, name string, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// selfSigned makes a certificate valid from notBefore to notAfter and its
// key, as PEM blocks.
func selfSigned(t *testing.T, cn string, notBefore, notAfter time.Time) (cert, key *pem.Block) {
	t.Helper()
	ca := testca.New(t, cn, notBefore, notAfter)
	cert, _ = pem.Decode(ca.PEM())
	key, _ = pem.Decode(ca.KeyPEM(t))
	return cert, key
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	certB, keyB := selfSigned(t, "kmd", now.Add(-time.Hour), now.Add(time.Hour))
	otherCert, otherKey := selfSigned(t, "other", now.Add(-time.Hour), now.Add(time.Hour))
	oldCert, oldKey := selfSigned(t, "old", now.Add(-2*time.Hour), now.Add(-time.Hour))
	newCert, newKey := selfSigned(t, "new", now.Add(time.Hour), now.Add(2*time.Hour))
	ecKey, err := x509.ParsePKCS8PrivateKey(keyB.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	cert := writePEM(t, dir, "cert.pem", certB)
	key := writePEM(t, dir, "key.pem", keyB)
	ecKeyFile := writePEM(t, dir, "ec.key", &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	ca := writePEM(t, dir, "ca.pem", otherCert, certB)
	wrongKey := writePEM(t, dir, "other.key", otherKey)
	expired := writePEM(t, dir, "old.pem", oldCert)
	expiredKey := writePEM(t, dir, "old.key", oldKey)
	notYet := writePEM(t, dir, "new.pem", newCert)
	notYetKey := writePEM(t, dir, "new.key", newKey)
	keyOnly := writePEM(t, dir, "keyonly.pem", keyB)
	badCert := writePEM(t, dir, "bad.pem", &pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})
	badKey := writePEM(t, dir, "bad.key", &pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o600)
	missing := filepath.Join(dir, "missing.pem")

	for _, c := range []struct {
		what                        string
		listen, cert, key, clientCA string
		err                         string // "" for accepted
	}{
		{"no listener", "", "", "", "", ""},
		{"accepted", ":0", cert, key, ca, ""},
		{"an EC PRIVATE KEY block", ":0", cert, ecKeyFile, ca, ""},
		{"TLS files without --listen", "", cert, "", "", "--tls-cert is set but --listen is not"},
		{"a CA without --listen", "", "", "", ca, "--tls-client-ca is set but --listen is not"},
		{"--listen alone", ":0", "", "", "", "--listen :0 needs --tls-cert, --tls-key and --tls-client-ca; missing --tls-cert, --tls-key, --tls-client-ca"},
		{"no client CA", ":0", cert, key, "", "missing --tls-client-ca"},
		{"missing cert file", ":0", missing, key, ca, "--tls-cert " + missing + ": no such file"},
		{"missing key file", ":0", cert, missing, ca, "--tls-key " + missing + ": no such file"},
		{"a directory", ":0", cert, key, dir, "--tls-client-ca " + dir + ": cannot read it: is a directory"},
		{"not PEM", ":0", notPEM, key, ca, "--tls-cert " + notPEM + ": not a PEM file"},
		{"a key where the cert goes", ":0", keyOnly, key, ca, "--tls-cert " + keyOnly + ": holds no certificate"},
		{"a cert where the key goes", ":0", cert, cert, ca, "--tls-key " + cert + ": holds no private key"},
		{"a broken certificate", ":0", badCert, key, ca, "PEM block 1 is not a valid certificate"},
		{"a broken key", ":0", cert, badKey, ca, "the PRIVATE KEY block is not a valid key"},
		{"a key of another certificate", ":0", cert, wrongKey, ca, "--tls-key " + wrongKey + " does not match the certificate in --tls-cert " + cert},
		{"an expired certificate", ":0", expired, expiredKey, ca, "the certificate expired on"},
		{"a certificate not valid yet", ":0", notYet, notYetKey, ca, "the certificate is not valid before"},
		{"a CA file with no certificate", ":0", cert, key, keyOnly, "--tls-client-ca " + keyOnly + ": holds no certificate"},
	} {
		cfg := config{Listen: c.listen, TLSCert: c.cert, TLSKey: c.key, TLSClientCA: c.clientCA}
		tc, err := tlsConfig(cfg, now)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: %v; want one line with %q", c.what, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.what, err)
			continue
		}
		if c.listen == "" {
			if tc != nil {
				t.Errorf("%s: a TLS config without --listen", c.what)
			}
			continue
		}
		if tc.MinVersion != tls.VersionTLS12 || tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.ClientCAs == nil || len(tc.Certificates) != 1 {
			t.Errorf("%s: TLS config %+v; want TLS 1.2+, client certificates required and verified, one certificate", c.what, tc)
		}
	}
}

func TestLoadConfig_Access(t *testing.T) {
	g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
	if err != nil {
		t.Skipf("own group: %v", err)
	}
	dir := t.TempDir()
	noEnv := func(string) string { return "" }
	load := func(yaml string, args ...string) (config, error) {
		p := filepath.Join(dir, "kmd.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return loadConfig(append([]string{"--config", p}, args...), noEnv, io.Discard)
	}

	c, err := load("access:\n" +
		"  - role: monitor\n    subjects: [\"CN=prometheus\"]\n" +
		"  - role: service:S3\n    uids: [1001]\n    groups: [" + g.Name + ", " + g.Gid + "]\n    subjects: [\"CN=s3-gateway\"]\n" +
		"socket_group: " + g.Name + "\nlisten: 127.0.0.1:8443\ntls_cert: /c\ntls_key: /k\ntls_client_ca: /ca\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []access.Rule{{Role: "monitor", Subjects: []string{"CN=prometheus"}},
		{Role: "service:S3", UIDs: []int{1001}, Groups: []string{g.Name, g.Gid}, Subjects: []string{"CN=s3-gateway"}}}
	if !slices.EqualFunc(c.Access, want, func(a, b access.Rule) bool {
		return a.Role == b.Role && slices.Equal(a.UIDs, b.UIDs) && slices.Equal(a.Groups, b.Groups) && slices.Equal(a.Subjects, b.Subjects)
	}) {
		t.Errorf("access rules %+v, want %+v", c.Access, want)
	}
	if c.SocketGroup != g.Name || c.Listen != "127.0.0.1:8443" || c.TLSCert != "/c" || c.TLSKey != "/k" || c.TLSClientCA != "/ca" {
		t.Errorf("settings %+v", c)
	}
	for _, empty := range []string{"access:\n", "access: []\n"} {
		if c, err := load(empty); err != nil || len(c.Access) != 0 {
			t.Errorf("%q: %+v, %v; want no rules", empty, c.Access, err)
		}
	}

	for _, bad := range []struct{ yaml, err string }{
		{"access: monitor\n", "line 1: access: not a list; want a list of rules"},
		{"access: {role: monitor}\n", "line 1: access: not a list"},
		{"access:\n  - monitor\n", "line 2: access rule 1: not a mapping"},
		{"access:\n  - role: monitor\n    uid: [1]\n", `line 3: access rule 1: unknown key "uid"; want role, uids, groups or subjects`},
		{"access:\n  - role: monitor\n    uids: 1001\n", "line 3: access rule 1: uids must be a list such as [a, b]"},
		{"access:\n  - role: monitor\n    uids: [abc]\n", `line 3: access rule 1: uid "abc" is not a number`},
		{"access:\n  - role: monitor\n    uids: [[1]]\n", "uids must be a list of single values"},
		{"access:\n  - role: [monitor]\n    uids: [1]\n", "line 2: access rule 1: role must be a single value"},
		{"access:\n  - role: monitor\n    uids: [1]\n    uids: [2]\n", "line 4: access rule 1: uids given twice"},
		{"access:\n  - role: monitor\n    uids: [1]\n  - role: superuser\n    uids: [2]\n", `kmd.yaml: access rule 2 (superuser): invalid role "superuser"`},
		{"access:\n  - role: service:S4\n    uids: [1]\n", `access rule 1 (service:S4): invalid role "service:S4": no domain "S4"`},
		{"access:\n  - role: monitor\n", "access rule 1 (monitor): names no one"},
		{"access:\n  - role: monitor\n    groups: [kmd-no-such-group]\n", `group "kmd-no-such-group" does not exist`},
		{"access:\n  - role: monitor\n    subjects: [prometheus]\n", `invalid subject "prometheus"`},
		{"socket_group: kmd-no-such-group\n", `line 1: socket_group: group "kmd-no-such-group" does not exist`},
		{"listen: 8443\n", `line 1: listen: invalid address "8443": want HOST:PORT`},
		{"listen: :https\n", `invalid port "https"`},
		{"listen: :70000\n", `invalid port "70000"`},
	} {
		_, err := load(bad.yaml)
		var ue usageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), bad.err) || !strings.HasPrefix(err.Error(), "config file ") {
			t.Errorf("%q: %v; want a usage error naming the file, with %q", bad.yaml, err, bad.err)
		}
	}

	// Flags and the environment.
	if _, err := loadConfig([]string{"--socket-group", "kmd-no-such-group"}, noEnv, io.Discard); err == nil ||
		!strings.Contains(err.Error(), `--socket-group: group "kmd-no-such-group" does not exist`) {
		t.Errorf("--socket-group of no group: %v", err)
	}
	env := func(k string) string { return map[string]string{"KMD_LISTEN": "nohostport"}[k] }
	if _, err := loadConfig(nil, env, io.Discard); err == nil || !strings.Contains(err.Error(), `KMD_LISTEN: invalid address "nohostport"`) {
		t.Errorf("KMD_LISTEN=nohostport: %v", err)
	}
	if c, err := loadConfig([]string{"--socket-group", g.Gid, "--listen", "[::1]:0"}, noEnv, io.Discard); err != nil || c.SocketGroup != g.Gid || c.Listen != "[::1]:0" {
		t.Errorf("--socket-group %s --listen [::1]:0: %+v, %v", g.Gid, c, err)
	}
}
