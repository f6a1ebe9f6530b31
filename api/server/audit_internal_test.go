package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/audit"
)

func newAuditedServer(t *testing.T) (*Server, *audit.Trail) {
	t.Helper()
	trail, err := audit.Open(audit.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	return New(nil, nil, zaptest.NewLogger(t), "test", WithAudit(trail)), trail
}

func serve(h http.Handler, method, target string, c *access.Caller) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(`{"domains":["S3"]}`))
	if c != nil {
		r = r.WithContext(access.WithCaller(r.Context(), c))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func onlyRecord(t *testing.T, trail *audit.Trail) audit.Record {
	t.Helper()
	recs, err := trail.List(time.Time{}, 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %+v, %v; want one", recs, err)
	}
	return recs[0]
}

// A refusal by a role check (the access layer's, before the handler
// proper) is recorded as refused, with 403 and the refusal's line.
func TestAudited_ForbiddenRecorded(t *testing.T) {
	s, trail := newAuditedServer(t)
	forbid := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusForbidden, api.ErrorBody{
			Error: "uid 1001 may not start a rekey of cluster: it needs the admin role (it has service:S3)", Code: api.CodeForbidden})
	})
	caller := &access.Caller{Via: access.ViaSocket, UID: 1001, Remote: "unix:/s", Roles: []access.Role{access.Service("S3")}}
	w := serve(s.audited(forbid), http.MethodPost, api.PathRekey+"cluster", caller)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"code":"forbidden"`) {
		t.Fatalf("answer %d %s; want the 403 as the handler wrote it", w.Code, w.Body)
	}
	r := onlyRecord(t, trail)
	if r.Action != "rekey.start" || r.Target != "cluster:S3" || r.Outcome != audit.Refused || r.Status != 403 ||
		r.Who != "uid 1001" || r.From != "unix:/s" || !strings.Contains(r.Error, "needs the admin role") {
		t.Errorf("record %+v", r)
	}
}

// A handler that panics is recorded as failed, and the panic goes on to
// net/http.
func TestAudited_PanicRecorded(t *testing.T) {
	s, trail := newAuditedServer(t)
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the handler's panic", p)
			}
		}()
		serve(s.audited(boom), http.MethodDelete, api.PathKMIPServers+"kmip1", rootCallerForTest)
	}()
	r := onlyRecord(t, trail)
	if r.Action != "kmip.server.delete" || r.Target != "kmip1" || r.Outcome != audit.Failed || r.Status != 500 || r.Error == "" {
		t.Errorf("record %+v", r)
	}
}

var rootCallerForTest = &access.Caller{Via: access.ViaSocket, UID: 0, Remote: "unix:/s"}

// A handler that writes its answer without WriteHeader answered 200; one
// that writes nothing answered 200 too.
func TestAudited_ImplicitStatus(t *testing.T) {
	s, trail := newAuditedServer(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(api.RekeyStartResponse{Started: []string{"SED"}})
	})
	w := serve(s.audited(h), http.MethodPost, api.PathRekey+"sed", nil)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"started":["SED"]`) {
		t.Errorf("answer %d %s", w.Code, w.Body)
	}
	r := onlyRecord(t, trail)
	if r.Status != 200 || r.Outcome != audit.OK || r.Detail != "started=SED" || r.Who != "unknown" || r.From != "192.0.2.1:1234" {
		t.Errorf("record %+v; want 200 ok started=SED, unknown from httptest's peer address", r)
	}
}

func TestAuditField(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	got := auditField(long)
	if len(got) > maxAuditField || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "éé") {
		t.Errorf("auditField of 800 bytes: %d bytes %q…", len(got), got[:10])
	}
	if got := auditField("a\nb\rc\xff"); got != "a b c\uFFFD" {
		t.Errorf("auditField folds lines and bad UTF-8: %q", got)
	}
	if got := auditField("S3/gw/token"); got != "S3/gw/token" {
		t.Errorf("auditField changed a plain value: %q", got)
	}
}

func TestAuditedRequest_Actions(t *testing.T) {
	for _, tc := range []struct {
		method, path   string
		action, target string
	}{
		{"PUT", "/v1/domains/S3/entries/gw%2Ftoken", "entry.put", "S3/gw/token"},
		{"DELETE", "/v1/domains/SED/entries/%2E%2E", "entry.delete", "SED/.."},
		{"POST", "/v1/domains/S3/import", "entry.import", "S3"},
		{"PUT", "/v1/rekey/sed", "rekey.modify", "sed"},
		{"POST", "/v1/rekey/cluster", "rekey.start", "cluster"},
		{"POST", "/v1/migrate/cluster", "migrate", "cluster"},
		{"POST", "/v1/kmip/servers/", "kmip.server.create", ""},
		{"DELETE", "/v1/kmip/servers/kmip1", "kmip.server.delete", "kmip1"},
		{"POST", "/v1/kmip/servers/kmip1/verify", "kmip.server.verify", "kmip1"},
		{"POST", "/v1/kmip/servers/-/verify", "kmip.server.verify", "all"},
		{"POST", "/v1/domains/S3/entries/a", "request", "POST /v1/domains/S3/entries/a"},
		{"PUT", "/v1/domains/S3/export", "request", "PUT /v1/domains/S3/export"},
		{"PATCH", "/v1/rekey/cluster", "request", "PATCH /v1/rekey/cluster"},
		{"DELETE", "/metrics", "request", "DELETE /metrics"},
	} {
		r := httptest.NewRequest(tc.method, "http://kmd"+tc.path, nil)
		a := newAuditedRequest(r)
		if a.action != tc.action || a.target != tc.target {
			t.Errorf("%s %s: %s %q; want %s %q", tc.method, tc.path, a.action, a.target, tc.action, tc.target)
		}
	}
}
