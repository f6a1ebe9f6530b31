package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
)

// clock is a settable time for the tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// record is one call of the audit recorder.
type record struct {
	who, action, outcome string
}

type recorder struct {
	mu   sync.Mutex
	recs []record
}

func (r *recorder) record(ctx context.Context, action, _, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, record{who: access.FromContext(ctx).Who(), action: action, outcome: outcome})
}

func (r *recorder) all() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]record(nil), r.recs...)
}

const testAddr = "127.0.0.1:8443"

func newTestUI(t *testing.T) (*UI, *clock, *recorder) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}
	rec := &recorder{}
	return New(Options{Addr: testAddr, Now: c.now, Record: rec.record}), c, rec
}

var admin = &access.Caller{Via: access.ViaSocket, UID: 0, Remote: "unix:/run/kmd.sock", Roles: []access.Role{access.Admin}}

// makeLink asks for a link as caller through ServeLink and returns its
// token.
func makeLink(t *testing.T, u *UI, caller *access.Caller) string {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, api.PathUILinks, nil)
	if caller != nil {
		r = r.WithContext(access.WithCaller(r.Context(), caller))
	}
	u.ServeLink(w, r)
	if w.Code != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", api.PathUILinks, w.Code, w.Body)
	}
	var l api.UILink
	if err := json.Unmarshal(w.Body.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	p, err := url.Parse(l.URL)
	if err != nil {
		t.Fatal(err)
	}
	if p.Scheme != "http" || p.Host != testAddr || p.Path != PathSignIn {
		t.Fatalf("link %s: want http://%s%s?token=…", l.URL, testAddr, PathSignIn)
	}
	return p.Query().Get("token")
}

// signIn opens a sign-in link and returns the answer.
func signIn(u *UI, token string, tlsConn bool) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, PathSignIn+"?token="+url.QueryEscape(token), nil)
	if tlsConn {
		r.TLS = &tls.ConnectionState{}
	}
	u.Handler().ServeHTTP(w, r)
	return w
}

// signedIn makes a link, signs in with it and returns the session cookie.
func signedIn(t *testing.T, u *UI) *http.Cookie {
	t.Helper()
	w := signIn(u, makeLink(t, u, admin), false)
	for _, c := range w.Result().Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("sign-in set no %s cookie: %d %s", CookieName, w.Code, w.Body)
	return nil
}

func TestLink_TokensAreLongRandomAndOneTime(t *testing.T) {
	u, _, _ := newTestUI(t)
	seen := map[string]bool{}
	for range 50 {
		tok := makeLink(t, u, admin)
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) < 16 {
			t.Fatalf("link token %q: %d bytes (%v), want at least 128 bits", tok, len(b), err)
		}
		if seen[tok] {
			t.Fatalf("link token %q made twice", tok)
		}
		seen[tok] = true
	}
	tok := makeLink(t, u, admin)
	if w := signIn(u, tok, false); w.Code != http.StatusSeeOther {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	w := signIn(u, tok, false)
	if w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 || !strings.Contains(w.Body.String(), "already used") {
		t.Fatalf("second use: %d, cookies %v, body %s; want 401, no cookie, already used", w.Code, w.Result().Cookies(), w.Body)
	}
}

func TestSignIn_Refusals(t *testing.T) {
	u, clk, rec := newTestUI(t)
	expired := makeLink(t, u, admin)
	clk.add(DefaultLinkTTL)
	for _, c := range []struct{ what, token, status, says string }{
		{"expired", expired, "401", "expired: a link is valid for 5 minutes"},
		{"expired, again", expired, "401", "not known to kmd"},
		{"unknown", base64.RawURLEncoding.EncodeToString(make([]byte, 32)), "401", "not known to kmd"},
		{"no token", "", "400", "lacks its token"},
	} {
		w := signIn(u, c.token, false)
		if fmt.Sprint(w.Code) != c.status || !strings.Contains(w.Body.String(), c.says) {
			t.Errorf("%s link: %d %s; want %s saying %q", c.what, w.Code, w.Body, c.status, c.says)
		}
		if cs := w.Result().Cookies(); len(cs) != 0 {
			t.Errorf("%s link set cookies %v", c.what, cs)
		}
		if !strings.Contains(w.Body.String(), "kmctl ui url") {
			t.Errorf("%s link: the page does not say how to sign in:\n%s", c.what, w.Body)
		}
	}
	recs := rec.all()
	refused := 0
	for _, r := range recs {
		if r.action == "ui.signin" && strings.HasPrefix(r.outcome, "refused: ") {
			refused++
		}
	}
	if refused != 3 {
		t.Errorf("audit records %v: want 3 refused sign-ins", recs)
	}
}

func TestSignIn_LinkValidUntilItsExpiry(t *testing.T) {
	u, clk, _ := newTestUI(t)
	tok := makeLink(t, u, admin)
	clk.add(DefaultLinkTTL - time.Second)
	if w := signIn(u, tok, false); w.Code != http.StatusSeeOther {
		t.Fatalf("a link 1s before its expiry: %d %s", w.Code, w.Body)
	}
}

func TestSignIn_Cookie(t *testing.T) {
	for _, viaTLS := range []bool{false, true} {
		u, _, rec := newTestUI(t)
		w := signIn(u, makeLink(t, u, admin), viaTLS)
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != PathPage {
			t.Fatalf("sign-in: %d to %q, want 303 to %s", w.Code, w.Header().Get("Location"), PathPage)
		}
		cs := w.Result().Cookies()
		if len(cs) != 1 {
			t.Fatalf("cookies %v, want one", cs)
		}
		c := cs[0]
		if c.Name != CookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" ||
			c.MaxAge != int(DefaultSessionTTL/time.Second) || c.Secure != viaTLS {
			t.Errorf("TLS %v: cookie %s; want %s, HttpOnly, SameSite=Strict, Path=/, Max-Age=28800, Secure only over TLS", viaTLS, c, CookieName)
		}
		if b, err := base64.RawURLEncoding.DecodeString(c.Value); err != nil || len(b) < 16 {
			t.Errorf("session token %q: %d bytes, want at least 128 bits", c.Value, len(b))
		}
		want := []record{{"uid 0", "ui.link.create", "ok"}, {"web session of uid 0", "ui.signin", "ok"}}
		if got := rec.all(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("audit records %v, want %v", got, want)
		}
	}
}

// TestSessions_StoredHashed: nothing held in memory is a token that signs
// in or makes a request.
func TestSessions_StoredHashed(t *testing.T) {
	u, _, _ := newTestUI(t)
	unused := makeLink(t, u, admin)
	cookie := signedIn(t, u)
	u.mu.Lock()
	dump := fmt.Sprintf("%v %v", u.links, u.sessions)
	var keys [][]byte
	for k := range u.links {
		keys = append(keys, bytes.Clone(k[:]))
	}
	for k := range u.sessions {
		keys = append(keys, bytes.Clone(k[:]))
	}
	u.mu.Unlock()
	for _, secret := range []string{unused, cookie.Value, csrfToken(cookie.Value)} {
		raw, _ := base64.RawURLEncoding.DecodeString(secret)
		for _, k := range keys {
			if bytes.Equal(k, raw) || strings.Contains(dump, secret) {
				t.Fatalf("a token is stored as it is")
			}
		}
	}
	h := sha256.Sum256([]byte(cookie.Value))
	u.mu.Lock()
	_, ok := u.sessions[h]
	u.mu.Unlock()
	if !ok {
		t.Fatal("the session is not kept under the SHA-256 of its cookie")
	}
	// A stored key used as a cookie opens nothing.
	for _, k := range keys {
		r := httptest.NewRequest(http.MethodGet, "/v1/status/cluster", nil)
		r.AddCookie(&http.Cookie{Name: CookieName, Value: base64.RawURLEncoding.EncodeToString(k)})
		if _, err := u.Verify(r); !errors.Is(err, ErrNoSession) {
			t.Fatalf("a stored hash used as cookie: %v, want ErrNoSession", err)
		}
	}
}

func TestSessions_Expire(t *testing.T) {
	u, clk, _ := newTestUI(t)
	cookie := signedIn(t, u)
	req := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v1/status/cluster", nil)
		r.AddCookie(cookie)
		return r
	}
	clk.add(DefaultSessionTTL - time.Second)
	c, err := u.Verify(req())
	if err != nil {
		t.Fatalf("a session 1s before its expiry: %v", err)
	}
	if c.Via != access.ViaSession || c.Subject != "uid 0" || !c.Has(access.Admin) || c.Remote == "" {
		t.Errorf("session caller %+v: want via session, subject uid 0, admin, a remote", c)
	}
	clk.add(time.Second)
	if _, err := u.Verify(req()); !errors.Is(err, ErrNoSession) {
		t.Fatalf("an expired session: %v, want ErrNoSession", err)
	}
	u.mu.Lock()
	n := len(u.sessions)
	u.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sessions kept after expiry", n)
	}
}

func TestVerify_CSRF(t *testing.T) {
	u, _, _ := newTestUI(t)
	cookie := signedIn(t, u)
	other := signedIn(t, u)
	good := csrfToken(cookie.Value)
	for _, c := range []struct {
		what, method, token, origin string
		cookie                      *http.Cookie
		want                        error
	}{
		{"GET needs no token", http.MethodGet, "", "", cookie, nil},
		{"HEAD needs no token", http.MethodHead, "", "", cookie, nil},
		{"PUT without token", http.MethodPut, "", "", cookie, ErrCSRF},
		{"POST without token", http.MethodPost, "", "", cookie, ErrCSRF},
		{"DELETE without token", http.MethodDelete, "", "", cookie, ErrCSRF},
		{"PUT with a wrong token", http.MethodPut, good[:len(good)-1] + "x", "", cookie, ErrCSRF},
		{"PUT with another session's token", http.MethodPut, csrfToken(other.Value), "", cookie, ErrCSRF},
		{"PUT with the cookie as token", http.MethodPut, cookie.Value, "", cookie, ErrCSRF},
		{"PUT with the token", http.MethodPut, good, "", cookie, nil},
		{"POST with the token, same origin", http.MethodPost, good, "http://" + testAddr, cookie, nil},
		{"POST with the token, foreign origin", http.MethodPost, good, "http://evil.example", cookie, ErrCSRF},
		{"POST with the token, https origin", http.MethodPost, good, "https://" + testAddr, cookie, ErrCSRF},
		{"POST with the token, origin null", http.MethodPost, good, "null", cookie, ErrCSRF},
		{"GET without cookie", http.MethodGet, "", "", nil, ErrNoSession},
		{"PUT with the token, no cookie", http.MethodPut, good, "", nil, ErrNoSession},
		{"GET with an unknown cookie", http.MethodGet, "", "", &http.Cookie{Name: CookieName, Value: "x"}, ErrNoSession},
	} {
		r := httptest.NewRequest(c.method, "http://"+testAddr+"/v1/rekey/cluster", nil)
		if c.cookie != nil {
			r.AddCookie(c.cookie)
		}
		if c.token != "" {
			r.Header.Set(CSRFHeader, c.token)
		}
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		_, err := u.Verify(r)
		if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
		if _, ok := u.Authenticate(r); ok != (c.want == nil) {
			t.Errorf("%s: Authenticate says %v", c.what, ok)
		}
	}
}

// inner is the API behind Gate in the tests: it says who called.
type inner struct {
	mu     sync.Mutex
	called int
	caller *access.Caller
}

const innerData = "KEY-ID-0123456789"

func (h *inner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.called++
	h.caller = access.FromContext(r.Context())
	h.mu.Unlock()
	fmt.Fprint(w, innerData)
}

func TestGate_NoSessionNoData(t *testing.T) {
	u, _, _ := newTestUI(t)
	h := &inner{}
	gate := u.Gate(u.Mount(h))
	expired := signedIn(t, u)
	u.signOut(expired.Value)
	for _, c := range []struct {
		method, path string
		cookie       *http.Cookie
	}{
		{"GET", "/", nil},
		{"GET", "/ui/", nil},
		{"GET", "/ui", nil},
		{"GET", "/ui/app.js", nil},
		{"GET", "/ui/app.css", nil},
		{"GET", "/ui/session", nil},
		{"POST", "/ui/signout", nil},
		{"GET", "/v1/status/cluster", nil},
		{"GET", "/v1/status/cluster", expired},
		{"GET", "/v1/events", nil},
		{"GET", "/v1/domains/FTP/entries/a", nil},
		{"PUT", "/v1/rekey/cluster", nil},
		{"POST", "/v1/rekey/cluster", nil},
		{"POST", "/v1/ui/links", nil},
		{"GET", "/metrics", nil},
		{"DELETE", "/anything", nil},
	} {
		r := httptest.NewRequest(c.method, "http://"+testAddr+c.path, strings.NewReader("{}"))
		if c.cookie != nil {
			r.AddCookie(c.cookie)
		}
		w := httptest.NewRecorder()
		gate.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized || strings.Contains(w.Body.String(), innerData) {
			t.Errorf("%s %s without a session: %d %q; want 401 and no data", c.method, c.path, w.Code, w.Body)
		}
		switch c.path {
		case "/", "/ui", "/ui/":
			if !strings.Contains(w.Body.String(), "Sign in with <code>kmctl ui url</code>") {
				t.Errorf("%s %s: body %q; want the sign-in prompt", c.method, c.path, w.Body)
			}
		default:
			var eb api.ErrorBody
			if json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Code != api.CodeUnauthorized || !strings.Contains(eb.Error, "kmctl ui url") {
				t.Errorf("%s %s: body %q; want a JSON error saying to run kmctl ui url", c.method, c.path, w.Body)
			}
		}
	}
	if h.called != 0 {
		t.Fatalf("the API was called %d times without a session", h.called)
	}
}

func TestGate_Session(t *testing.T) {
	u, _, _ := newTestUI(t)
	h := &inner{}
	gate := u.Gate(u.Mount(h))
	cookie := signedIn(t, u)
	do := func(method, path, host string, csrf bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://"+host+path, strings.NewReader(`{"key_rotation":"6W"}`))
		r.AddCookie(cookie)
		if csrf {
			r.Header.Set(CSRFHeader, csrfToken(cookie.Value))
		}
		w := httptest.NewRecorder()
		gate.ServeHTTP(w, r)
		return w
	}

	if w := do("GET", "/v1/status/cluster", testAddr, false); w.Code != 200 || w.Body.String() != innerData {
		t.Fatalf("GET with a session: %d %q", w.Code, w.Body)
	}
	if h.caller == nil || h.caller.Via != access.ViaSession || h.caller.Who() != "web session of uid 0" || !h.caller.Has(access.Admin) {
		t.Fatalf("the API saw caller %+v; want the admin session of uid 0", h.caller)
	}
	n := h.called
	w := do("PUT", "/v1/rekey/cluster", testAddr, false)
	if w.Code != http.StatusForbidden || h.called != n {
		t.Fatalf("PUT without the CSRF token: %d %q, API called %d times; want 403 and no call", w.Code, w.Body, h.called-n)
	}
	if !strings.Contains(w.Body.String(), CSRFHeader) {
		t.Errorf("403 body %q does not name %s", w.Body, CSRFHeader)
	}
	if w := do("PUT", "/v1/rekey/cluster", testAddr, true); w.Code != 200 || h.called != n+1 {
		t.Fatalf("PUT with the CSRF token: %d %q", w.Code, w.Body)
	}
	for _, host := range []string{"localhost:8443", "[::1]:8443", "127.0.0.2:8443"} {
		if w := do("GET", "/v1/status/cluster", host, false); w.Code != 200 {
			t.Errorf("Host %s: %d, want 200", host, w.Code)
		}
	}
	for _, host := range []string{"evil.example:8443", "192.168.1.5:8443", "kmd.local"} {
		if w := do("GET", "/v1/status/cluster", host, false); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), innerData) {
			t.Errorf("Host %s (DNS rebinding): %d %q, want 403 and no data", host, w.Code, w.Body)
		}
	}
	// A session may not make more links (it would outlive itself).
	if w := do("POST", api.PathUILinks, testAddr, true); w.Code != http.StatusForbidden {
		t.Errorf("POST %s from a session: %d %q, want 403", api.PathUILinks, w.Code, w.Body)
	}
	if w := do("GET", "/", testAddr, false); w.Code != http.StatusSeeOther || w.Header().Get("Location") != PathPage {
		t.Errorf("GET / with a session: %d to %q, want 303 to %s", w.Code, w.Header().Get("Location"), PathPage)
	}
}

func TestPage(t *testing.T) {
	u, _, _ := newTestUI(t)
	gate := u.Gate(u.Mount(&inner{}))
	cookie := signedIn(t, u)
	get := func(path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://"+testAddr+path, nil)
		r.AddCookie(cookie)
		w := httptest.NewRecorder()
		gate.ServeHTTP(w, r)
		return w
	}
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		w := get(path)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %s, want 200 %s", path, w.Code, w.Header().Get("Content-Type"), ctype)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if w := get("/ui/nope"); w.Code != http.StatusNotFound {
		t.Errorf("GET /ui/nope: %d, want 404", w.Code)
	}

	w := get(PathSession)
	var info SessionInfo
	if err := json.Unmarshal(w.Body.Bytes(), &info); err != nil || w.Code != 200 {
		t.Fatalf("GET %s: %d %s", PathSession, w.Code, w.Body)
	}
	if info.CSRF != csrfToken(cookie.Value) || info.Who != "web session of uid 0" || info.Expires == nil {
		t.Errorf("session info %+v", info)
	}

	// Sign out: the session is gone.
	r := httptest.NewRequest(http.MethodPost, "http://"+testAddr+PathSignOut, nil)
	r.AddCookie(cookie)
	r.Header.Set(CSRFHeader, info.CSRF)
	w = httptest.NewRecorder()
	gate.ServeHTTP(w, r)
	if w.Code != http.StatusNoContent {
		t.Fatalf("sign out: %d %s", w.Code, w.Body)
	}
	if w := get("/ui/"); w.Code != http.StatusUnauthorized {
		t.Errorf("GET /ui/ after sign-out: %d, want 401", w.Code)
	}
}

// TestPage_NoOutsideAssets: the embedded files name no other site.
func TestPage_NoOutsideAssets(t *testing.T) {
	err := fs.WalkDir(static, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(path)
		if err != nil {
			return err
		}
		for _, bad := range []string{"://", "@import", "url(", "<script>", "style=", "onclick", "innerHTML", "eval("} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s holds %q: the page loads only kmd's own files, and no inline code", path, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestServeLink(t *testing.T) {
	monitor := &access.Caller{Via: access.ViaTLS, Subject: "CN=prometheus", Roles: []access.Role{access.Monitor}}
	session := &access.Caller{Via: access.ViaSession, Subject: "uid 0", Roles: []access.Role{access.Admin}}
	for _, c := range []struct {
		what   string
		off    bool
		method string
		caller *access.Caller
		status int
		says   string
	}{
		{"admin", false, "POST", admin, 201, "http://" + testAddr + "/ui/signin?token="},
		{"no caller named", false, "POST", nil, 403, "kmd cannot tell who asks for a sign-in link"},
		{"web page off", true, "POST", admin, 409, "the web page is off: start kmd with --ui-listen 127.0.0.1:PORT"},
		{"monitor", false, "POST", monitor, 403, "CN=prometheus may not make sign-in links"},
		{"web session", false, "POST", session, 403, "a web session cannot make sign-in links"},
		{"GET", false, "GET", admin, 404, "no such endpoint"},
	} {
		o := Options{Addr: testAddr}
		if c.off {
			o.Addr = ""
		}
		u := New(o)
		r := httptest.NewRequest(c.method, api.PathUILinks, nil)
		if c.caller != nil {
			r = r.WithContext(access.WithCaller(r.Context(), c.caller))
		}
		w := httptest.NewRecorder()
		u.Mount(&inner{}).ServeHTTP(w, r)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.says) {
			t.Errorf("%s: %d %s; want %d saying %q", c.what, w.Code, w.Body, c.status, c.says)
		}
		u.mu.Lock()
		n := len(u.links)
		u.mu.Unlock()
		if (n == 1) != (c.status == 201) {
			t.Errorf("%s: %d links kept", c.what, n)
		}
	}
}
