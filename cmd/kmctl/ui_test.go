package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/api/ui"
)

// uiDaemon serves kmd's real web-page routes (package ui) on a unix socket,
// in front of an API that answers nothing.
func uiDaemon(t *testing.T, uiListen string) *fakeDaemon {
	t.Helper()
	h := ui.New(ui.Options{Addr: uiListen}).Mount(apiError(404, api.CodeNoEndpoint, "no such endpoint"))
	// As kmd's identity middleware names a caller: root on the socket.
	root := &access.Caller{Via: access.ViaSocket, UID: 0, Roles: []access.Role{access.Admin}}
	return newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(access.WithCaller(r.Context(), root)))
	})
}

func TestUIURL(t *testing.T) {
	f := uiDaemon(t, "127.0.0.1:8443")
	r := f.run(t, runOpts{}, "ui", "url")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("ui url: exit %d, stderr %q", r.code, r.stderr)
	}
	link := strings.TrimSuffix(r.stdout, "\n")
	if !strings.HasPrefix(link, "http://127.0.0.1:8443/ui/signin?token=") || strings.ContainsAny(link, " \n") {
		t.Fatalf("ui url printed %q; want one line with http://127.0.0.1:8443/ui/signin?token=…", r.stdout)
	}
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].URI != api.PathUILinks {
		t.Fatalf("requests %+v; want one POST %s", reqs, api.PathUILinks)
	}
	r2 := f.run(t, runOpts{}, "ui", "url")
	if r2.stdout == r.stdout {
		t.Error("two ui url calls printed the same link")
	}

	r = f.run(t, runOpts{}, "ui", "url", "-o", "json")
	var l api.UILink
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || r.code != exitOK {
		t.Fatalf("ui url -o json: exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	if !strings.HasPrefix(l.URL, "http://127.0.0.1:8443/ui/signin?token=") || time.Until(l.Expires) > ui.DefaultLinkTTL || time.Until(l.Expires) < ui.DefaultLinkTTL-time.Minute {
		t.Errorf("ui url -o json: %+v; want the link and its expiry 5 minutes from now", l)
	}
}

func TestUIURL_Off(t *testing.T) {
	f := uiDaemon(t, "")
	r := f.run(t, runOpts{}, "ui", "url")
	want := "kmctl: error: the web page is off: start kmd with --ui-listen 127.0.0.1:PORT\n"
	if r.code != exitFail || r.stdout != "" || r.stderr != want {
		t.Fatalf("ui url with the web page off: exit %d, stdout %q, stderr %q; want exit 1 and %q", r.code, r.stdout, r.stderr, want)
	}
}

func TestUIURL_Errors(t *testing.T) {
	r := kmctl(t, runOpts{}, "--socket", noDaemon(t), "ui", "url")
	if r.code != exitFail || !strings.HasPrefix(r.stderr, "kmctl: error: cannot reach kmd at ") {
		t.Errorf("ui url, no kmd: exit %d, stderr %q; want exit 1, cannot reach kmd", r.code, r.stderr)
	}
	f := uiDaemon(t, "127.0.0.1:8443")
	checkUsageError(t, f.run(t, runOpts{}, "ui", "url", "extra"), `unexpected argument "extra"`)
	checkUsageError(t, f.run(t, runOpts{}, "ui"), `"kmctl ui" needs a subcommand: one of url`)
	checkUsageError(t, f.run(t, runOpts{}, "ui", "link"), `unknown command "link" for "kmctl ui"`)
	checkUsageError(t, f.run(t, runOpts{}, "ui", "url", "--token", "x"), "unknown flag: --token")
	if n := len(f.requests()); n != 0 {
		t.Errorf("usage errors sent %d requests", n)
	}
}
