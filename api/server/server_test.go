package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
)

// marker is an entry value that must never show up in an error body or a
// log line. Tests that store it get that checked when kmd stops.
const marker = "SECRET-MARKER-7f3a"

// markerForms are the ways marker could leak: as is, and base64-encoded as
// import lines carry it (without padding, so a prefix match counts too).
var markerForms = []string{marker, strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(marker)), "=")}

const (
	waitLimit = 20 * time.Second
	// requestLimit bounds a request: none takes a second when kmd works.
	requestLimit = 10 * time.Second
)

// kmd is a real registry, journal and server on a unix socket.
type kmd struct {
	dir     string
	socket  string
	c       *api.Client
	raw     *http.Client
	reg     *domains.Registry
	journal *logs.Journal
	logs    *observer.ObservedLogs
	resp    *responses
	handler http.Handler // the API as served on the socket, for other listeners

	closeReg  func() error     // closes the registry once
	forbidden forbiddenStrings // may appear in no answer and no log line

	// wedged is set when a request hung: the registry is then left open
	// when the test ends, since closing it would hang too.
	wedged atomic.Bool
}

type kmdOptions struct {
	dataDir string                          // "" for a fresh t.TempDir()
	trace   func(domain, step string)       // domains.Config.Trace
	options []server.Option                 // given to server.New
	wrap    func(http.Handler) http.Handler // wraps the server's Handler()
	// serverOpts are given to server.New too, after options.
	serverOpts []server.Option
}

// startKMD opens a registry and serves its API on a unix socket until the
// test ends. When the test ends it checks that no error body and no log line
// holds marker, and that every error body is {"error","code"} JSON.
func startKMD(t *testing.T, o kmdOptions) *kmd {
	t.Helper()
	dir := o.dataDir
	if dir == "" {
		dir = t.TempDir()
	}
	core, obs := observer.New(zapcore.DebugLevel)
	quiet := new(atomic.Bool)
	lg := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(mutableCore{c, quiet}, core)
	})))
	journal, err := logs.OpenJournal(logs.JournalOptions{Dir: dir, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := domains.Open(context.Background(), domains.Config{
		DataDir: dir, TickMax: time.Hour, BatchSize: 10, Events: journal, Log: lg, Trace: o.trace,
	})
	if err != nil {
		journal.Close()
		t.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes: t.TempDir() is too long.
	sockDir, err := os.MkdirTemp("", "kmd")
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(sockDir, "kmd.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	resp := &responses{}
	h := server.New(reg, journal, lg, "test", append(o.options, o.serverOpts...)...).Handler()
	if o.wrap != nil {
		h = o.wrap(h)
	}
	handler := resp.wrap(h)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       access.ConnContext,
	}
	go srv.Serve(ln)

	k := &kmd{
		dir: dir, socket: socket, c: api.NewClient(socket), raw: rawClient(socket),
		reg: reg, journal: journal, logs: obs, resp: resp, handler: handler,
		closeReg: sync.OnceValue(reg.Close),
	}
	t.Cleanup(func() {
		// Nothing may log to t once the test is over.
		defer quiet.Store(true)
		if k.wedged.Load() {
			srv.Close()
			k.raw.CloseIdleConnections()
			t.Log("kmd is wedged: its registry and journal are left open")
			k.checkNoLeaks(t)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		k.raw.CloseIdleConnections()
		if err := k.closeReg(); err != nil {
			t.Errorf("close registry: %v", err)
		}
		if err := journal.Close(); err != nil {
			t.Errorf("close journal: %v", err)
		}
		os.RemoveAll(sockDir)
		k.checkNoLeaks(t)
	})
	return k
}

// mutableCore drops every entry once off is set.
type mutableCore struct {
	zapcore.Core
	off *atomic.Bool
}

func (c mutableCore) With(fs []zapcore.Field) zapcore.Core {
	return mutableCore{c.Core.With(fs), c.off}
}

func (c mutableCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.off.Load() && c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c mutableCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	if c.off.Load() {
		return nil
	}
	return c.Core.Write(e, fs)
}

// rawClient sends requests as written, for what api.Client cannot express.
// It does not follow redirects.
func rawClient(socket string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       requestLimit,
	}
}

// do sends a raw request; path is sent as written (escapes included).
func (k *kmd) do(t *testing.T, method, path string, hdr http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://kmd"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range hdr {
		req.Header[key] = v
	}
	resp, err := k.raw.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			k.wedged.Store(true)
		}
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// wantErrorBody checks a raw error answer: status, JSON {"error","code"}.
func wantErrorBody(t *testing.T, gotStatus int, body []byte, status int, code string) api.ErrorBody {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if gotStatus != status || eb.Code != code {
		t.Fatalf("got %d %q (%q), want %d %q", gotStatus, eb.Code, eb.Error, status, code)
	}
	if eb.Error == "" {
		t.Fatalf("error body %q has no message", body)
	}
	return eb
}

// wantAPIError checks an error returned by api.Client.
func wantAPIError(t *testing.T, err error, status int, code string, sentinel error) *api.Error {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("got error %v (%T), want *api.Error %d %s", err, err, status, code)
	}
	if ae.Status != status || ae.Code != code {
		t.Fatalf("got %d %q (%q), want %d %q", ae.Status, ae.Code, ae.Message, status, code)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("errors.Is(%v, %v) = false", err, sentinel)
	}
	if ae.Message == "" {
		t.Fatal("error without a message")
	}
	return ae
}

// modify is k.c.RekeyModify bounded by requestLimit: a modify that hangs
// fails the test instead of the whole run.
func (k *kmd) modify(t *testing.T, scope, rotation string) (api.RekeyView, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestLimit)
	defer cancel()
	v, err := k.c.RekeyModify(ctx, scope, rotation)
	if errors.Is(err, context.DeadlineExceeded) {
		k.wedged.Store(true)
		t.Fatalf("rekey modify %s %s hung for %v", scope, rotation, requestLimit)
	}
	return v, err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// responses records every answer of the server.
type responses struct {
	mu   sync.Mutex
	list []response
}

type response struct {
	method, path string
	status       int
	contentType  string
	body         []byte
}

func (rs *responses) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &recordingWriter{ResponseWriter: w}
		h.ServeHTTP(rw, r)
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		rs.mu.Lock()
		rs.list = append(rs.list, response{method: r.Method, path: r.URL.Path, status: rw.status,
			contentType: rw.Header().Get("Content-Type"), body: rw.body.Bytes()})
		rs.mu.Unlock()
	})
}

func (rs *responses) all() []response {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]response(nil), rs.list...)
}

type recordingWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// mayHoldValues reports whether an answer may carry entry values: a
// successful entry GET or export, and nothing else. (What a handler writes
// for HEAD, net/http discards.)
func (r response) mayHoldValues() bool {
	if r.method != http.MethodGet && r.method != http.MethodHead || r.status != http.StatusOK {
		return false
	}
	return strings.Contains(r.path, "/entries/") || strings.HasSuffix(r.path, "/export")
}

// forbiddenStrings are secrets other than entry values, such as a KMIP
// client key, that no answer (not even a value-carrying one) may hold.
type forbiddenStrings struct {
	mu   sync.Mutex
	list []string
}

func (f *forbiddenStrings) add(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, s)
}

func (f *forbiddenStrings) in(s string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range f.list {
		if strings.Contains(s, x) {
			return x
		}
	}
	return ""
}

func containsMarker(s string) bool {
	for _, f := range markerForms {
		if strings.Contains(s, f) {
			return true
		}
	}
	return false
}

// checkNoLeaks checks, once kmd stopped, that no answer but the value
// carrying ones and no log line holds marker, and that every error answer is
// an {"error","code"} JSON body.
func (k *kmd) checkNoLeaks(t *testing.T) {
	t.Helper()
	for _, r := range k.resp.all() {
		if !r.mayHoldValues() && containsMarker(string(r.body)) {
			t.Errorf("%s %s answered %d with an entry value: %.200q", r.method, r.path, r.status, r.body)
		}
		if x := k.forbidden.in(string(r.body)); x != "" {
			t.Errorf("%s %s answered %d with the secret %.40q", r.method, r.path, r.status, x)
		}
		if r.status < 400 {
			continue
		}
		var eb api.ErrorBody
		if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error == "" || eb.Code == "" {
			t.Errorf("%s %s answered %d with %q, want {\"error\",\"code\"} JSON", r.method, r.path, r.status, r.body)
		}
		if !strings.HasPrefix(r.contentType, "application/json") {
			t.Errorf("%s %s answered %d with Content-Type %q, want application/json", r.method, r.path, r.status, r.contentType)
		}
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, e := range k.logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Errorf("encode log entry %q: %v", e.Message, err)
			continue
		}
		if containsMarker(buf.String()) {
			t.Errorf("log line holds an entry value: %s", buf.String())
		}
		if x := k.forbidden.in(buf.String()); x != "" {
			t.Errorf("log line holds the secret %.40q: %s", x, buf.String())
		}
		buf.Free()
	}
}

// gate holds one domain's rekey at one step until released.
type gate struct {
	domain, step string
	reached      chan struct{}
	release      chan struct{}
	reachedOnce  sync.Once
	releaseOnce  sync.Once
}

func newGate(domain, step string) *gate {
	return &gate{domain: domain, step: step, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) trace(domain, step string) {
	if domain != g.domain || step != g.step {
		return
	}
	g.reachedOnce.Do(func() { close(g.reached) })
	<-g.release
}

func (g *gate) Release() { g.releaseOnce.Do(func() { close(g.release) }) }

func (g *gate) waitReached(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(waitLimit):
		t.Fatalf("rekey of %s never reached %s", g.domain, g.step)
	}
}

func TestServer_Version(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	v, err := k.c.Version(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "test" {
		t.Fatalf("version %q, want test", v.Version)
	}
}

func TestServer_UnknownEndpoint(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	for _, tc := range []struct{ method, path string }{
		{"GET", "/nope"},
		{"GET", "/"},
		{"GET", "/v1/domains/S3"},
		{"POST", "/v1/version"},
		{"PATCH", "/v1/domains/S3/entries/a"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			status, hdr, body := k.do(t, tc.method, tc.path, nil, nil)
			eb := wantErrorBody(t, status, body, http.StatusNotFound, api.CodeNoEndpoint)
			if !strings.Contains(eb.Error, tc.path) {
				t.Errorf("message %q does not name the path %s", eb.Error, tc.path)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

// An error kmd does not know is answered short and logged whole.
func TestServer_InternalErrorIsShortAndLogged(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	if _, err := k.c.Put(ctx, "S3", "a", []byte(marker), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// With its stores closed, every request the registry serves fails in a
	// way no caller caused.
	if err := k.closeReg(); err != nil {
		t.Fatal(err)
	}
	_, _, err := k.c.Get(ctx, "S3", "a")
	ae := wantAPIError(t, err, http.StatusInternalServerError, api.CodeInternal, api.ErrInternal)
	if ae.Message != "internal error; see the kmd log" {
		t.Errorf("message %q", ae.Message)
	}
	var buf bytes.Buffer
	err = k.c.Export(ctx, "S3", &buf)
	wantAPIError(t, err, http.StatusInternalServerError, api.CodeInternal, api.ErrInternal)
	if buf.Len() != 0 {
		t.Errorf("export wrote %q", buf.String())
	}
	logged := k.logs.FilterMessage("request failed").FilterField(zap.String(logs.Path, "/v1/domains/S3/entries/a")).All()
	if len(logged) != 1 {
		t.Fatalf("%d \"request failed\" log lines for the GET, want 1", len(logged))
	}
	if e, _ := logged[0].ContextMap()["error"].(string); !strings.Contains(e, "closed") {
		t.Errorf("logged error %q does not hold the cause", e)
	}
	if len(k.logs.FilterMessage("export failed").All()) != 1 {
		t.Error("export failure not logged")
	}
}

// A domain whose store cannot be opened answers 503; the others work.
func TestServer_UnavailableDomain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg, err := domains.Open(t.Context(), domains.Config{DataDir: dir, TickMax: time.Hour, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "stores", "S3.db*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	k := startKMD(t, kmdOptions{dataDir: dir})
	ctx := t.Context()

	_, err = k.c.Put(ctx, "S3", "a", []byte(marker), api.PutOptions{})
	wantAPIError(t, err, http.StatusServiceUnavailable, api.CodeUnavailable, api.ErrUnavailable)
	_, _, err = k.c.Get(ctx, "S3", "a")
	wantAPIError(t, err, http.StatusServiceUnavailable, api.CodeUnavailable, api.ErrUnavailable)
	_, err = k.c.StartRekey(ctx, api.ScopeCluster, []string{"S3"})
	wantAPIError(t, err, http.StatusServiceUnavailable, api.CodeUnavailable, api.ErrUnavailable)

	st, err := k.c.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Domains {
		switch {
		case d.Domain == "S3" && (d.Status != api.StatusFailed || !strings.Contains(d.Error, "missing")):
			t.Errorf("S3: %s %q, want FAILED saying the store is missing", d.Status, d.Error)
		case d.Domain != "S3" && d.Status != api.StatusActive:
			t.Errorf("%s: %s %q, want ACTIVE", d.Domain, d.Status, d.Error)
		}
	}
	if _, err := k.c.Put(ctx, "SIQ", "a", []byte(marker), api.PutOptions{}); err != nil {
		t.Fatalf("another domain: %v", err)
	}
}

// No error body, client error or log line holds an entry's value, whatever
// path a request that touches one takes.
func TestServer_NeverLeaksValues(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	val := []byte(marker)
	b64 := base64.StdEncoding.EncodeToString(val)
	for _, e := range []struct{ domain, name string }{{"S3", "a"}, {"S3", "b"}, {"CELOG", "c"}, {"SED", "drive-1"}} {
		if _, err := k.c.Put(ctx, e.domain, e.name, val, api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat(val, api.MaxValueSize/len(val)+1)
	var errs []error
	collect := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("an error path succeeded")
		}
		errs = append(errs, err)
	}
	_, err := k.c.Put(ctx, "S3", "a", val, api.PutOptions{IfVersion: 7})
	collect(err)
	_, err = k.c.Put(ctx, "S3", "a", val, api.PutOptions{CreateOnly: true})
	collect(err)
	_, err = k.c.Put(ctx, "S3", "a", big, api.PutOptions{})
	collect(err)
	_, err = k.c.Put(ctx, "S3", strings.Repeat("n", 256), val, api.PutOptions{})
	collect(err)
	_, err = k.c.Put(ctx, "NOPE", "a", val, api.PutOptions{})
	collect(err)
	collect(k.c.Delete(ctx, "S3", "b", api.PutOptions{IfVersion: 9}))
	_, _, err = k.c.Get(ctx, "s3", "a")
	collect(err)
	for _, status := range []int{
		mustStatus(k.do(t, "PUT", api.EntryPath("S3", "a"), http.Header{"If-Match": {"3"}}, val)),
		mustStatus(k.do(t, "PUT", api.EntryPath("S3", "a"), http.Header{"If-None-Match": {`"1"`}}, val)),
		mustStatus(k.do(t, "PUT", "/v1/domains/S3/entries/a%01", nil, val)),
	} {
		if status != http.StatusBadRequest {
			t.Errorf("status %d, want 400", status)
		}
	}
	for _, body := range []string{
		`{"name":"x","value":"` + b64 + `","mode":"0600"}`,
		`{"name":"a","value":"` + b64 + `"}` + "\n" + `{"name":"a","value":"` + b64 + `"}`,
		`{"name":"x","value":"` + marker + `"}`,
		marker,
		`{"name":"x","value":` + marker + `}`,
		`{"name":"x","value":["` + b64 + `"]}`,
		`{"name":"x","value":"` + base64.StdEncoding.EncodeToString(big) + `"}`,
		`{"name":"","value":"` + b64 + `"}`,
	} {
		_, err := k.c.Import(ctx, "S3", strings.NewReader(`{"name":"ok","value":"`+b64+`"}`+"\n"+body+"\n"))
		collect(err)
	}
	_, err = k.c.Import(ctx, "NOPE", strings.NewReader(`{"name":"a","value":"`+b64+`"}`))
	collect(err)
	collect(k.c.Export(ctx, "NOPE", io.Discard))
	// Last: internal errors, with the stores closed under kmd.
	if err := k.closeReg(); err != nil {
		t.Fatal(err)
	}
	_, _, err = k.c.Get(ctx, "S3", "a")
	collect(err)
	_, err = k.c.Put(ctx, "S3", "a", val, api.PutOptions{})
	collect(err)
	collect(k.c.Export(ctx, "S3", io.Discard))
	for _, err := range errs {
		if containsMarker(err.Error()) {
			t.Errorf("client error holds the value: %v", err)
		}
	}
	// startKMD's cleanup checks every answer and log line.
}

func mustStatus(status int, _ http.Header, _ []byte) int { return status }
