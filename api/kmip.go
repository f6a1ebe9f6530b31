package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Paths of the KMIP and migration endpoints.
const (
	// PathKMIPServers: GET list, POST create; + "{name}": GET view, DELETE;
	// + "{name}/verify": POST verify.
	PathKMIPServers = "/v1/kmip/servers/"
	// PathMigrate + "{scope}": POST start a migration.
	PathMigrate = "/v1/migrate/"
)

// KMIPServerCreateRequest is the body of POST /v1/kmip/servers/. The PEM
// files travel in the request: kmd keeps its own copies, mode 0600.
type KMIPServerCreateRequest struct {
	Name              string `json:"name"`
	Host              string `json:"host"`
	Port              int    `json:"port"`               // default 5696
	CACertPEM         string `json:"ca_cert_pem"`        // the CA that signed the server's certificate
	ClientCertPEM     string `json:"client_cert_pem"`    // kmd's client certificate
	ClientKeyPEM      string `json:"client_key_pem"`     // its private key; never logged or returned
	MinTLSVersion     string `json:"min_tls_version"`    // "1.2" (default) or "1.3"
	ConnectionTimeout string `json:"connection_timeout"` // Go duration, default "10s"
	CACertFile        string `json:"ca_cert_file"`       // the operator's paths, for the record
	ClientCertFile    string `json:"client_cert_file"`   //
	ClientKeyFile     string `json:"client_key_file"`    //
}

// KMIPServer is a configured KMIP server as listed and viewed.
type KMIPServer struct {
	Name              string    `json:"name"`
	Host              string    `json:"host"`
	Port              int       `json:"port"`
	MinTLSVersion     string    `json:"min_tls_version"`
	ConnectionTimeout string    `json:"connection_timeout"`
	ClientCertSubject string    `json:"client_cert_subject"`
	ClientCertExpires time.Time `json:"client_cert_expires"`
	Created           time.Time `json:"created"`
	Keys              int       `json:"keys"`    // MKs that live there
	Domains           []string  `json:"domains"` // domains whose current MK lives there
}

// KMIPServerList is GET /v1/kmip/servers/.
type KMIPServerList struct {
	Servers []KMIPServer `json:"servers"`
}

// KMIPVerifyStep is one step of a verification probe.
type KMIPVerifyStep struct {
	Name   string `json:"name"`   // create, activate, locate, get, revoke, destroy
	Result string `json:"result"` // ok, failed, skipped
	Error  string `json:"error,omitempty"`
}

// KMIPVerifyReport is the result of verifying one server.
type KMIPVerifyReport struct {
	Server      string           `json:"server"`
	Addr        string           `json:"addr"`
	Reachable   bool             `json:"reachable"`
	TLSVersion  string           `json:"tls_version"`
	KMIPVersion string           `json:"kmip_version"`
	Steps       []KMIPVerifyStep `json:"steps"`
	OK          bool             `json:"ok"`
	Error       string           `json:"error,omitempty"`
}

// KMIPVerifyResponse is the answer of POST /v1/kmip/servers/{name}/verify
// (or of /v1/kmip/servers/-/verify for every server).
type KMIPVerifyResponse struct {
	Reports []KMIPVerifyReport `json:"reports"`
}

// MigrateRequest is the body of POST /v1/migrate/{scope}: exactly one of
// ToServer and ToLocal.
type MigrateRequest struct {
	ToServer string   `json:"to_server,omitempty"`
	ToLocal  bool     `json:"to_local,omitempty"`
	Domains  []string `json:"domains,omitempty"` // cluster scope only; empty: all
	Retry    bool     `json:"retry,omitempty"`   // retry a failed migration now
}

// KMIPServers lists the configured KMIP servers.
func (c *Client) KMIPServers(ctx context.Context) (KMIPServerList, error) {
	var out KMIPServerList
	_, err := c.do(ctx, http.MethodGet, PathKMIPServers, nil, nil, &out)
	return out, err
}

// KMIPServer views one server.
func (c *Client) KMIPServer(ctx context.Context, name string) (KMIPServer, error) {
	var out KMIPServer
	_, err := c.do(ctx, http.MethodGet, PathKMIPServers+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// CreateKMIPServer adds a server after checking its files and connection.
func (c *Client) CreateKMIPServer(ctx context.Context, req KMIPServerCreateRequest) (KMIPServer, error) {
	var out KMIPServer
	_, err := c.do(ctx, http.MethodPost, PathKMIPServers, nil, jsonBody(req), &out)
	return out, err
}

// DeleteKMIPServer removes a server; refused while an MK lives there.
func (c *Client) DeleteKMIPServer(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, PathKMIPServers+url.PathEscape(name), nil, nil, nil)
	return err
}

// VerifyKMIPServers verifies one server, or all when name is "".
func (c *Client) VerifyKMIPServers(ctx context.Context, name string) (KMIPVerifyResponse, error) {
	if name == "" {
		name = "-"
	}
	var out KMIPVerifyResponse
	_, err := c.do(ctx, http.MethodPost, PathKMIPServers+url.PathEscape(name)+"/verify", nil, nil, &out)
	return out, err
}

// Migrate starts a migration of a scope's MKs to a KMIP server or back to
// local key files.
func (c *Client) Migrate(ctx context.Context, scope string, req MigrateRequest) (RekeyStartResponse, error) {
	var out RekeyStartResponse
	_, err := c.do(ctx, http.MethodPost, PathMigrate+url.PathEscape(scope), nil, jsonBody(req), &out)
	return out, err
}
