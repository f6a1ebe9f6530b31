package kmip

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/kmip/kmiptestserver"
)

func TestSource_TLSVersions(t *testing.T) {
	modern := kmiptestserver.Start(t)
	capped := kmiptestserver.Start(t, kmiptestserver.WithMaxTLSVersion(tls.VersionTLS12))
	cases := []struct {
		name   string
		srv    *kmiptestserver.Server
		min    uint16
		want   string // negotiated, or "" for a failure
		errors []string
	}{
		{"1.2 minimum, 1.3 server", modern, tls.VersionTLS12, "TLS 1.3", nil},
		{"1.3 minimum, 1.3 server", modern, tls.VersionTLS13, "TLS 1.3", nil},
		{"1.2 minimum, 1.2 server", capped, 0, "TLS 1.2", nil},
		{"1.3 minimum, 1.2 server", capped, tls.VersionTLS13, "", []string{"kmip server kmip1 unreachable", "tls handshake with " + capped.Addr, "protocol version", "the server does not offer TLS 1.3 or newer"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(c.srv)
			cfg.MinTLSVersion = c.min
			rep, err := newSource(t, cfg).Verify(t.Context())
			if c.want != "" {
				if err != nil || rep.TLSVersion != c.want {
					t.Fatalf("Verify: %v, TLS %q; want %s", err, rep.TLSVersion, c.want)
				}
				return
			}
			if !errors.Is(err, ErrUnreachable) || rep.Reachable {
				t.Fatalf("Verify: %v (reachable %v), want ErrUnreachable", err, rep.Reachable)
			}
			for _, w := range c.errors {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The CA file did not sign the server's certificate: the handshake fails
// with an error that names the server and the file.
func TestSource_WrongCA(t *testing.T) {
	srv := kmiptestserver.Start(t)
	other := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.CACert = other.CACert
	start := time.Now()
	_, _, err := newSource(t, cfg).Create(t.Context(), "S3", "k")
	if time.Since(start) > 2*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Create: %v, want ErrUnreachable", err)
	}
	for _, w := range []string{"kmip server kmip1 unreachable", "tls handshake with " + srv.Addr, "unknown authority", "the server's certificate is not signed by the CA in " + other.CACert} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if len(srv.Keys()) != 0 {
		t.Errorf("a key was created")
	}
}

// The server does not trust kmd's client certificate.
func TestSource_ClientCertificateRefused(t *testing.T) {
	for _, min := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(min), func(t *testing.T) {
			srv := kmiptestserver.Start(t, kmiptestserver.WithMaxTLSVersion(min))
			other := kmiptestserver.Start(t)
			cfg := testConfig(srv)
			cfg.ClientCert, cfg.ClientKey = other.ClientCert, other.ClientKey
			_, _, err := newSource(t, cfg).Create(t.Context(), "S3", "k")
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Create: %v, want ErrUnreachable", err)
			}
			for _, w := range []string{"kmip server kmip1 unreachable", srv.Addr, "the server refused the client certificate " + other.ClientCert} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The address's host must be in the server's certificate.
func TestSource_ServerNameFromTheAddress(t *testing.T) {
	srv := kmiptestserver.Start(t)
	_, port, _ := strings.Cut(srv.Addr, ":")
	cfg := testConfig(srv)
	cfg.Addrs = []string{"localhost:" + port}
	if _, err := newSource(t, cfg).Verify(t.Context()); err != nil {
		t.Fatalf("Verify via localhost: %v", err)
	}

	elsewhere := kmiptestserver.Start(t, kmiptestserver.WithServerCertHosts("kmip.example.com"))
	_, err := newSource(t, testConfig(elsewhere)).Verify(t.Context())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Verify of a server whose certificate is for another name: %v, want ErrUnreachable", err)
	}
	for _, w := range []string{"tls handshake with " + elsewhere.Addr, "the server's certificate is not issued for 127.0.0.1"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}
