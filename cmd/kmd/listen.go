package main

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/domains"
)

// serviceDomains are the domains a service:DOMAIN role may name.
func serviceDomains() []string {
	return append(append([]string(nil), domains.ClusterDomains...), domains.SEDDomain)
}

// checkListen checks an HTTPS listener address: HOST:PORT, HOST empty for
// every address.
func checkListen(v string) error {
	if v == "" {
		return nil // no HTTPS listener
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("invalid address %q: want HOST:PORT such as 127.0.0.1:8443, [::1]:8443 or :8443", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q in %q: want a number from 1 to 65535 (0: any free port)", port, v)
	}
	return nil
}

// tlsConfig checks the HTTPS listener's settings and files and returns
// its TLS configuration: client certificates required and verified against
// the client CA, TLS 1.2 at least. It returns nil when there is no
// --listen.
func tlsConfig(c config, now time.Time) (*tls.Config, error) {
	files := []struct{ flag, path string }{{"--tls-cert", c.TLSCert}, {"--tls-key", c.TLSKey}, {"--tls-client-ca", c.TLSClientCA}}
	if c.Listen == "" {
		for _, f := range files {
			if f.path != "" {
				return nil, fmt.Errorf("%s is set but --listen is not: the TLS files serve the HTTPS listener only; add --listen ADDR or drop %s", f.flag, f.flag)
			}
		}
		return nil, nil
	}
	var missing []string
	for _, f := range files {
		if f.path == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("--listen %s needs --tls-cert, --tls-key and --tls-client-ca; missing %s", c.Listen, strings.Join(missing, ", "))
	}
	certPEM, err := readPEM("--tls-cert", c.TLSCert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEM("--tls-key", c.TLSKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := readPEM("--tls-client-ca", c.TLSClientCA)
	if err != nil {
		return nil, err
	}

	certs, err := parseCerts("--tls-cert", c.TLSCert, certPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("--tls-cert %s: the certificate expired on %s; want a current one", c.TLSCert, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("--tls-cert %s: the certificate is not valid before %s; want a current one", c.TLSCert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	key, err := parseKey(c.TLSKey, keyPEM)
	if err != nil {
		return nil, err
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("--tls-key %s does not match the certificate in --tls-cert %s; want the key the certificate was issued for", c.TLSKey, c.TLSCert)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s with --tls-key %s: %v", c.TLSCert, c.TLSKey, err)
	}

	cas, err := parseCerts("--tls-client-ca", c.TLSClientCA, caPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// readPEM reads a PEM file, saying what is wrong with it.
func readPEM(flag, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s %s: no such file", flag, path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s %s: kmd may not read it (permission denied)", flag, path)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s %s: cannot read it: %v", flag, path, err)
	}
	if !strings.Contains(string(b), "-----BEGIN ") {
		return nil, fmt.Errorf("%s %s: not a PEM file; want -----BEGIN ...----- blocks", flag, path)
	}
	return b, nil
}

// parseCerts parses every CERTIFICATE block of a PEM file; there must be
// one at least.
func parseCerts(flag, path string, b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s %s: PEM block %d is not a valid certificate: %v", flag, path, n, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s %s: holds no certificate; want a PEM file with -----BEGIN CERTIFICATE-----", flag, path)
	}
	return certs, nil
}

// parseKey parses the first private key of a PEM file.
func parseKey(path string, b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("--tls-key %s: holds no private key; want a PEM file with -----BEGIN PRIVATE KEY----- (or EC / RSA PRIVATE KEY)", path)
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("--tls-key %s: the %s block is not a valid key: %v", path, block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("--tls-key %s: a %T cannot sign; want an ECDSA, Ed25519 or RSA key", path, key)
		}
		return signer, nil
	}
}

// socketGID returns the gid of the socket's group, -1 for none.
func socketGID(c config) (int, error) {
	if c.SocketGroup == "" {
		return -1, nil
	}
	gid, err := access.LookupGroup(c.SocketGroup)
	if err != nil {
		return 0, fmt.Errorf("--socket-group: %w", err)
	}
	return gid, nil
}
