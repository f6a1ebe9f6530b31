package server

// Fuzz targets of the API's parsers and handlers (DESIGN: fuzz targets for
// every parser). Run one with, e.g.:
//
//	go test -run '^$' -fuzz '^FuzzAPIBodies$' -fuzztime 60s ./api/server/
//
// Without -fuzz they run their seed corpus (and testdata/fuzz/…) as tests.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

// fixedClock never moves: a schedule set by a fuzzed request never comes
// due, so nothing changes behind a request's back between two snapshots.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

// fuzzServer is a real registry, journal and handler over a fresh data dir,
// made once per fuzz process.
type fuzzServer struct {
	dir string
	reg *domains.Registry
	h   http.Handler
}

// fuzzDataDir is a fresh directory, on tmpfs when there is one: the stores
// fsync every write, and a fuzz loop writes a great deal.
func fuzzDataDir(f *testing.F) string {
	f.Helper()
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "kmdfuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newFuzzServer(f *testing.F) *fuzzServer {
	f.Helper()
	dir := fuzzDataDir(f)
	journal, err := logs.OpenJournal(logs.JournalOptions{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	reg, err := domains.Open(context.Background(), domains.Config{
		DataDir: dir, TickMax: time.Hour, BatchSize: 50, Events: journal, Log: zap.NewNop(),
		Clock: fixedClock{time.Date(2026, 11, 22, 9, 19, 16, 0, time.UTC)},
	})
	if err != nil {
		journal.Close()
		f.Fatal(err)
	}
	f.Cleanup(func() {
		reg.Close()
		journal.Close()
	})
	return &fuzzServer{dir: dir, reg: reg, h: New(reg, journal, zap.NewNop(), "fuzz").Handler()}
}

// call serves one request in process, from root on the socket.
func (s *fuzzServer) call(method, target string, hdr http.Header, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req = req.WithContext(access.WithPeer(req.Context(), &access.Peer{UID: 0, GID: 0, GIDs: []int{0}, Socket: "fuzz.sock"}))
	for k, v := range hdr {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	s.h.ServeHTTP(w, req)
	return w
}

// knownCodes are the codes of api/errors.go.
var knownCodes = []string{api.CodeBadRequest, api.CodeInvalidName, api.CodeInvalidValue, api.CodeForbidden,
	api.CodeNotFound, api.CodeNoEndpoint, api.CodeUnknownDomain, api.CodeInProgress, api.CodeConflict,
	api.CodeVersion, api.CodeTooLarge, api.CodeUnavailable, api.CodeInternal}

// checkErrorBody checks that an error answer is {"error","code"} JSON with a
// known code and a one-line message; it returns the body.
func checkErrorBody(t *testing.T, what string, w *httptest.ResponseRecorder) api.ErrorBody {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: status %d with Content-Type %q, want application/json", what, w.Code, ct)
	}
	var eb api.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("%s: status %d with a body that is not {\"error\",\"code\"}: %v", what, w.Code, err)
	}
	if eb.Error == "" || !slices.Contains(knownCodes, eb.Code) {
		t.Fatalf("%s: status %d with error %q, code %q: want a message and a known code", what, w.Code, eb.Error, eb.Code)
	}
	if strings.ContainsAny(eb.Error, "\r\n") {
		t.Fatalf("%s: status %d: error message is not one line: %q", what, w.Code, eb.Error)
	}
	return eb
}

// snapshot is what a refused request must leave as it was: both scopes'
// status (key ids, states, locations, entry counts), both schedules, the
// KMIP servers, every entry of S3 (values included, compared in memory and
// never printed) and the names of the files of the data dir. The SQLite
// WAL and shared-memory files come and go with connections and are left
// out.
type snapshot map[string]string

func (s *fuzzServer) snapshot(t *testing.T) snapshot {
	t.Helper()
	snap := snapshot{}
	for _, p := range []string{api.PathStatus + api.ScopeCluster, api.PathStatus + api.ScopeSED,
		api.PathRekey + api.ScopeCluster, api.PathRekey + api.ScopeSED, api.PathKMIPServers, api.PathDomains + "S3/export"} {
		w := s.call(http.MethodGet, p, nil, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("snapshot: GET %s: status %d", p, w.Code)
		}
		snap[p] = w.Body.String()
	}
	var files []string
	filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !strings.HasSuffix(path, "-wal") && !strings.HasSuffix(path, "-shm") {
			rel, _ := filepath.Rel(s.dir, path)
			files = append(files, rel)
		}
		return nil
	})
	snap["files"] = strings.Join(files, "\n")
	return snap
}

// diff names what differs; parts that may hold values are named, not shown.
func (a snapshot) diff(b snapshot) string {
	var out []string
	for k, v := range a {
		if b[k] == v {
			continue
		}
		if strings.HasSuffix(k, "/export") {
			out = append(out, k+" changed")
		} else {
			out = append(out, fmt.Sprintf("%s: %s\nbecame: %s", k, v, b[k]))
		}
	}
	return strings.Join(out, "\n")
}

// waitIdle waits until no rekey or migration runs in either scope.
func (s *fuzzServer) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		busy := ""
		for _, scope := range domains.Scopes {
			rows, err := s.reg.Status(context.Background(), scope)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				if r.Rekey != nil || r.Status == domains.StatusInProgress || r.Status == api.StatusMigrating {
					busy = r.Domain + " " + r.Status
				}
			}
			// A whole-scope rekey ends when its schedule has recorded the
			// end, a moment after the last domain went idle.
			sched, err := s.reg.Schedule(scope)
			if err != nil {
				t.Fatal(err)
			}
			if len(sched.Pending) > 0 {
				busy = scope + " schedule pending " + strings.Join(sched.Pending, ",")
			}
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a rekey is still running after 60s: %s", busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// apiEndpoints are the endpoints that read a request body, picked by the
// fuzzed kind.
var apiEndpoints = []struct{ method, path string }{
	{http.MethodPut, api.PathDomains + "S3/entries/fuzz"},
	{http.MethodPost, api.PathRekey + api.ScopeCluster},
	{http.MethodPost, api.PathRekey + api.ScopeSED},
	{http.MethodPut, api.PathRekey + api.ScopeCluster},
	{http.MethodPut, api.PathRekey + api.ScopeSED},
	{http.MethodPost, api.PathKMIPServers},
	{http.MethodPost, api.PathMigrate + api.ScopeCluster},
	{http.MethodPost, api.PathMigrate + api.ScopeSED},
	{http.MethodPost, api.PathDomains + "S3/import"},
	{http.MethodDelete, api.PathDomains + "S3/entries/fuzz"},
	{http.MethodPost, api.PathRekey + api.ScopeCluster + api.PathContinueSuffix},
	{http.MethodPost, api.PathRekey + api.ScopeSED + api.PathCancelSuffix},
}

// FuzzAPIBodies sends fuzzed bodies (and an If-Match header) to the real
// handlers over a real registry. It proves that no body gets a 5xx or a
// panic, that every 4xx is {"error","code"} JSON with a known code and a
// one-line message that never quotes an entry's value, and that a refused
// request changes nothing: status, key ids, schedules, KMIP servers, S3's
// entries and the data dir's files are as they were.
func FuzzAPIBodies(f *testing.F) {
	s := newFuzzServer(f)
	seeded := map[string][]byte{"seed/a": []byte("value-a"), "seed/b": {0, 1, 2, 0xff}}
	v, err := s.reg.Vault("S3")
	if err != nil {
		f.Fatal(err)
	}
	for n, val := range seeded {
		if _, err := v.Put(context.Background(), n, val, provider.Cond{}); err != nil {
			f.Fatal(err)
		}
	}

	pem := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	for _, seed := range []struct {
		kind    uint8
		ifMatch string
		body    string
	}{
		{0, "", "value"}, {0, `"1"`, "value"}, {0, `"04"`, "v"}, {0, "*", ""}, {0, "", strings.Repeat("x", api.MaxValueSize+1)},
		{1, "", ""}, {1, "", `{"domains":["S3"]}`}, {1, "", `{"domains":["s3"]}`}, {1, "", `{"domains":"S3"}`},
		{1, "", `{"domains":["S3"]}{}`}, {1, "", `{"domain":["S3"]}`}, {1, "", `{"domains":["SED"]}`}, {1, "", `[`},
		{2, "", `{"domains":["SED"]}`}, {2, "", `{"domains":["S3"]}`}, {2, "", `null`},
		{3, "", `{"key_rotation":"6W"}`}, {3, "", `{"key_rotation":"6w"}`}, {3, "", `{"key_rotation":6}`},
		{3, "", `{"key_rotation":"Never","x":1}`}, {3, "", ``}, {4, "", `{"key_rotation":"90s"}`},
		{4, "", `{"key_rotation":"-1D"}`}, {4, "", `{"key_rotation":"3155695201s"}`},
		{5, "", `{}`}, {5, "", `{"name":"k1","host":"127.0.0.1","port":1,"ca_cert_pem":"x","client_cert_pem":"x","client_key_pem":"x"}`},
		{5, "", `{"name":"k1","host":"127.0.0.1","port":70000}`}, {5, "", `{"name":"Local","host":"h","ca_cert_pem":` + fmt.Sprintf("%q", pem) + `}`},
		{5, "", `{"name":"../x","host":"h","ca_cert_pem":"a","client_cert_pem":"b","client_key_pem":"c","connection_timeout":"1s"}`},
		{5, "", `{"name":"k1","host":"h","min_tls_version":"1.1"}`}, {5, "", `{"name":"k1","host":"h","connection_timeout":"-1s"}`},
		{6, "", `{"to_local":true}`}, {6, "", `{"to_server":"nope"}`}, {6, "", `{"to_server":"k","to_local":true}`},
		{6, "", `{"to_local":true,"domains":["S3"],"retry":true}`}, {6, "", `{}`}, {7, "", `{"to_local":true,"domains":["S3"]}`},
		{8, "", `{"name":"n","value":"dmFsdWU="}` + "\n"}, {8, "", `{"name":"n","value":"!!"}`},
		{8, "", `{"name":"a","value":""}` + "\n" + `{"name":"a","value":""}`}, {8, "", `{"name":"","value":""}`},
		{9, `"1"`, ""}, {9, "", "body"}, {9, `"x"`, ""},
		{1, "", `{"stage_period":"Never"}`}, {1, "", `{"domains":["S3"],"stage_period":"0D"}`}, {2, "", `{"stage_period":7}`},
		{10, "", `{"domains":["S3"]}`}, {10, "", ``}, {10, "", `{"domains":["SED"]}`}, {11, "", `{}`}, {11, "", `{"domains":["SED"]}`},
		{1, "", `{"domains":["S3"],"stage_period":"1h"}`}, {1, "", `{"domains":["S3"]}`}, {11, "", ``}, {10, "", `{"domains":["S3"]}`},
	} {
		f.Add(seed.kind, seed.ifMatch, []byte(seed.body))
	}

	// The state after a refused request is the state before the next one:
	// it is taken again only after a request was accepted.
	var last snapshot
	f.Fuzz(func(t *testing.T, kind uint8, ifMatch string, body []byte) {
		ep := apiEndpoints[int(kind)%len(apiEndpoints)]
		hdr := http.Header{}
		// A header value with a line break or NUL never reaches a handler:
		// net/http refuses it on the wire.
		if ifMatch != "" && !strings.ContainsAny(ifMatch, "\r\n\x00") {
			hdr.Set("If-Match", ifMatch)
		}
		what := fmt.Sprintf("%s %s (If-Match %q, body of %d bytes)", ep.method, ep.path, ifMatch, len(body))
		before := last
		if before == nil {
			before = s.snapshot(t)
		}
		last = nil
		w := s.call(ep.method, ep.path, hdr, body)
		switch {
		case w.Code >= 500:
			t.Fatalf("%s: status %d, want no 5xx for any body: %s", what, w.Code, w.Body.String())
		case w.Code >= 400:
			eb := checkErrorBody(t, what, w)
			if ep.path == apiEndpoints[0].path && len(body) >= 12 && strings.Contains(eb.Error, string(body)) {
				t.Fatalf("%s: the error message quotes the value", what)
			}
			after := s.snapshot(t)
			if d := before.diff(after); d != "" {
				t.Fatalf("%s: refused with %d %s, but it changed:\n%s", what, w.Code, eb.Code, d)
			}
			last = after
		case w.Code == http.StatusAccepted:
			// A rekey or migration started: let it end, so the next
			// request starts from rest.
			s.waitIdle(t)
		case w.Code == http.StatusOK && ep.path == api.PathDomains+"S3/import":
			// Keep S3 small: drop what the import added.
			var ir api.ImportResponse
			if err := json.Unmarshal(w.Body.Bytes(), &ir); err != nil || ir.Imported < 0 {
				t.Fatalf("%s: 200 with %q, want {\"imported\":N}", what, w.Body.String())
			}
			names, err := v.List(context.Background(), "", 100000)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				if _, ok := seeded[n]; !ok && n != "fuzz" {
					if err := v.Delete(context.Background(), n, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if w.Code < 300 && w.Code != http.StatusNoContent && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s: status %d with a body that is not JSON", what, w.Code)
		}
	})
}

// FuzzImportLine fuzzes the import parser (POST /v1/domains/{d}/import,
// which kmctl entry import feeds stdin unchanged) with one line alone and
// with a fuzzed body after a good line. It proves that a line is either
// accepted with a valid name (provider.ValidateName) and a value of at most
// 64 KiB, or refused with a one-line 4xx error naming that line by number;
// that a body is refused as a whole, naming its first bad line (all or
// nothing); and that every accepted line round-trips through the export
// encoding: what export writes for it imports back to the same name and
// value.
func FuzzImportLine(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","value":"dmFsdWU="}`,
		`{"name":"ftp/admin password","value":""}`,
		`{"name":"é/ü\u00e9","value":"AAEC/w=="}`,
		`  {"value":"AA==","name":"x"}  `,
		`{"name":"a","value":null}`,
		`{"name":"a"}`,
		`{"name":"a","value":"dmFsdWU"}`,
		`{"name":"a","value":"!!!"}`,
		`{"name":"","value":""}`,
		`{"name":"a\tb","value":""}`,
		`{"name":"\ud800","value":""}`,
		`{"name":"a","value":"","extra":1}`,
		`{"name":"a","value":""} {}`,
		`{"name":"a","value":""}` + "\r",
		`{"name":"a","value":""}` + "\n" + `{"name":"a","value":""}`,
		`{"name":"a","value":""}` + "\n\n" + `{"name":"b","value":5}`,
		`{"name":1,"value":""}`,
		`[]`, `null`, `"x"`, `{`, ``, "\xff",
		`{"name":"` + strings.Repeat("n", 256) + `","value":""}`,
		`{"name":"n","value":"` + strings.Repeat("QUFB", (api.MaxValueSize+3)/3) + `"}`,
		`{"NAME":"a","Value":""}`,
		`{"name":"a","value":"","name":"b"}`,
	} {
		f.Add([]byte(s))
	}
	first := []byte(`{"name":"first","value":"Zmlyc3Q="}` + "\n")
	srv := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if !bytes.ContainsAny(data, "\n") {
			checkOneLine(t, data)
		}
		// The same bytes after a good first line, imported into S3 through
		// the handler and the store: all or nothing, and the first bad line
		// (a name twice included) is named.
		body := append(slices.Clone(first), data...)
		want := firstBadLine(t, body)
		before := srv.snapshot(t)
		w := srv.call(http.MethodPost, api.PathDomains+"S3/import", nil, body)
		if want == 0 {
			if w.Code != http.StatusOK {
				t.Fatalf("body of %d lines refused though each line is good: %d %s", bytes.Count(body, []byte("\n"))+1, w.Code, w.Body)
			}
			if got := srv.call(http.MethodGet, api.EntryPath("S3", "first"), nil, nil); got.Code != http.StatusOK || got.Body.String() != "first" {
				t.Fatalf("body accepted without its first line: %d", got.Code)
			}
			return
		}
		if w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("body whose line %d is bad: status %d, want 400 or 413", want, w.Code)
		}
		eb := checkErrorBody(t, "import", w)
		if prefix := fmt.Sprintf("line %d:", want); !strings.HasPrefix(eb.Error, prefix) {
			t.Fatalf("body whose first bad line is %d: error %q does not start with %q", want, eb.Error, prefix)
		}
		if d := before.diff(srv.snapshot(t)); d != "" {
			t.Fatalf("a refused import changed:\n%s", d)
		}
	})
}

// parseLines parses a whole import body as the handler does line by line,
// without the store (and so without its check for a name given twice).
func parseLines(body io.Reader) ([]provider.Item, error) {
	rd := newImportReader(body)
	var items []provider.Item
	for {
		it, err := rd.next()
		if errors.Is(err, io.EOF) {
			return items, nil
		}
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
}

// checkOneLine checks one line on its own.
func checkOneLine(t *testing.T, line []byte) {
	t.Helper()
	items, err := parseLines(bytes.NewReader(line))
	if err != nil {
		if items != nil {
			t.Fatalf("refused line gave %d items", len(items))
		}
		status, code := httpError(err)
		if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
			t.Fatalf("refused line answers %d %s, want 400 or 413: %v", status, code, err)
		}
		if !strings.HasPrefix(err.Error(), "line 1:") || strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("refused line: error %q is not one line starting with \"line 1:\"", err)
		}
		return
	}
	if len(bytes.TrimSpace(line)) == 0 {
		if len(items) != 0 {
			t.Fatalf("blank line gave %d items", len(items))
		}
		return
	}
	if len(items) != 1 {
		t.Fatalf("one accepted line gave %d items", len(items))
	}
	it := items[0]
	if err := provider.ValidateName(it.Name); err != nil {
		t.Fatalf("accepted line has an invalid name: %v", err)
	}
	if !utf8.ValidString(it.Name) || len(it.Value) > api.MaxValueSize {
		t.Fatalf("accepted line: name of %d bytes, value of %d bytes", len(it.Name), len(it.Value))
	}
	// What export writes for it (the same encoder, the same type) imports
	// back to the same entry, on one line.
	var exp bytes.Buffer
	if err := json.NewEncoder(&exp).Encode(api.ImportLine{Name: it.Name, Value: it.Value}); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(exp.Bytes(), []byte("\n")) != 1 {
		t.Fatalf("export encoding of an accepted line is not one line")
	}
	back, err := parseLines(&exp)
	if err != nil || len(back) != 1 || back[0].Name != it.Name || !bytes.Equal(back[0].Value, it.Value) {
		t.Fatalf("export encoding of an accepted line (name %q, value of %d bytes) does not import back: %v", it.Name, len(it.Value), err)
	}
}

// firstBadLine is the number of the first line of body that import must
// refuse (0: none): a line that is refused on its own, one that is too long,
// or a name already on an earlier line. It splits lines as bufio does.
func firstBadLine(t *testing.T, body []byte) int {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<30)
	seen := map[string]bool{}
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) > maxImportLine-1 {
			// bufio needs room for the line and its newline.
			return n
		}
		items, err := parseLines(bytes.NewReader(line))
		if err != nil {
			return n
		}
		for _, it := range items {
			if seen[it.Name] {
				return n
			}
			seen[it.Name] = true
		}
	}
	return 0
}

// FuzzEntryName fuzzes entry names end to end: provider.ValidateName, the
// Go client's path escaping (api.EntryPath), the wire and the server's
// routing of escaped segments. It proves that a name ValidateName accepts
// is stored, read, listed and deleted under exactly that name, also when
// the path spells it with every byte %-encoded (upper or lower case hex),
// and that a name it refuses gets 400 invalid_name with a one-line message
// on write and on read, and stores nothing.
func FuzzEntryName(f *testing.F) {
	s := newFuzzServer(f)
	sockDir, err := os.MkdirTemp("", "kmdfz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "kmd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		f.Fatal(err)
	}
	srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second, ConnContext: access.ConnContext}
	go srv.Serve(ln)
	f.Cleanup(func() { srv.Close() })
	c := api.NewClient(sock)
	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 30 * time.Second}

	for _, n := range []string{
		"a", "ftp/admin/password", ".", "..", "...", "%2E", "%", "%%", "%zz", "a b", "a+b", "a?b=c", "a#b", "a;b",
		"/", "//", "a/", "/a", "./a", "a/../b", "~user", "é", "日本語", "😀", "\u00a0", "a\tb", "\x00", "\x7f",
		"\xff", "\xed\xa0\x80", "\u2028", "\u200b", "", strings.Repeat("n", 255), strings.Repeat("n", 256),
		strings.Repeat("é", 127) + "n", "entries", "S3", "import", "export",
	} {
		f.Add(n)
	}
	const domain = "FTP"
	value := []byte("fuzz-value")
	f.Fuzz(func(t *testing.T, name string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		valid := provider.ValidateName(name)
		_, perr := c.Put(ctx, domain, name, value, api.PutOptions{})
		if valid != nil {
			wantInvalidName(t, "put", name, perr)
			_, _, gerr := c.Get(ctx, domain, name)
			wantInvalidName(t, "get", name, gerr)
			if names, err := c.ListAll(ctx, domain); err != nil || len(names) != 0 {
				t.Fatalf("after a refused put of %q: list = %q, %v; want nothing", name, names, err)
			}
			return
		}
		if perr != nil {
			t.Fatalf("put %q (valid): %v", name, perr)
		}
		got, _, err := c.Get(ctx, domain, name)
		if err != nil || !bytes.Equal(got, value) {
			t.Fatalf("get %q after put: %d bytes, %v", name, len(got), err)
		}
		for _, hex := range []string{"%%%02X", "%%%02x"} {
			var p strings.Builder
			for i := 0; i < len(name); i++ {
				fmt.Fprintf(&p, hex, name[i])
			}
			resp, err := raw.Get("http://kmd" + api.PathDomains + domain + "/entries/" + p.String())
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Equal(b, value) {
				t.Fatalf("get %q with every byte %%-encoded (%s): status %d", name, hex, resp.StatusCode)
			}
		}
		names, err := c.ListAll(ctx, domain)
		if err != nil || len(names) != 1 || names[0] != name {
			t.Fatalf("list after put %q: %q, %v; want exactly that name", name, names, err)
		}
		if err := c.Delete(ctx, domain, name, api.PutOptions{}); err != nil {
			t.Fatalf("delete %q: %v", name, err)
		}
		if _, _, err := c.Get(ctx, domain, name); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("get %q after delete: %v, want not found", name, err)
		}
	})
}

func wantInvalidName(t *testing.T, op, name string, err error) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != api.CodeInvalidName {
		t.Fatalf("%s %q (invalid: %v): %v, want 400 %s", op, name, provider.ValidateName(name), err, api.CodeInvalidName)
	}
	if !strings.HasPrefix(ae.Message, provider.ErrInvalidName.Error()) || strings.ContainsAny(ae.Message, "\r\n") {
		t.Fatalf("%s %q: message %q is not one line starting with %q", op, name, ae.Message, provider.ErrInvalidName)
	}
}
