package server_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
)

// createRequest is a create request for the test KMIP server ts, with its
// PEM files read in.
func createRequest(t *testing.T, ts *kmiptestserver.Server, name string) api.KMIPServerCreateRequest {
	t.Helper()
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	host, port, err := net.SplitHostPort(ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return api.KMIPServerCreateRequest{Name: name, Host: host, Port: p, CACertPEM: read(ts.CACert),
		ClientCertPEM: read(ts.ClientCert), ClientKeyPEM: read(ts.ClientKey), ConnectionTimeout: "5s"}
}

// pemBody is the base64 of a PEM block, without its armour: what would show
// if it leaked.
func pemBody(p string) string {
	var lines []string
	for l := range strings.Lines(p) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "-----") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func sedRow(t *testing.T, k *kmd) api.NodeStatus {
	t.Helper()
	st, err := k.c.SEDStatus(t.Context())
	if err != nil || len(st.Nodes) != 1 {
		t.Fatalf("sed status: %+v %v", st, err)
	}
	return st.Nodes[0]
}

// A KMIP server is created, verified, used by a migration, refused deletion
// while it holds an MK, and deleted once the MK is back in local files.
func TestKMIP_ServerLifecycleAndMigration(t *testing.T) {
	t.Parallel()
	ts := kmiptestserver.Start(t)
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	req := createRequest(t, ts, "kmip1")
	// The client key is a secret: no answer or log line may hold it.
	k.forbidden.add(pemBody(req.ClientKeyPEM))
	if _, err := k.c.Put(ctx, "SED", "drive-1", []byte(marker), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	status, _, body := k.do(t, "GET", api.PathKMIPServers, nil, nil)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"servers":[]}` {
		t.Fatalf("empty list: %d %s", status, body)
	}

	t.Run("create refusals", func(t *testing.T) {
		mod := func(f func(*api.KMIPServerCreateRequest)) []byte {
			r := req
			f(&r)
			b, _ := json.Marshal(r)
			return b
		}
		for _, tc := range []struct {
			name   string
			body   []byte
			status int
			code   string
			says   string
		}{
			{"unknown field", []byte(`{"name":"x","hostname":"h"}`), 400, api.CodeBadRequest, `"host"`},
			{"two values", append(mod(func(*api.KMIPServerCreateRequest) {}), "{}"...), 400, api.CodeBadRequest, `"host"`},
			{"no host", mod(func(r *api.KMIPServerCreateRequest) { r.Host = "" }), 400, api.CodeBadRequest, "host"},
			{"port out of range", mod(func(r *api.KMIPServerCreateRequest) { r.Port = 70000 }), 400, api.CodeBadRequest, "1-65535"},
			{"TLS 1.1", mod(func(r *api.KMIPServerCreateRequest) { r.MinTLSVersion = "1.1" }), 400, api.CodeBadRequest, "1.2 or 1.3"},
			{"bad timeout", mod(func(r *api.KMIPServerCreateRequest) { r.ConnectionTimeout = "10" }), 400, api.CodeBadRequest, "10s"},
			{"negative timeout", mod(func(r *api.KMIPServerCreateRequest) { r.ConnectionTimeout = "-1s" }), 400, api.CodeBadRequest, "10s"},
			{"bad name", mod(func(r *api.KMIPServerCreateRequest) { r.Name = "a b" }), 400, api.CodeInvalidValue, "want"},
			{"reserved name", mod(func(r *api.KMIPServerCreateRequest) { r.Name = "Local" }), 400, api.CodeInvalidValue, "Local"},
			{"not a CA", mod(func(r *api.KMIPServerCreateRequest) { r.CACertPEM = "not PEM" }), 400, api.CodeInvalidValue, "CA certificate"},
			{"key for cert", mod(func(r *api.KMIPServerCreateRequest) { r.ClientKeyPEM = r.ClientCertPEM }), 400, api.CodeInvalidValue, "key"},
			{"unreachable", mod(func(r *api.KMIPServerCreateRequest) { r.Port = closedPort(t) }), 503, api.CodeUnavailable, "kmip1"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, _, body := k.do(t, "POST", api.PathKMIPServers, nil, tc.body)
				eb := wantErrorBody(t, status, body, tc.status, tc.code)
				if !strings.Contains(eb.Error, tc.says) {
					t.Errorf("message %q does not say %s", eb.Error, tc.says)
				}
			})
		}
		if list, err := k.c.KMIPServers(ctx); err != nil || len(list.Servers) != 0 {
			t.Fatalf("after refused creates: %+v %v", list, err)
		}
	})

	created, err := k.c.CreateKMIPServer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != "kmip1" || created.Host != req.Host || created.Port != req.Port || created.MinTLSVersion != "1.2" ||
		created.ConnectionTimeout != "5s" || created.ClientCertSubject == "" || created.Keys != 0 || created.Domains == nil {
		t.Fatalf("created %+v", created)
	}
	_, err = k.c.CreateKMIPServer(ctx, req)
	wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	if got, err := k.c.KMIPServer(ctx, "kmip1"); err != nil || got.Name != "kmip1" {
		t.Fatalf("view: %+v %v", got, err)
	}
	for _, call := range []func() error{
		func() error { _, err := k.c.KMIPServer(ctx, "nope"); return err },
		func() error { return k.c.DeleteKMIPServer(ctx, "nope") },
		func() error { _, err := k.c.VerifyKMIPServers(ctx, "nope"); return err },
		func() error {
			_, err := k.c.Migrate(ctx, api.ScopeSED, api.MigrateRequest{ToServer: "nope"})
			return err
		},
	} {
		wantAPIError(t, call(), http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	}
	for _, name := range []string{"kmip1", ""} {
		v, err := k.c.VerifyKMIPServers(ctx, name)
		if err != nil || len(v.Reports) != 1 || !v.Reports[0].OK || v.Reports[0].Server != "kmip1" || len(v.Reports[0].Steps) == 0 {
			t.Fatalf("verify %q: %+v %v", name, v, err)
		}
	}

	t.Run("migrate refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name, scope, body string
			status            int
			code              string
		}{
			{"neither target", "sed", `{}`, 400, api.CodeBadRequest},
			{"both targets", "sed", `{"to_server":"kmip1","to_local":true}`, 400, api.CodeBadRequest},
			{"empty body", "sed", ``, 400, api.CodeBadRequest},
			{"unknown field", "sed", `{"to":"kmip1"}`, 400, api.CodeBadRequest},
			{"domains in sed", "sed", `{"to_server":"kmip1","domains":["SED"]}`, 400, api.CodeBadRequest},
			{"unknown scope", "nope", `{"to_server":"kmip1"}`, 404, api.CodeUnknownDomain},
			{"unknown domain", "cluster", `{"to_server":"kmip1","domains":["NOPE"]}`, 404, api.CodeUnknownDomain},
			{"already local", "sed", `{"to_local":true}`, 409, api.CodeConflict},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, _, body := k.do(t, "POST", api.PathMigrate+tc.scope, nil, []byte(tc.body))
				wantErrorBody(t, status, body, tc.status, tc.code)
			})
		}
		if row := sedRow(t, k); row.Location != "Local" || row.Status != api.StatusLocal {
			t.Fatalf("after refused migrations: %+v", row)
		}
	})

	before := sedRow(t, k)
	status, _, body = k.do(t, "POST", api.PathMigrate+"sed", nil, []byte(`{"to_server":"kmip1"}`))
	if status != http.StatusAccepted || strings.TrimSpace(string(body)) != `{"started":["SED"]}` {
		t.Fatalf("migrate: %d %s", status, body)
	}
	waitFor(t, "SED to be on kmip1", func() bool { r := sedRow(t, k); return r.Status == api.StatusKMIP })
	row := sedRow(t, k)
	if row.Location != "kmip1" || row.RemoteKeyID == "" || row.KeyID == before.KeyID || row.Error != "" {
		t.Fatalf("after migrating: %+v", row)
	}
	if got, _, err := k.c.Get(ctx, "SED", "drive-1"); err != nil || string(got) != marker {
		t.Fatalf("entry after migrating: %q %v", got, err)
	}
	if v, err := k.c.KMIPServer(ctx, "kmip1"); err != nil || v.Keys != 1 || !slices.Equal(v.Domains, []string{"SED"}) {
		t.Fatalf("view with the SED key: %+v %v", v, err)
	}
	// Status says the migration ended (see TestRekey_IdleStatusMeansStartable),
	// so a second one has nothing to do.
	_, err = k.c.Migrate(ctx, api.ScopeSED, api.MigrateRequest{ToServer: "kmip1"})
	wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	err = k.c.DeleteKMIPServer(ctx, "kmip1")
	ae := wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	if !strings.Contains(ae.Message, "migrate") {
		t.Errorf("message %q does not say what to do", ae.Message)
	}

	started, err := k.c.Migrate(ctx, api.ScopeSED, api.MigrateRequest{ToLocal: true})
	if err != nil || !slices.Equal(started.Started, []string{"SED"}) {
		t.Fatalf("migrate back: %+v %v", started, err)
	}
	waitFor(t, "SED to be local", func() bool { r := sedRow(t, k); return r.Status == api.StatusLocal })
	if row := sedRow(t, k); row.Location != "Local" || row.RemoteKeyID != "" {
		t.Fatalf("after migrating back: %+v", row)
	}
	if got, _, err := k.c.Get(ctx, "SED", "drive-1"); err != nil || string(got) != marker {
		t.Fatalf("entry after migrating back: %q %v", got, err)
	}
	waitFor(t, "kmip1 to hold no key", func() bool { v, err := k.c.KMIPServer(ctx, "kmip1"); return err == nil && v.Keys == 0 })
	status, _, body = k.do(t, "DELETE", api.PathKMIPServers+"kmip1", nil, nil)
	if status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	if list, err := k.c.KMIPServers(ctx); err != nil || len(list.Servers) != 0 {
		t.Fatalf("after delete: %+v %v", list, err)
	}
	if v, err := k.c.VerifyKMIPServers(ctx, ""); err != nil || len(v.Reports) != 0 {
		t.Fatalf("verify with no servers: %+v %v", v, err)
	}
}

// closedPort returns a local TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
