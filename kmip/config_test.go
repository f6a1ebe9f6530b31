package kmip

import (
	"crypto/tls"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/internal/testca"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
)

func TestNew_Defaults(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.Addrs = []string{"kmip.example.com", "[::1]", "10.0.0.1:15696"}
	src, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got := src.Config()
	want := []string{"kmip.example.com:5696", "[::1]:5696", "10.0.0.1:15696"}
	if strings.Join(got.Addrs, ",") != strings.Join(want, ",") {
		t.Errorf("Addrs = %v, want %v", got.Addrs, want)
	}
	if got.MinTLSVersion != tls.VersionTLS12 || got.ConnectTimeout != 10*time.Second || got.OpTimeout != 30*time.Second {
		t.Errorf("defaults: TLS %x, connect %s, op %s; want TLS 1.2, 10s, 30s", got.MinTLSVersion, got.ConnectTimeout, got.OpTimeout)
	}
	if src.Location() != "kmip1" {
		t.Errorf("Location() = %q", src.Location())
	}
	if n := srv.Count("DiscoverVersions"); n != 0 {
		t.Errorf("New connected (%d DiscoverVersions)", n)
	}
}

func TestNew_RefusesBadSettings(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cases := []struct {
		name string
		mod  func(*ServerConfig)
		want string
	}{
		{"no name", func(c *ServerConfig) { c.Name = "" }, `server name ""`},
		{"name with a space", func(c *ServerConfig) { c.Name = "kmip 1" }, `server name "kmip 1"`},
		{"name Local", func(c *ServerConfig) { c.Name = "Local" }, "reserved for local keys"},
		{"name local", func(c *ServerConfig) { c.Name = "local" }, "reserved for local keys"},
		{"no address", func(c *ServerConfig) { c.Addrs = nil }, "no address"},
		{"empty address", func(c *ServerConfig) { c.Addrs = []string{""} }, `address ""`},
		{"no host", func(c *ServerConfig) { c.Addrs = []string{":5696"} }, "no host"},
		{"bad port", func(c *ServerConfig) { c.Addrs = []string{"h:kmip"} }, `port "kmip"`},
		{"port 0", func(c *ServerConfig) { c.Addrs = []string{"h:0"} }, `port "0"`},
		{"port too high", func(c *ServerConfig) { c.Addrs = []string{"h:65536"} }, `port "65536"`},
		{"URL", func(c *ServerConfig) { c.Addrs = []string{"tls://h:5696"} }, "want host:port"},
		{"TLS 1.1", func(c *ServerConfig) { c.MinTLSVersion = tls.VersionTLS11 }, "TLS 1.1 not allowed"},
		{"negative connect timeout", func(c *ServerConfig) { c.ConnectTimeout = -time.Second }, "connect timeout -1s"},
		{"negative op timeout", func(c *ServerConfig) { c.OpTimeout = -time.Second }, "operation timeout -1s"},
		{"negative node", func(c *ServerConfig) { c.NodeID = -1 }, "node id -1"},
		{"no CA file", func(c *ServerConfig) { c.CACert = "" }, "no CA certificate file"},
		{"no client cert file", func(c *ServerConfig) { c.ClientCert = "" }, "no client certificate file"},
		{"no client key file", func(c *ServerConfig) { c.ClientKey = "" }, "no client key file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(srv)
			c.mod(&cfg)
			_, err := New(cfg)
			checkConfigErr(t, err, c.want)
		})
	}
	// TLS 1.3 is allowed.
	cfg := testConfig(srv)
	cfg.MinTLSVersion = tls.VersionTLS13
	if _, err := New(cfg); err != nil {
		t.Errorf("New with TLS 1.3: %v", err)
	}
}

func checkConfigErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("New: %v, want an error wrapping ErrConfig", err)
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error %q is more than one line", msg)
	}
}

// writeCA writes a self-signed CA certificate valid from notBefore to
// notAfter.
func writeCA(t *testing.T, path string, notBefore, notAfter time.Time) {
	t.Helper()
	testca.WriteFile(t, path, testca.New(t, "old CA", notBefore, notAfter).PEM())
}

func TestNew_ChecksTheFiles(t *testing.T) {
	srv := kmiptestserver.Start(t)
	other := kmiptestserver.Start(t) // another CA
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	expiredCert, expiredKey, err := srv.IssueClientCert("expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	futureCert, futureKey, err := srv.IssueClientCert("future", now.Add(24*time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, strayKey, err := srv.IssueClientCert("stray", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	expiredCA := filepath.Join(dir, "expired-ca.pem")
	writeCA(t, expiredCA, now.Add(-48*time.Hour), now.Add(-time.Hour))
	missing := filepath.Join(dir, "missing.pem")
	notPEM := write("notpem.pem", "this is not a certificate\n")
	empty := write("empty.pem", "")
	garbled := write("garbled.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	encrypted := write("encrypted.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")

	cases := []struct {
		name string
		mod  func(*ServerConfig)
		want []string
	}{
		{"CA missing", func(c *ServerConfig) { c.CACert = missing }, []string{"CA certificate " + missing + " does not exist", "want the PEM file of the CA"}},
		{"CA empty", func(c *ServerConfig) { c.CACert = empty }, []string{empty + " is empty"}},
		{"CA a directory", func(c *ServerConfig) { c.CACert = dir }, []string{dir + " cannot be read"}},
		{"CA not PEM", func(c *ServerConfig) { c.CACert = notPEM }, []string{"CA certificate " + notPEM + " is not PEM", "BEGIN CERTIFICATE"}},
		{"CA is a key", func(c *ServerConfig) { c.CACert = srv.ClientKey }, []string{"CA certificate " + srv.ClientKey + " holds a PRIVATE KEY, not a certificate"}},
		{"CA garbled", func(c *ServerConfig) { c.CACert = garbled }, []string{garbled + " holds a CERTIFICATE block that does not parse"}},
		{"CA expired", func(c *ServerConfig) { c.CACert = expiredCA }, []string{"CA certificate " + expiredCA, "expired at", "want a currently valid CA certificate"}},
		{"client cert missing", func(c *ServerConfig) { c.ClientCert = missing }, []string{"client certificate " + missing + " does not exist"}},
		{"client cert not PEM", func(c *ServerConfig) { c.ClientCert = notPEM }, []string{"client certificate " + notPEM + " is not PEM"}},
		{"client cert is a key", func(c *ServerConfig) { c.ClientCert = srv.ClientKey }, []string{"client certificate " + srv.ClientKey + " holds a PRIVATE KEY"}},
		{"client cert expired", func(c *ServerConfig) { c.ClientCert, c.ClientKey = expiredCert, expiredKey }, []string{"client certificate " + expiredCert, "expired at", "want a currently valid certificate"}},
		{"client cert not yet valid", func(c *ServerConfig) { c.ClientCert, c.ClientKey = futureCert, futureKey }, []string{"client certificate " + futureCert, "is not valid before"}},
		{"client cert for servers", func(c *ServerConfig) { c.ClientCert, c.ClientKey = srv.ServerCert, srv.ServerKey }, []string{srv.ServerCert + " (CN=localhost) is not for client authentication", "clientAuth"}},
		{"client key missing", func(c *ServerConfig) { c.ClientKey = missing }, []string{"client key " + missing + " does not exist"}},
		{"client key not PEM", func(c *ServerConfig) { c.ClientKey = notPEM }, []string{"client key " + notPEM + " is not PEM"}},
		{"client key is a certificate", func(c *ServerConfig) { c.ClientKey = srv.ClientCert }, []string{"client key " + srv.ClientCert + " holds a CERTIFICATE, not a private key"}},
		{"client key encrypted", func(c *ServerConfig) { c.ClientKey = encrypted }, []string{"client key " + encrypted + " is encrypted"}},
		{"client key of another certificate", func(c *ServerConfig) { c.ClientKey = strayKey }, []string{"client key " + strayKey + " does not match client certificate " + srv.ClientCert}},
		{"client key of another CA's certificate", func(c *ServerConfig) { c.ClientKey = other.ClientKey }, []string{"does not match"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(srv)
			c.mod(&cfg)
			_, err := New(cfg)
			checkConfigErr(t, err, append(c.want, "kmip server kmip1")...)
			// Never a piece of a private key in the message.
			for _, p := range []string{srv.ClientKey, strayKey, other.ClientKey, expiredKey} {
				b, _ := os.ReadFile(p)
				blk, _ := pem.Decode(b)
				if blk != nil && len(blk.Bytes) > 0 {
					if how := leaksPEM(err.Error(), blk.Bytes); how != "" {
						t.Errorf("error %q quotes the private key %s", err, p)
					}
				}
			}
		})
	}
}

// leaksPEM reports whether s holds a 12-character piece of the base64 of
// der.
func leaksPEM(s string, der []byte) string {
	body := string(pem.EncodeToMemory(&pem.Block{Type: "X", Bytes: der}))
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "-----") || len(line) < 12 {
			continue
		}
		for i := 0; i+12 <= len(line); i += 12 {
			if strings.Contains(s, line[i:i+12]) {
				return line[i : i+12]
			}
		}
	}
	return ""
}
