package server_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/internal/testca"
)

// serveTLS serves k's API over HTTPS with client certificates from ca
// required, as kmd's --listen does.
func serveTLS(t *testing.T, k *kmd, ca *testca.CA) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(k.handler)
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// tlsClient is a client of ts presenting cert.
func tlsClient(ts *httptest.Server, cert tls.Certificate) *http.Client {
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	return &http.Client{Transport: tr, Timeout: requestLimit}
}

func call(t *testing.T, c *http.Client, base, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// accessPolicy maps the test certificates to roles.
func accessPolicy(t *testing.T) *access.Policy {
	t.Helper()
	p, err := access.NewPolicy([]access.Rule{
		{Role: "monitor", Subjects: []string{"CN=prometheus"}},
		{Role: "service:S3", Subjects: []string{"CN=s3-gateway,O=Acme"}},
		{Role: "admin", Subjects: []string{"CN=ops"}},
	}, append(domains.ClusterDomains, domains.SEDDomain), 4242)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The requests of the role tests.
var (
	getVersion  = req{"GET", api.PathVersion, ""}
	getStatus   = req{"GET", api.PathStatus + "cluster", ""}
	getSEDState = req{"GET", api.PathStatus + "sed", ""}
	getView     = req{"GET", api.PathRekey + "cluster", ""}
	getEvents   = req{"GET", api.PathEvents, ""}
	modify      = req{"PUT", api.PathRekey + "cluster", `{"key_rotation":"6W"}`}
	startRekey  = req{"POST", api.PathRekey + "cluster", `{"domains":["S3"]}`}
	startSED    = req{"POST", api.PathRekey + "sed", ``}
	putS3       = req{"PUT", api.EntryPath("S3", "k"), "v3"}
	getS3       = req{"GET", api.EntryPath("S3", "k"), ""}
	getS3Absent = req{"GET", api.EntryPath("S3", "absent"), ""}
	listS3      = req{"GET", api.PathDomains + "S3/entries", ""}
	importS3    = req{"POST", api.PathDomains + "S3/import", `{"name":"imported","value":"aW1w"}`}
	deleteS3    = req{"DELETE", api.EntryPath("S3", "imported"), ""}
	exportS3    = req{"GET", api.PathDomains + "S3/export", ""}
	putSSO      = req{"PUT", api.EntryPath("SSO", "k"), "vsso"}
	getSSO      = req{"GET", api.EntryPath("SSO", "k"), ""}
	getSSOAbs   = req{"GET", api.EntryPath("SSO", "absent"), ""}
	listSSO     = req{"GET", api.PathDomains + "SSO/entries", ""}
	deleteSSO   = req{"DELETE", api.EntryPath("SSO", "k"), ""}
	importSSO   = req{"POST", api.PathDomains + "SSO/import", `{"name":"x","value":"eA=="}`}
	getNoDomain = req{"GET", api.EntryPath("NOPE", "k"), ""}
	listKMIP    = req{"GET", api.PathKMIPServers, ""}
	createKMIP  = req{"POST", api.PathKMIPServers, `{}`}
	migrate     = req{"POST", api.PathMigrate + "sed", `{"to_local":true}`}
	unknown     = req{"GET", "/v1/nothing", ""}
	badDomainOp = req{"GET", api.PathDomains + "S3/nothing", ""}
)

type req struct{ method, path, body string }

func (r req) String() string { return r.method + " " + r.path }

func TestAccess_Roles(t *testing.T) {
	k := startKMD(t, kmdOptions{serverOpts: []server.Option{server.WithPolicy(accessPolicy(t))}})
	ca := testca.New(t, "kmd test CA", time.Time{}, time.Time{})
	ts := serveTLS(t, k, ca)
	admin := tlsClient(ts, ca.Issue(t, pkix.Name{CommonName: "ops"}, false).TLS)
	monitor := tlsClient(ts, ca.Issue(t, pkix.Name{CommonName: "prometheus"}, false).TLS)
	s3 := tlsClient(ts, ca.Issue(t, pkix.Name{CommonName: "s3-gateway", Organization: []string{"Acme"}}, false).TLS)
	stranger := tlsClient(ts, ca.Issue(t, pkix.Name{CommonName: "stranger"}, false).TLS)

	// What the refused requests must leave as it is.
	if _, err := k.c.Put(t.Context(), "SSO", "k", []byte("sso-value"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	before := domainStatus(t, k, "S3").KeyID

	type step struct {
		r      req
		status int
		msg    string // for a 403: the whole message
	}
	run := func(t *testing.T, c *http.Client, steps []step) {
		t.Helper()
		for _, s := range steps {
			status, body := call(t, c, ts.URL, s.r.method, s.r.path, []byte(s.r.body))
			if status != s.status {
				t.Errorf("%s: %d %s, want %d", s.r, status, body, s.status)
				continue
			}
			if status == http.StatusForbidden {
				var eb api.ErrorBody
				if err := json.Unmarshal(body, &eb); err != nil || eb.Code != api.CodeForbidden || eb.Error != s.msg {
					t.Errorf("%s: 403 %s; want code forbidden and the message %q", s.r, body, s.msg)
				}
			}
		}
	}

	t.Run("monitor reads status, views and events, and nothing else", func(t *testing.T) {
		const who = "CN=prometheus may not "
		const needsAdmin = ": it needs the admin role (it has monitor)"
		run(t, monitor, []step{
			{getVersion, 200, ""},
			{getStatus, 200, ""},
			{getSEDState, 200, ""},
			{getView, 200, ""},
			{getEvents, 200, ""},
			{startRekey, 403, who + "start a rekey of cluster" + needsAdmin},
			{startSED, 403, who + "start a rekey of sed" + needsAdmin},
			{modify, 403, who + "change the key rotation of cluster" + needsAdmin},
			{getS3, 403, who + "read entries of S3: it needs the service:S3 role (or admin) (it has monitor)"},
			{getSSO, 403, who + "read entries of SSO: it needs the service:SSO role (or admin) (it has monitor)"},
			{putS3, 403, who + "write entries of S3: it needs the service:S3 role (or admin) (it has monitor)"},
			{listS3, 403, who + "list the entries of S3: it needs the service:S3 role (or admin) (it has monitor)"},
			{importS3, 403, who + "import entries into S3: it needs the service:S3 role (or admin) (it has monitor)"},
			{exportS3, 403, who + "export the entries of S3" + needsAdmin},
			{listKMIP, 403, who + "GET /v1/kmip/servers/" + needsAdmin},
			{createKMIP, 403, who + "POST /v1/kmip/servers/" + needsAdmin},
			{migrate, 403, who + "POST /v1/migrate/sed" + needsAdmin},
			{unknown, 403, who + "GET /v1/nothing" + needsAdmin},
		})
	})

	t.Run("service:S3 uses S3's entries and nothing else", func(t *testing.T) {
		const who = "CN=s3-gateway,O=Acme may not "
		const has = " (it has service:S3)"
		run(t, s3, []step{
			{getVersion, 200, ""},
			{putS3, 204, ""},
			{getS3, 200, ""},
			{getS3Absent, 404, ""},
			{listS3, 200, ""},
			{importS3, 200, ""},
			{deleteS3, 204, ""},
			{getSSO, 403, who + "read entries of SSO: it needs the service:SSO role (or admin)" + has},
			{getSSOAbs, 403, who + "read entries of SSO: it needs the service:SSO role (or admin)" + has},
			{putSSO, 403, who + "write entries of SSO: it needs the service:SSO role (or admin)" + has},
			{deleteSSO, 403, who + "delete entries of SSO: it needs the service:SSO role (or admin)" + has},
			{listSSO, 403, who + "list the entries of SSO: it needs the service:SSO role (or admin)" + has},
			{importSSO, 403, who + "import entries into SSO: it needs the service:SSO role (or admin)" + has},
			{getNoDomain, 403, who + "read entries of NOPE: it needs the service:NOPE role (or admin)" + has},
			{exportS3, 403, who + "export the entries of S3: it needs the admin role" + has},
			{badDomainOp, 403, who + "GET /v1/domains/S3/nothing: it needs the admin role" + has},
			{startRekey, 403, who + "start a rekey of cluster: it needs the admin role" + has},
			{getStatus, 403, who + "read the status of cluster: it needs the monitor role (or admin)" + has},
			{getEvents, 403, who + "list the events: it needs the monitor role (or admin)" + has},
		})
	})

	t.Run("a certificate with no role gets the version only", func(t *testing.T) {
		run(t, stranger, []step{
			{getVersion, 200, ""},
			{getStatus, 403, "CN=stranger may not read the status of cluster: it needs the monitor role (or admin) (it has no role)"},
			{getS3, 403, "CN=stranger may not read entries of S3: it needs the service:S3 role (or admin) (it has no role)"},
		})
	})

	// Nothing the refusals touched changed.
	if got, _, err := k.c.Get(t.Context(), "SSO", "k"); err != nil || string(got) != "sso-value" {
		t.Errorf("SSO entry after refused writes: %q, %v", got, err)
	}
	if st := domainStatus(t, k, "S3"); st.KeyID != before || st.Rekey != nil {
		t.Errorf("S3 after refused rekeys: key %s (was %s), rekey %+v", st.KeyID, before, st.Rekey)
	}
	if v, err := k.c.RekeyView(t.Context(), api.ScopeCluster); err != nil || v.KeyRotation != "Never" {
		t.Errorf("rekey view after refused modifies: %+v, %v", v, err)
	}

	t.Run("admin does everything", func(t *testing.T) {
		run(t, admin, []step{
			{getVersion, 200, ""},
			{getStatus, 200, ""},
			{getView, 200, ""},
			{getEvents, 200, ""},
			{modify, 200, ""},
			{putSSO, 204, ""},
			{getSSO, 200, ""},
			{listSSO, 200, ""},
			{exportS3, 200, ""},
			{getNoDomain, 404, ""},
			{listKMIP, 200, ""},
			{migrate, 409, ""}, // nothing to migrate: past the role check
			{unknown, 404, ""},
			{badDomainOp, 404, ""},
			{startSED, 202, ""},
		})
	})

	// Each refusal is logged, at WARN, with who, from where, what and the
	// role it needs.
	var found bool
	for _, e := range k.logs.FilterMessage("access refused").All() {
		f := e.ContextMap()
		if e.Level != zapcore.WarnLevel {
			t.Errorf("refusal logged at %v, want WARN", e.Level)
		}
		if f["who"] == "CN=s3-gateway,O=Acme" && f["method"] == "PUT" && f["path"] == "/v1/domains/SSO/entries/k" {
			found = true
			if f["needs"] != "service:SSO" || f["roles"] != "service:S3" || !strings.HasPrefix(f["from"].(string), "127.0.0.1:") {
				t.Errorf("refusal logged with %v", f)
			}
		}
	}
	if !found {
		t.Error("the refused PUT of an SSO entry by service:S3 was not logged with who asked")
	}
}

// TestAccess_Socket checks that the socket's peer is named by its uid:
// root is admin.
func TestAccess_Socket(t *testing.T) {
	k := startKMD(t, kmdOptions{serverOpts: []server.Option{server.WithPolicy(accessPolicy(t))}})
	if _, err := k.c.StartRekey(t.Context(), api.ScopeSED, nil); err != nil {
		t.Errorf("root on the socket could not start a rekey: %v", err)
	}
	status, _, body := k.do(t, "GET", api.PathDomains+"SSO/export", nil, nil)
	if status != 200 {
		t.Errorf("root on the socket could not export: %d %s", status, body)
	}
}

// TestAccess_OuterCaller checks callers that are neither socket peers nor
// certificate holders: a caller an outer handler stored (as the web page's
// gate stores a session's) is kept and its roles apply; a request from no
// one kmd can name is refused.
func TestAccess_OuterCaller(t *testing.T) {
	k := startKMD(t, kmdOptions{})
	gate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Session") == "s1" {
			c := &access.Caller{Via: access.ViaSession, Subject: "uid 1000", Remote: r.RemoteAddr, Roles: []access.Role{access.Monitor}}
			r = r.WithContext(access.WithCaller(r.Context(), c))
		}
		k.handler.ServeHTTP(w, r)
	})
	ts := httptest.NewServer(gate) // plain HTTP on loopback, like --ui-listen
	t.Cleanup(ts.Close)

	do := func(r req, sess string) (int, api.ErrorBody) {
		t.Helper()
		hr, err := http.NewRequest(r.method, ts.URL+r.path, strings.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		if sess != "" {
			hr.Header.Set("X-Test-Session", sess)
		}
		resp, err := ts.Client().Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb api.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, eb
	}
	if status, eb := do(getStatus, "s1"); status != 200 {
		t.Errorf("session caller: status %d %+v, want 200", status, eb)
	}
	status, eb := do(startRekey, "s1")
	if want := "web session of uid 1000 may not start a rekey of cluster: it needs the admin role (it has monitor)"; status != 403 || eb.Error != want {
		t.Errorf("session caller starting a rekey: %d %q, want 403 %q", status, eb.Error, want)
	}
	for _, sess := range []string{"", "forged"} {
		status, eb := do(getVersion, sess)
		if status != 403 || eb.Code != api.CodeForbidden || !strings.Contains(eb.Error, "kmd cannot tell who sent this request") {
			t.Errorf("no caller (session %q): %d %+v, want 403 saying kmd cannot tell who asked", sess, status, eb)
		}
	}
	if len(k.logs.FilterMessage("access refused").FilterField(zapcore.Field{Key: "who", Type: zapcore.StringType, String: "unknown"}).All()) != 2 {
		t.Error("the requests from no one were not logged as refused")
	}
}

// A browser holding an admin's client certificate sends it with the
// requests another site's page makes too: over TLS, a change whose Origin
// is not kmd's own is refused, and changes nothing; the same request from
// kmd's own page, or with no Origin (as kmctl sends), goes through.
func TestAccess_TLSCrossSiteChangeRefused(t *testing.T) {
	k := startKMD(t, kmdOptions{serverOpts: []server.Option{server.WithPolicy(accessPolicy(t))}})
	ca := testca.New(t, "kmd test CA", time.Time{}, time.Time{})
	ts := serveTLS(t, k, ca)
	admin := tlsClient(ts, ca.Issue(t, pkix.Name{CommonName: "ops"}, false).TLS)
	put := func(origin, value string) (int, []byte) {
		req, err := http.NewRequest(http.MethodPut, ts.URL+api.EntryPath("S3", "k"), strings.NewReader(value))
		if err != nil {
			t.Fatal(err)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := admin.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if status, body := put("https://evil.example", "from elsewhere"); status != http.StatusForbidden || !strings.Contains(string(body), "another site's page (Origin https://evil.example) is refused") {
		t.Errorf("cross-site PUT: %d %s, want 403 naming the origin", status, body)
	}
	if _, _, err := k.c.Get(t.Context(), "S3", "k"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("the refused cross-site PUT wrote the entry: %v", err)
	}
	if status, body := put(ts.URL, "from kmd's page"); status != http.StatusNoContent {
		t.Errorf("same-origin PUT: %d %s, want 204", status, body)
	}
	if status, body := put("", "from kmctl"); status != http.StatusNoContent {
		t.Errorf("PUT with no Origin: %d %s, want 204", status, body)
	}
	if v, _, err := k.c.Get(t.Context(), "S3", "k"); err != nil || string(v) != "from kmctl" {
		t.Errorf("S3/k = %q, %v", v, err)
	}
	// Reading is no change: another site's page cannot see the answer anyway.
	if status, _ := call(t, admin, ts.URL, http.MethodGet, api.PathStatus+"cluster", nil); status != http.StatusOK {
		t.Errorf("GET status over TLS: %d", status)
	}
}
