package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// Bounds of the web-page test's steps.
const (
	installTimeout = 10 * time.Minute // apt-get install chromium, the first time
	uiTimeout      = 45 * time.Second // the page showing what it should
	uiBulkEntries  = 5000             // in one domain, so that its rekey runs a while
)

// chromium returns the browser scripts/install-test-deps.sh installed
// (it does nothing when it is there already).
func chromium(t *testing.T) string {
	t.Helper()
	const browser = "/usr/bin/chromium"
	if _, err := os.Stat(browser); err != nil && os.Geteuid() != 0 {
		t.Skip("chromium is not installed and not root: scripts/install-test-deps.sh could not apt-get install it")
	}
	repo, err := filepath.Abs("..") // the tests run in e2e/
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repo, "scripts", "install-test-deps.sh"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/install-test-deps.sh: %v\n%s", err, errb.String())
	}
	path := strings.TrimSpace(out.String())
	if path != browser {
		t.Fatalf("scripts/install-test-deps.sh printed %q, want %s", path, browser)
	}
	return path
}

// freeLoopbackAddr returns 127.0.0.1 and a port nothing listens on.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// artifactsDir is where tests leave files for people to look at:
// $KMD_TEST_ARTIFACTS, else e2e/artifacts.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KMD_TEST_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newBrowser starts a headless Chromium for the test and returns its tab.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	var out syncBuffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // we are root
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1800),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(&out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	// The first run starts the browser; it has no deadline of its own.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v\n%s", err, out.String())
	}
	return ctx
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// browse runs actions in the tab, failing the test on an error.
func browse(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, uiTimeout)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// evalJS evaluates a JavaScript expression in the page.
func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, uiTimeout)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true in the page; it
// fails the test after uiTimeout, showing what describe evaluates to.
func waitJS(t *testing.T, ctx context.Context, what, expr, describe string) {
	t.Helper()
	var lastErr error
	ok := waitUntil(uiTimeout, func() bool {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(tctx, chromedp.Evaluate[bool](expr))
		lastErr = err
		return err == nil && v
	})
	if !ok {
		shown, _ := chromedp.Run(ctx, chromedp.Evaluate[any](describe))
		t.Fatalf("the page did not %s within %v (last error %v); it shows %v", what, uiTimeout, lastErr, shown)
	}
}

// pageKeyIDs is the Domain → Key ID of the page's cluster table.
const pageKeyIDs = `Object.fromEntries([...document.querySelectorAll('#cluster-table tbody tr')].map(r => [r.cells[0].textContent, r.cells[3].textContent]))`

// sameKeyIDsJS is true when the page's cluster table shows exactly ids.
func sameKeyIDsJS(ids map[string]string) string {
	b, _ := json.Marshal(ids)
	return fmt.Sprintf(`(() => { const want = %s; const got = %s;
		return Object.keys(got).length === Object.keys(want).length && Object.keys(want).every(d => got[d] === want[d]); })()`, b, pageKeyIDs)
}

// uiClient is a plain HTTP client for the --ui-listen address: it follows
// no redirect and keeps no cookie.
var uiClient = &http.Client{
	Timeout:       cmdTimeout,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type uiRequest struct {
	method, url, body string
	cookie            *http.Cookie
	header            map[string]string
}

func uiDo(t *testing.T, r uiRequest) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(r.method, r.url, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.cookie != nil {
		req.AddCookie(r.cookie)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := uiClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestUI_Chromium drives the web page in a real headless Chromium against
// the real kmd: without a session the page and the API on --ui-listen give
// nothing; `kmctl ui url` signs the browser in; the page shows the 17
// cluster domains and the SED row with kmctl's key IDs; Rekey Now asks the
// CLI's question, does nothing when it is dismissed and rekeys every
// domain when it is accepted, and the page follows the key IDs to their new
// values; the rotation form shows the API's error for a bad value and saves
// a good one; a replayed link and a change without the CSRF token are
// refused and change nothing; signing out ends the session. The screenshot
// is left in $KMD_TEST_ARTIFACTS (default e2e/artifacts) as ui.png.
func TestUI_Chromium(t *testing.T) {
	browserPath := chromium(t)
	t.Parallel()
	step := stepper(t)
	addr := freeLoopbackAddr(t)
	base := "http://" + addr
	d := startKMD(t, "--ui-listen", addr)
	secrets := map[string][]byte{}
	for i, dom := range []string{"FTP", "S3", "SSO", "CELOG", "SED"} {
		secrets[dom] = []byte(fmt.Sprintf("ui-test-secret-%d", i))
		d.put(dom, "ui/secret", secrets[dom])
	}
	// Enough entries in one domain that its rekey is seen running.
	d.importEntries("NDMP", genEntries("backup-", uiBulkEntries))
	before := d.keyIDs()
	sedBefore := d.sedKeyID()
	step("kmd up with --ui-listen " + addr)

	// Without a session: nothing, whatever is asked.
	noData := func(what, body string) {
		t.Helper()
		for dom, id := range before {
			if strings.Contains(body, id) || strings.Contains(body, dom) {
				t.Errorf("%s without a session shows %s's key ID or name:\n%s", what, dom, body)
			}
		}
		for dom, s := range secrets {
			if strings.Contains(body, string(s)) {
				t.Errorf("%s without a session shows an entry of %s", what, dom)
			}
		}
		if strings.Contains(body, sedBefore) {
			t.Errorf("%s without a session shows the SED key ID", what)
		}
	}
	for _, r := range []uiRequest{
		{method: "GET", url: base + "/ui/"},
		{method: "GET", url: base + "/ui/app.js"},
		{method: "GET", url: base + "/v1/status/cluster"},
		{method: "GET", url: base + "/v1/status/sed"},
		{method: "GET", url: base + "/v1/events"},
		{method: "GET", url: base + "/v1/domains/FTP/entries/ui%2Fsecret"},
		{method: "GET", url: base + "/v1/domains/FTP/export"},
		{method: "PUT", url: base + "/v1/rekey/cluster", body: `{"key_rotation":"6W"}`},
		{method: "POST", url: base + "/v1/rekey/cluster", body: `{}`},
		{method: "POST", url: base + "/v1/ui/links"},
	} {
		resp, body := uiDo(t, r)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without a session: %s, want 401", r.method, r.url, resp.Status)
		}
		noData(r.method+" "+r.url, body)
	}
	if v := d.rekeyView("cluster"); v.KeyRotation != "Never" {
		t.Errorf("key rotation %q after a PUT without a session, want Never", v.KeyRotation)
	}
	if got := d.keyIDs(); !maps.Equal(got, before) {
		t.Errorf("key IDs changed after a POST without a session")
	}
	step("no data without a session")

	ctx := newBrowser(t, browserPath)
	browse(t, ctx, "open the page without a session", chromedp.Navigate(base+"/ui/"))
	text := evalJS[string](t, ctx, `document.body.innerText`)
	if !strings.Contains(text, "Sign in with kmctl ui url") {
		t.Errorf("the page without a session says %q; want Sign in with kmctl ui url", text)
	}
	noData("the page in the browser", text)
	step("chromium up; the page without a session asks to sign in")

	link := strings.TrimSpace(d.must("ui", "url"))
	if !strings.HasPrefix(link, base+"/ui/signin?token=") {
		t.Fatalf("kmctl ui url printed %q, want %s/ui/signin?token=…", link, base)
	}
	browse(t, ctx, "open the sign-in link", chromedp.Navigate(link))
	if loc := evalJS[string](t, ctx, `location.href`); loc != base+"/ui/" {
		t.Fatalf("the sign-in link led to %s, want %s/ui/", loc, base)
	}
	waitJS(t, ctx, "show the 17 cluster domains with kmctl's key IDs", sameKeyIDsJS(before), pageKeyIDs)
	waitJS(t, ctx, "show the SED row", fmt.Sprintf(`(() => { const r = document.querySelectorAll('#sed-table tbody tr');
		return r.length === 1 && r[0].cells[0].textContent === '1' && r[0].cells[1].textContent.startsWith('LOCAL') && r[0].dataset.keyId === %q; })()`, sedBefore),
		`document.querySelector('#sed-table').innerText`)

	// The session cookie: HttpOnly (the page's scripts cannot read it),
	// SameSite=Strict, expiring.
	cctx, cancel := context.WithTimeout(ctx, uiTimeout)
	cookies, err := chromedp.Call(cctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/ui/"}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var session *http.Cookie
	for _, c := range cookies.Cookies {
		if c.Name != "kmd_session" {
			continue
		}
		exp := time.Unix(int64(c.Expires), 0)
		if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" || c.Session ||
			exp.Before(time.Now().Add(7*time.Hour)) || exp.After(time.Now().Add(9*time.Hour)) {
			t.Errorf("session cookie %+v; want HttpOnly, SameSite=Strict, Path=/, expiring in 8h", c)
		}
		session = &http.Cookie{Name: c.Name, Value: c.Value}
	}
	if session == nil {
		t.Fatalf("no kmd_session cookie after sign-in; cookies %+v", cookies.Cookies)
	}
	if jc := evalJS[string](t, ctx, `document.cookie`); jc != "" {
		t.Errorf("the page's scripts read the cookies %q; the session cookie must be HttpOnly", jc)
	}
	step("signed in; 17 domains and the SED row shown")

	// Rekey Now asks the CLI's question; the answers come from answers.
	answers := make(chan bool, 2)
	asked := make(chan string, 2)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			asked <- ev.Message
			accept := <-answers
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: accept})
		}
	}()
	const question = "Are you sure you want to rekey the master passphrase?"
	clickRekey := func(accept bool) {
		t.Helper()
		answers <- accept
		browse(t, ctx, "click Rekey Now", chromedp.Click(chromedp.ID("cluster-rekey")))
		select {
		case q := <-asked:
			if q != question {
				t.Errorf("Rekey Now asked %q, want %q", q, question)
			}
		case <-time.After(uiTimeout):
			t.Fatal("Rekey Now asked nothing")
		}
	}
	clickRekey(false)
	waitJS(t, ctx, "say the rekey was cancelled", `document.getElementById('cluster-result').textContent === 'Rekey cancelled.'`,
		`document.getElementById('cluster-result').textContent`)
	if got := d.keyIDs(); !maps.Equal(got, before) {
		t.Fatalf("a dismissed Rekey Now changed key IDs")
	}
	step("Rekey Now dismissed: nothing done")

	// Record every progress line the page shows from now on.
	evalJS[bool](t, ctx, `(() => { window.seenProgress = [];
		const box = document.getElementById('cluster-progress');
		new MutationObserver(() => { if (!box.hidden) window.seenProgress.push(box.querySelector('.progress-text').textContent); })
			.observe(box, { attributes: true, childList: true, subtree: true, characterData: true });
		return true; })()`)
	clickRekey(true)
	waitJS(t, ctx, "say the rekey started", `document.getElementById('cluster-result').textContent.startsWith('Rekey started: CELOG, ')`,
		`document.getElementById('cluster-result').textContent`)
	var after map[string]string
	if !waitUntil(uiTimeout, func() bool {
		out, _, code := d.kmctlQuiet(nil, "cluster", "status", "-o", "json")
		var cs clusterStatus
		if code != 0 || !decodeQuiet(out, &cs) || len(cs.Domains) != 17 {
			return false
		}
		ids := map[string]string{}
		for _, r := range cs.Domains {
			if r.Status != "ACTIVE" || r.KeyID == before[r.Domain] {
				return false
			}
			ids[r.Domain] = r.KeyID
		}
		after = ids
		return true
	}) {
		t.Fatalf("not every domain has a new key ID and is ACTIVE within %v:\n%s", uiTimeout, d.must("cluster", "status"))
	}
	waitJS(t, ctx, "show every domain's new key ID", sameKeyIDsJS(after), pageKeyIDs)
	seen := evalJS[[]string](t, ctx, `window.seenProgress`)
	running := regexp.MustCompile(`^Rekeying (1 domain|\d+ domains): \d+/\d+ entries \(\d+%\)$`)
	if len(seen) == 0 || !running.MatchString(seen[0]) {
		t.Fatalf("the page showed no rekey progress while %d entries were re-encrypted; progress lines %q", uiBulkEntries, seen)
	}
	t.Logf("progress lines shown: %d, first %q, last %q", len(seen), seen[0], seen[len(seen)-1])
	waitJS(t, ctx, "show every domain ACTIVE and the progress bar gone",
		`document.getElementById('cluster-progress').hidden && [...document.querySelectorAll('#cluster-table tbody tr')].every(r => r.cells[1].textContent === 'ACTIVE')`,
		`document.getElementById('cluster').innerText`)
	waitJS(t, ctx, "list the completed rekeys among the recent events",
		`[...document.querySelectorAll('#events-table tbody tr')].some(r => r.cells[1].textContent === 'KeyManagerRekeyCompleted')`,
		`document.getElementById('events-table').innerText`)
	if sed := d.sedKeyID(); sed != sedBefore {
		t.Errorf("the cluster's Rekey Now rekeyed SED too")
	}
	for dom, want := range secrets {
		if got := d.get(dom, "ui/secret"); !bytes.Equal(got, want) {
			t.Errorf("%s entry after the rekey: %q, want %q", dom, got, want)
		}
	}
	step("Rekey Now accepted: 17 new key IDs on the page")

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shotPath := filepath.Join(artifactsDir(t), "ui.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shotPath)

	// Automatic rekey: a bad rotation shows the API's error line and
	// changes nothing; a good one is saved.
	_, stderr, code := d.kmctl("cluster", "rekey", "modify", "--key-rotation", "6X")
	wantErr := strings.TrimPrefix(strings.SplitN(stderr, "\n", 2)[0], "kmctl: error: ")
	if code != 2 || !strings.HasPrefix(wantErr, `invalid key rotation "6X"`) {
		t.Fatalf("kmctl cluster rekey modify --key-rotation 6X: exit %d, %q", code, stderr)
	}
	browse(t, ctx, "enter the rotation 6X and save",
		chromedp.Click(chromedp.ID("cluster-auto")),
		chromedp.SendKeys(chromedp.ID("cluster-rotation"), "6X"),
		chromedp.Click(chromedp.ID("cluster-save")))
	waitJS(t, ctx, "show the API's error for 6X", fmt.Sprintf(`document.getElementById('cluster-form-error').textContent === %q`, wantErr),
		`document.getElementById('cluster-form-error').textContent`)
	if v := d.rekeyView("cluster"); v.KeyRotation != "Never" {
		t.Errorf("key rotation %q after a refused 6X, want Never", v.KeyRotation)
	}
	browse(t, ctx, "enter the rotation 6W and save",
		chromedp.SendKeys(chromedp.ID("cluster-rotation"), kb.End+kb.Backspace+kb.Backspace+"6W"),
		chromedp.Click(chromedp.ID("cluster-save")))
	waitJS(t, ctx, "show the saved schedule", `document.getElementById('cluster-form-error').textContent === 'Saved.' &&
		document.querySelector('#cluster-view [data-field=key_rotation]').textContent === '6W'`,
		`document.getElementById('cluster').innerText`)
	if v := d.rekeyView("cluster"); v.KeyRotation != "6W" || v.NextRekey == "Never" {
		t.Errorf("cluster rekey view after saving 6W: %+v", v)
	}
	step("rotation: 6X refused with the API's error, 6W saved")

	// The link works once.
	resp, body := uiDo(t, uiRequest{method: "GET", url: link})
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "already used") {
		t.Errorf("replayed link: %s, cookies %v, body %q; want 401, no cookie, already used", resp.Status, resp.Cookies(), body)
	}

	// A change needs the session's CSRF token (and its own origin).
	resp, body = uiDo(t, uiRequest{method: "GET", url: base + "/ui/session", cookie: session})
	var info struct{ CSRF string }
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &info) != nil || info.CSRF == "" {
		t.Fatalf("GET /ui/session with the cookie: %s %s", resp.Status, body)
	}
	for _, c := range []struct {
		what   string
		header map[string]string
	}{
		{"without the CSRF token", nil},
		{"with a wrong CSRF token", map[string]string{"X-CSRF-Token": info.CSRF + "x"}},
		{"from another origin", map[string]string{"X-CSRF-Token": info.CSRF, "Origin": "http://evil.example"}},
	} {
		resp, body := uiDo(t, uiRequest{method: "PUT", url: base + "/v1/rekey/sed", body: `{"key_rotation":"2M"}`, cookie: session, header: c.header})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("PUT /v1/rekey/sed %s: %s %s, want 403", c.what, resp.Status, body)
		}
		resp, body = uiDo(t, uiRequest{method: "POST", url: base + "/v1/rekey/sed", body: `{}`, cookie: session, header: c.header})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST /v1/rekey/sed %s: %s %s, want 403", c.what, resp.Status, body)
		}
	}
	if v := d.rekeyView("sed"); v.KeyRotation != "Never" {
		t.Errorf("sed key rotation %q after refused PUTs, want Never", v.KeyRotation)
	}
	if sed := d.sedKeyID(); sed != sedBefore {
		t.Errorf("SED rekeyed by a refused POST")
	}
	resp, body = uiDo(t, uiRequest{method: "PUT", url: base + "/v1/rekey/sed", body: `{"key_rotation":"2M"}`, cookie: session,
		header: map[string]string{"X-CSRF-Token": info.CSRF, "Origin": base}})
	if resp.StatusCode != 200 || d.rekeyView("sed").KeyRotation != "2M" {
		t.Errorf("PUT /v1/rekey/sed with the CSRF token: %s %s; want 200 and rotation 2M", resp.Status, body)
	}
	step("replayed link and changes without the CSRF token refused")

	// Signing out ends the session.
	browse(t, ctx, "sign out", chromedp.Click(chromedp.ID("signout")))
	waitJS(t, ctx, "say it signed out and show no data", `document.getElementById('banner').textContent.startsWith('Signed out.') && !document.querySelector('main')`,
		`document.body.innerText`)
	if resp, _ := uiDo(t, uiRequest{method: "GET", url: base + "/v1/status/cluster", cookie: session}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/status/cluster with the signed-out cookie: %s, want 401", resp.Status)
	}
	step("signed out")
}

// TestUIListen_Refused: --ui-listen takes loopback addresses only; anything
// else stops kmd with exit 2 and one line naming what would be right,
// before it touches its data dir. A port in use: exit 1, no socket left.
func TestUIListen_Refused(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "kmde2e")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	sock := filepath.Join(dir, "s.sock")
	base := []string{"--data-dir", data, "--socket", sock, "--log-file", filepath.Join(dir, "kmd.log")}
	cfg := filepath.Join(dir, "kmd.yaml")
	if err := os.WriteFile(cfg, []byte("ui_listen: 10.1.2.3:8443\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		env  []string
		args []string
		want string
	}{
		{"every interface", nil, []string{"--ui-listen", "0.0.0.0:8443"}, "is not loopback"},
		{"IPv6 any", nil, []string{"--ui-listen", "[::]:8443"}, "is not loopback"},
		{"no host", nil, []string{"--ui-listen", ":8443"}, "listens on every interface"},
		{"LAN address", nil, []string{"--ui-listen", "192.168.1.10:8443"}, "is not loopback"},
		{"host name", nil, []string{"--ui-listen", "kmd.example.net:8443"}, "not an IP address or localhost"},
		{"no port", nil, []string{"--ui-listen", "127.0.0.1"}, "missing port"},
		{"port 0", nil, []string{"--ui-listen", "127.0.0.1:0"}, "invalid port"},
		{"port too big", nil, []string{"--ui-listen", "127.0.0.1:70000"}, "invalid port"},
		{"named port", nil, []string{"--ui-listen", "127.0.0.1:https"}, "invalid port"},
		{"env", []string{"KMD_UI_LISTEN=0.0.0.0:8443"}, nil, "KMD_UI_LISTEN"},
		{"config file", nil, []string{"--config", cfg}, "ui_listen"},
	} {
		out, code, _ := runKMD(t, tc.env, append(slices.Clone(base), tc.args...)...)
		var el []string
		for _, l := range lines(out) {
			if strings.HasPrefix(l, "kmd: error:") {
				el = append(el, l)
			}
		}
		if code != 2 || len(el) != 1 || !strings.Contains(el[0], tc.want) || !strings.Contains(el[0], "127.0.0.1:8443") {
			t.Errorf("kmd with %s: exit %d, error lines %q; want exit 2 and one line saying %q and naming 127.0.0.1:8443 as right; output:\n%s",
				tc.what, code, el, tc.want, out)
		}
		if _, err := os.Stat(data); err == nil {
			t.Errorf("kmd with %s created its data dir", tc.what)
			os.RemoveAll(data)
		}
	}

	// A port in use.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, code, _ := runKMD(t, nil, append(slices.Clone(base), "--ui-listen", ln.Addr().String())...)
	if code != 1 || strings.Count(out, "kmd: error:") != 1 || !strings.Contains(out, "address already in use") {
		t.Errorf("kmd --ui-listen on a port in use: exit %d, want 1 with one line saying address already in use; output:\n%s", code, out)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("kmd --ui-listen on a port in use left its socket")
	}
}

// TestUIURL_Off: without --ui-listen the web page is off, and kmctl ui url
// says how to turn it on.
func TestUIURL_Off(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	out, stderr, code := d.kmctl("ui", "url")
	want := "kmctl: error: the web page is off: start kmd with --ui-listen 127.0.0.1:PORT\n"
	if code != 1 || out != "" || stderr != want {
		t.Errorf("kmctl ui url without --ui-listen: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, stderr, want)
	}
}
