package kmip

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kmd-project/kmd/provider"
)

// Defaults of ServerConfig.
const (
	DefaultPort           = 5696
	DefaultMinTLSVersion  = tls.VersionTLS12
	DefaultConnectTimeout = 10 * time.Second
	DefaultOpTimeout      = 30 * time.Second
)

// ServerConfig describes one KMIP server (or one cluster of them behind
// several addresses) and how kmd authenticates to it.
type ServerConfig struct {
	// Name is kmd's name for the server, e.g. "kmip1": the Location of the
	// MKs it holds. Letters, digits, '.', '_' and '-'; not "Local".
	Name string
	// Addrs are host:port pairs (port 5696 if left out), tried in order: the
	// first that connects is used until its connection breaks.
	Addrs []string
	// CACert is a PEM file of the CA certificate(s) that signed the server's
	// certificate. ClientCert and ClientKey are the PEM files of kmd's
	// client certificate and its private key.
	CACert, ClientCert, ClientKey string
	// MinTLSVersion is tls.VersionTLS12 (the default) or tls.VersionTLS13.
	MinTLSVersion uint16
	// ConnectTimeout bounds connecting to one address: TCP, TLS handshake
	// and KMIP version negotiation. Default 10s.
	ConnectTimeout time.Duration
	// OpTimeout bounds each KMIP request (a Create is four of them: Locate,
	// Create, Activate, Get). Default 30s.
	OpTimeout time.Duration
	// NodeID goes into the Name of each key: kmd/<node>/<domain>/<key-id>.
	NodeID int
}

var serverName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// normalize checks cfg and fills in defaults. It does not read files.
func (cfg ServerConfig) normalize() (ServerConfig, error) {
	bad := func(format string, args ...any) (ServerConfig, error) {
		return ServerConfig{}, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if !serverName.MatchString(cfg.Name) {
		return bad("server name %q: want 1-64 letters, digits, '.', '_' or '-'", cfg.Name)
	}
	if strings.EqualFold(cfg.Name, provider.LocationLocal) {
		return bad("server name %q is reserved for local keys", cfg.Name)
	}
	name := cfg.Name
	if len(cfg.Addrs) == 0 {
		return bad("kmip server %s: no address; want at least one host:port", name)
	}
	addrs := make([]string, 0, len(cfg.Addrs))
	for _, a := range cfg.Addrs {
		norm, err := normalizeAddr(a)
		if err != nil {
			return bad("kmip server %s: address %q: %v", name, a, err)
		}
		addrs = append(addrs, norm)
	}
	cfg.Addrs = addrs
	switch cfg.MinTLSVersion {
	case 0:
		cfg.MinTLSVersion = DefaultMinTLSVersion
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return bad("kmip server %s: minimum TLS version %s not allowed; want TLS 1.2 or TLS 1.3", name, tls.VersionName(cfg.MinTLSVersion))
	}
	switch {
	case cfg.ConnectTimeout == 0:
		cfg.ConnectTimeout = DefaultConnectTimeout
	case cfg.ConnectTimeout < 0:
		return bad("kmip server %s: connect timeout %s is negative", name, cfg.ConnectTimeout)
	}
	switch {
	case cfg.OpTimeout == 0:
		cfg.OpTimeout = DefaultOpTimeout
	case cfg.OpTimeout < 0:
		return bad("kmip server %s: operation timeout %s is negative", name, cfg.OpTimeout)
	}
	if cfg.NodeID < 0 {
		return bad("kmip server %s: node id %d is negative", name, cfg.NodeID)
	}
	for _, f := range []struct{ what, path string }{
		{"CA certificate", cfg.CACert}, {"client certificate", cfg.ClientCert}, {"client key", cfg.ClientKey},
	} {
		if f.path == "" {
			return bad("kmip server %s: no %s file given", name, f.what)
		}
	}
	return cfg, nil
}

// normalizeAddr checks host:port and adds the default port to a bare host.
func normalizeAddr(a string) (string, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		if !strings.Contains(err.Error(), "missing port") {
			return "", errors.New("want host:port")
		}
		host, port = strings.Trim(a, "[]"), strconv.Itoa(DefaultPort)
	}
	if host == "" {
		return "", errors.New("no host; want host:port")
	}
	if strings.ContainsAny(host, " /\t") {
		return "", errors.New("not a host name or IP address")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q: want 1-65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

// loadTLS reads and checks the three PEM files and returns the client TLS
// configuration common to every address (ServerName is set per address).
func loadTLS(cfg ServerConfig, now time.Time) (*tls.Config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: kmip server %s: %s", ErrConfig, cfg.Name, fmt.Sprintf(format, args...))
	}

	// CA certificate(s).
	caPEM, err := readFile(cfg.CACert)
	if err != nil {
		return nil, bad("CA certificate %v; want the PEM file of the CA that signed the server's certificate", err)
	}
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, bad("CA certificate %s %v", cfg.CACert, err)
	}
	roots := x509.NewCertPool()
	var validCA bool
	var caProblem string
	for _, c := range cas {
		roots.AddCert(c)
		if p := validity(c, now); p == "" {
			validCA = true
		} else if caProblem == "" {
			caProblem = p
		}
	}
	if !validCA {
		return nil, bad("CA certificate %s (%s) %s; want a currently valid CA certificate", cfg.CACert, cas[0].Subject, caProblem)
	}

	// Client certificate.
	certPEM, err := readFile(cfg.ClientCert)
	if err != nil {
		return nil, bad("client certificate %v; want the PEM file of kmd's client certificate", err)
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, bad("client certificate %s %v", cfg.ClientCert, err)
	}
	leaf := certs[0]
	if p := validity(leaf, now); p != "" {
		return nil, bad("client certificate %s (%s) %s; want a currently valid certificate", cfg.ClientCert, leaf.Subject, p)
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil, bad("client certificate %s (%s) is not for client authentication; want one whose extended key usage includes clientAuth", cfg.ClientCert, leaf.Subject)
	}

	// Client key.
	keyPEM, err := readFile(cfg.ClientKey)
	if err != nil {
		return nil, bad("client key %v; want the PEM file of the client certificate's private key", err)
	}
	if err := checkKeyPEM(keyPEM); err != nil {
		return nil, bad("client key %s %v", cfg.ClientKey, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, bad("client key %s does not match client certificate %s; want the private key of that certificate", cfg.ClientKey, cfg.ClientCert)
		}
		return nil, bad("client key %s: %v", cfg.ClientKey, err)
	}
	clear(keyPEM)

	return &tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{pair},
		MinVersion:   cfg.MinTLSVersion,
	}, nil
}

// readFile reads path; its errors start with the path and say what is
// wrong in plain words.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s does not exist", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s cannot be read by kmd (permission denied)", path)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s cannot be read: %v", path, err)
	case len(b) == 0:
		return nil, fmt.Errorf("%s is empty", path)
	}
	return b, nil
}

// parseCerts returns the certificates of a PEM file; its errors complete
// "<what> <path> …".
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s, not a certificate; want a PEM file of -----BEGIN CERTIFICATE----- blocks", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("holds a CERTIFICATE block that does not parse as X.509 (%v)", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("is not PEM; want a PEM file of -----BEGIN CERTIFICATE----- blocks")
	}
	return certs, nil
}

// checkKeyPEM checks that data holds an unencrypted PEM private key; its
// errors complete "client key <path> …" and never quote the file.
func checkKeyPEM(data []byte) error {
	block, _ := pem.Decode(data)
	switch {
	case block == nil:
		return errors.New("is not PEM; want a PEM file of one -----BEGIN PRIVATE KEY----- block")
	case block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "":
		return errors.New("is encrypted; want an unencrypted PEM private key (kmd cannot prompt for a passphrase)")
	case !strings.HasSuffix(block.Type, "PRIVATE KEY"):
		return fmt.Errorf("holds a %s, not a private key; want a PEM file of one -----BEGIN PRIVATE KEY----- block", block.Type)
	}
	return nil
}

// validity says why c is not valid at now, or "" if it is.
func validity(c *x509.Certificate, now time.Time) string {
	switch {
	case now.Before(c.NotBefore):
		return "is not valid before " + c.NotBefore.UTC().Format(time.RFC3339)
	case now.After(c.NotAfter):
		return "expired at " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

// ValidateServerName checks a server name: 1–64 of letters, digits and
// "._-", starting with a letter or digit, and not "Local".
func ValidateServerName(name string) error {
	if !serverName.MatchString(name) || strings.EqualFold(name, provider.LocationLocal) {
		return fmt.Errorf("%w: server name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not \"Local\"", ErrConfig, name)
	}
	return nil
}
