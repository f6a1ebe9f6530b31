package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
)

// serveUnix serves h on a unix socket until the test ends.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kmd") // t.TempDir() is too long for a socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "kmd.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return socket
}

// calls are every client method, for tests that hold for all of them.
var calls = []struct {
	name string
	call func(context.Context, *api.Client) error
}{
	{"Version", func(ctx context.Context, c *api.Client) error { _, err := c.Version(ctx); return err }},
	{"Get", func(ctx context.Context, c *api.Client) error { _, _, err := c.Get(ctx, "S3", "a"); return err }},
	{"Put", func(ctx context.Context, c *api.Client) error {
		_, err := c.Put(ctx, "S3", "a", []byte("v"), api.PutOptions{})
		return err
	}},
	{"Delete", func(ctx context.Context, c *api.Client) error { return c.Delete(ctx, "S3", "a", api.PutOptions{}) }},
	{"List", func(ctx context.Context, c *api.Client) error { _, err := c.List(ctx, "S3", "", 0); return err }},
	{"ListAll", func(ctx context.Context, c *api.Client) error { _, err := c.ListAll(ctx, "S3"); return err }},
	{"Import", func(ctx context.Context, c *api.Client) error {
		_, err := c.Import(ctx, "S3", strings.NewReader("{}"))
		return err
	}},
	{"Export", func(ctx context.Context, c *api.Client) error { return c.Export(ctx, "S3", io.Discard) }},
	{"ClusterStatus", func(ctx context.Context, c *api.Client) error { _, err := c.ClusterStatus(ctx); return err }},
	{"SEDStatus", func(ctx context.Context, c *api.Client) error { _, err := c.SEDStatus(ctx); return err }},
	{"StartRekey", func(ctx context.Context, c *api.Client) error {
		_, err := c.StartRekey(ctx, api.ScopeCluster, nil)
		return err
	}},
	{"RekeyView", func(ctx context.Context, c *api.Client) error { _, err := c.RekeyView(ctx, api.ScopeSED); return err }},
	{"RekeyModify", func(ctx context.Context, c *api.Client) error {
		_, err := c.RekeyModify(ctx, api.ScopeSED, "6W")
		return err
	}},
	{"Events", func(ctx context.Context, c *api.Client) error { _, err := c.Events(ctx, time.Time{}); return err }},
	{"KMIPServers", func(ctx context.Context, c *api.Client) error { _, err := c.KMIPServers(ctx); return err }},
	{"KMIPServer", func(ctx context.Context, c *api.Client) error { _, err := c.KMIPServer(ctx, "kmip1"); return err }},
	{"CreateKMIPServer", func(ctx context.Context, c *api.Client) error {
		_, err := c.CreateKMIPServer(ctx, api.KMIPServerCreateRequest{})
		return err
	}},
	{"DeleteKMIPServer", func(ctx context.Context, c *api.Client) error { return c.DeleteKMIPServer(ctx, "kmip1") }},
	{"VerifyKMIPServers", func(ctx context.Context, c *api.Client) error {
		_, err := c.VerifyKMIPServers(ctx, "")
		return err
	}},
	{"Migrate", func(ctx context.Context, c *api.Client) error {
		_, err := c.Migrate(ctx, api.ScopeSED, api.MigrateRequest{ToLocal: true})
		return err
	}},
}

func TestClient_ConnectErrorForMissingSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "kmd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "missing.sock")
	c := api.NewClient(socket)
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(t.Context(), c)
			var ce *api.ConnectError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v (%T), want *api.ConnectError", err, err)
			}
			if ce.Socket != socket || !errors.Is(err, syscall.ENOENT) {
				t.Errorf("socket %q, cause %v", ce.Socket, ce.Err)
			}
			// The hint (--socket, KMD_SOCKET) is kmctl's to give: a service
			// using this package has neither.
			if msg, want := err.Error(), "cannot reach kmd at "+socket+": "; !strings.HasPrefix(msg, want) ||
				!strings.Contains(msg, "no such file or directory") {
				t.Errorf("message %q, want %q and the cause", msg, want)
			}
			var ae *api.Error
			if errors.As(err, &ae) {
				t.Errorf("a connect error is also an *api.Error: %v", ae)
			}
		})
	}
}

// jsonError answers every request with status and {"error","code"}.
func jsonError(status int, code, msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: msg, Code: code})
	})
}

func TestError_UnwrapsToTheSentinelOfItsCode(t *testing.T) {
	sentinels := []error{api.ErrBadRequest, api.ErrForbidden, api.ErrNotFound, api.ErrUnknownDomain, api.ErrInProgress,
		api.ErrConflict, api.ErrVersion, api.ErrTooLarge, api.ErrUnavailable, api.ErrInternal}
	for _, tc := range []struct {
		status int
		code   string
		want   error
	}{
		{400, api.CodeBadRequest, api.ErrBadRequest},
		{400, api.CodeInvalidName, api.ErrBadRequest},
		{400, api.CodeInvalidValue, api.ErrBadRequest},
		{403, api.CodeForbidden, api.ErrForbidden},
		{404, api.CodeNotFound, api.ErrNotFound},
		{404, api.CodeUnknownDomain, api.ErrUnknownDomain},
		{409, api.CodeInProgress, api.ErrInProgress},
		{409, api.CodeConflict, api.ErrConflict},
		{412, api.CodeVersion, api.ErrVersion},
		{413, api.CodeTooLarge, api.ErrTooLarge},
		{503, api.CodeUnavailable, api.ErrUnavailable},
		{500, api.CodeInternal, api.ErrInternal},
		{418, "teapot", nil}, // a code this client does not know
	} {
		t.Run(tc.code, func(t *testing.T) {
			msg := "kmd says " + tc.code
			c := api.NewClient(serveUnix(t, jsonError(tc.status, tc.code, msg)))
			for _, call := range calls {
				err := call.call(t.Context(), c)
				var ae *api.Error
				if !errors.As(err, &ae) {
					t.Fatalf("%s: got %v (%T), want *api.Error", call.name, err, err)
				}
				if ae.Status != tc.status || ae.Code != tc.code || ae.Message != msg || err.Error() != msg {
					t.Errorf("%s: got %+v / %q", call.name, *ae, err.Error())
				}
				for _, s := range sentinels {
					if got := errors.Is(err, s); got != (s == tc.want) {
						t.Errorf("%s: errors.Is(err, %q) = %v", call.name, s, got)
					}
				}
				if tc.want == nil && ae.Unwrap() != nil {
					t.Errorf("%s: unknown code unwraps to %v", call.name, ae.Unwrap())
				}
			}
		})
	}
}

func TestError_NonJSONBodyNamesTheStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		ctype  string
		body   string
	}{
		{"text 502", http.StatusBadGateway, "text/plain", "upstream kmd is down\n"},
		{"HTML 502", http.StatusBadGateway, "text/html", "<html><body>Bad Gateway</body></html>"},
		{"empty 500", http.StatusInternalServerError, "", ""},
		{"JSON without error", http.StatusServiceUnavailable, "application/json", `{"code":"unavailable"}`},
		{"truncated JSON", http.StatusBadRequest, "application/json", `{"error":"bad`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := api.NewClient(serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.ctype != "" {
					w.Header().Set("Content-Type", tc.ctype)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})))
			for _, call := range calls {
				err := call.call(t.Context(), c)
				var ae *api.Error
				if !errors.As(err, &ae) {
					t.Fatalf("%s: got %v (%T), want *api.Error", call.name, err, err)
				}
				if ae.Status != tc.status || ae.Code != "" || ae.Unwrap() != nil {
					t.Errorf("%s: got %+v", call.name, *ae)
				}
				if want := fmt.Sprintf("kmd answered %d %s", tc.status, http.StatusText(tc.status)); ae.Message != want {
					t.Errorf("%s: message %q, want %q", call.name, ae.Message, want)
				}
			}
		})
	}
}

func TestClient_Export(t *testing.T) {
	const l1, l2 = `{"name":"a","value":"QQ=="}` + "\n", `{"name":"b","value":""}` + "\n"
	for _, tc := range []struct {
		name    string
		body    string
		short   bool // declare a longer Content-Length: the connection is cut
		wantOut string
		wantErr error
	}{
		{"complete", l1 + l2 + api.ExportEnd + "\n", false, l1 + l2, nil},
		{"empty domain", api.ExportEnd + "\n", false, "", nil},
		{"no end line", l1 + l2, false, l1 + l2, io.ErrUnexpectedEOF},
		{"nothing at all", "", false, "", io.ErrUnexpectedEOF},
		{"cut inside a line", l1 + `{"name":"b","val`, false, l1, io.ErrUnexpectedEOF},
		{"end line without newline", l1 + api.ExportEnd, false, l1, io.ErrUnexpectedEOF},
		{"end line not alone", l1 + api.ExportEnd + "x\n", false, l1 + api.ExportEnd + "x\n", io.ErrUnexpectedEOF},
		{"connection cut", l1 + l2, true, l1 + l2, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := api.NewClient(serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || r.URL.EscapedPath() != "/v1/domains/S%203/export" {
					http.Error(w, "wrong request "+r.Method+" "+r.URL.EscapedPath(), http.StatusTeapot)
					return
				}
				w.Header().Set("Content-Type", "application/x-ndjson")
				if tc.short {
					w.Header().Set("Content-Length", fmt.Sprint(len(tc.body)+100))
				}
				io.WriteString(w, tc.body)
			})))
			var out bytes.Buffer
			err := c.Export(t.Context(), "S 3", &out)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && !strings.Contains(err.Error(), "S 3") && !tc.short {
				t.Errorf("error %q does not name the domain", err)
			}
			if out.String() != tc.wantOut {
				t.Errorf("wrote %q, want %q", out.String(), tc.wantOut)
			}
		})
	}
}

// A cancelled export is the caller's doing, not an unreachable daemon: the
// other methods answer ctx.Err(), and Export should too.
func TestClient_CancelledIsNotAConnectError(t *testing.T) {
	c := api.NewClient(serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, api.ExportEnd+"\n")
	})))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, call := range calls {
		t.Run(call.name, func(t *testing.T) {
			err := call.call(ctx, c)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			var ce *api.ConnectError
			if errors.As(err, &ce) {
				t.Fatalf("got %q: a cancelled call is reported as an unreachable kmd", err)
			}
		})
	}
}

func TestClient_Requests(t *testing.T) {
	type seen struct {
		method, uri, ifMatch, ifNoneMatch, ctype string
		body                                     string
	}
	reqs := make(chan seen, 1)
	c := api.NewClient(serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reqs <- seen{r.Method, r.RequestURI, r.Header.Get("If-Match"), r.Header.Get("If-None-Match"),
			r.Header.Get("Content-Type"), string(b)}
		switch {
		case r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/entries/"):
			w.Header().Set("ETag", `"7"`)
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/entries/"):
			w.Header().Set("ETag", `"12"`)
			io.WriteString(w, "\x00value\xff")
		default:
			io.WriteString(w, "{}")
		}
	})))
	ctx := t.Context()
	since := time.Date(2026, 11, 22, 10, 19, 16, 5, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name string
		call func() error
		want seen
	}{
		{"put", func() error {
			v, err := c.Put(ctx, "S3", "a/b c%", []byte("v"), api.PutOptions{})
			if v != 7 {
				return fmt.Errorf("version %d, want 7", v)
			}
			return err
		}, seen{method: "PUT", uri: "/v1/domains/S3/entries/a%2Fb%20c%25", body: "v"}},
		{"put if version", func() error {
			_, err := c.Put(ctx, "S3", "a", nil, api.PutOptions{IfVersion: 3})
			return err
		}, seen{method: "PUT", uri: "/v1/domains/S3/entries/a", ifMatch: `"3"`}},
		{"put create only", func() error {
			_, err := c.Put(ctx, "S3", "a", nil, api.PutOptions{CreateOnly: true})
			return err
		}, seen{method: "PUT", uri: "/v1/domains/S3/entries/a", ifNoneMatch: "*"}},
		{"get", func() error {
			v, ver, err := c.Get(ctx, "S3", "ключ")
			if string(v) != "\x00value\xff" || ver != 12 {
				return fmt.Errorf("got %q v%d", v, ver)
			}
			return err
		}, seen{method: "GET", uri: "/v1/domains/S3/entries/%D0%BA%D0%BB%D1%8E%D1%87"}},
		{"delete if version", func() error { return c.Delete(ctx, "S3", "a", api.PutOptions{IfVersion: 9}) },
			seen{method: "DELETE", uri: "/v1/domains/S3/entries/a", ifMatch: `"9"`}},
		{"list", func() error { _, err := c.List(ctx, "S3", "a&b=c", 10); return err },
			seen{method: "GET", uri: "/v1/domains/S3/entries?after=a%26b%3Dc&limit=10"}},
		{"list defaults", func() error { _, err := c.List(ctx, "S3", "", 0); return err },
			seen{method: "GET", uri: "/v1/domains/S3/entries?"}},
		{"import", func() error { _, err := c.Import(ctx, "S3", strings.NewReader("line\n")); return err },
			seen{method: "POST", uri: "/v1/domains/S3/import", ctype: "application/x-ndjson", body: "line\n"}},
		{"start rekey", func() error { _, err := c.StartRekey(ctx, "cluster", []string{"S3", "SIQ"}); return err },
			seen{method: "POST", uri: "/v1/rekey/cluster", body: `{"domains":["S3","SIQ"]}`}},
		{"start whole scope", func() error { _, err := c.StartRekey(ctx, "sed", nil); return err },
			seen{method: "POST", uri: "/v1/rekey/sed", body: `{}`}},
		{"modify", func() error { _, err := c.RekeyModify(ctx, "sed", "6W"); return err },
			seen{method: "PUT", uri: "/v1/rekey/sed", body: `{"key_rotation":"6W"}`}},
		{"events since", func() error { _, err := c.Events(ctx, since); return err },
			seen{method: "GET", uri: "/v1/events?since=2026-11-22T09%3A19%3A16.000000005Z"}},
		// Dot names as %2E, which no router or client cleans away.
		{"get dot", func() error { _, _, err := c.Get(ctx, "S3", "."); return err },
			seen{method: "GET", uri: "/v1/domains/S3/entries/%2E"}},
		{"delete dot dot", func() error { return c.Delete(ctx, "S3", "..", api.PutOptions{}) },
			seen{method: "DELETE", uri: "/v1/domains/S3/entries/%2E%2E"}},
		{"list all pages", func() error { _, err := c.ListAll(ctx, "S3"); return err },
			seen{method: "GET", uri: "/v1/domains/S3/entries?limit=1000"}},
		{"verify all KMIP servers", func() error { _, err := c.VerifyKMIPServers(ctx, ""); return err },
			seen{method: "POST", uri: "/v1/kmip/servers/-/verify"}},
		{"verify one KMIP server", func() error { _, err := c.VerifyKMIPServers(ctx, "a b"); return err },
			seen{method: "POST", uri: "/v1/kmip/servers/a%20b/verify"}},
		{"delete KMIP server", func() error { return c.DeleteKMIPServer(ctx, "kmip1") },
			seen{method: "DELETE", uri: "/v1/kmip/servers/kmip1"}},
		{"migrate", func() error {
			_, err := c.Migrate(ctx, "cluster", api.MigrateRequest{ToServer: "kmip1", Domains: []string{"S3"}})
			return err
		}, seen{method: "POST", uri: "/v1/migrate/cluster", body: `{"to_server":"kmip1","domains":["S3"]}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err != nil {
				t.Fatal(err)
			}
			if got := <-reqs; got != tc.want {
				t.Errorf("sent %+v, want %+v", got, tc.want)
			}
		})
	}
}
