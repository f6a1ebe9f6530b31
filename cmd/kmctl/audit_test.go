package main

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
)

func sampleAudit() api.AuditList {
	at := time.Date(2026, 11, 22, 9, 19, 16, 123456789, time.UTC)
	return api.AuditList{Records: []api.AuditRecord{
		{Time: at, Who: "uid 0", Via: "socket", From: "unix:/var/lib/kmd/kmd.sock", Action: "rekey.modify", Target: "cluster",
			Detail: "key_rotation=6W", Outcome: "ok", Status: 200, Seq: 1},
		{Time: at.Add(time.Minute), Who: "CN=s3-gateway,O=Example", Via: "tls", From: "192.0.2.10:40312", Action: "entry.delete",
			Target: "S3/gw/token", Outcome: "refused", Status: 404, Error: "entry not found: \"gw/token\"\nsecond line", Seq: 2},
		{Time: at.Add(2 * time.Minute), Who: "unknown", Action: "kmip.server.create", Outcome: "failed", Status: 500,
			Error: "internal error; see the kmd log", Seq: 3},
	}}
}

const auditTableGolden = `Time                  Who                      From                        Action              Target       Outcome
2026-11-22T09:19:16Z  uid 0                    unix:/var/lib/kmd/kmd.sock  rekey.modify        cluster      ok
2026-11-22T09:20:16Z  CN=s3-gateway,O=Example  192.0.2.10:40312            entry.delete        S3/gw/token  refused: entry not found: "gw/token" second line
2026-11-22T09:21:16Z  unknown                  -                           kmip.server.create  -            failed: internal error; see the kmd log
`

func TestRenderAudit(t *testing.T) {
	var b strings.Builder
	if err := renderAudit(&b, sampleAudit()); err != nil {
		t.Fatal(err)
	}
	if b.String() != auditTableGolden {
		t.Errorf("audit table:\n%s\nwant:\n%s", b.String(), auditTableGolden)
	}
	b.Reset()
	renderAudit(&b, api.AuditList{})
	if b.String() != "Time  Who  From  Action  Target  Outcome\n" {
		t.Errorf("empty audit table %q, want the header only", b.String())
	}
}

func TestAuditList_Requests(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		answer     api.AuditList
		wantURI    string
		wantStdout string
	}{
		{"table", []string{"audit", "list"}, sampleAudit(), "/v1/audit", auditTableGolden},
		{"since and limit", []string{"audit", "list", "--since", "2026-11-22T10:00:00+01:00", "--limit", "20"}, sampleAudit(),
			"/v1/audit?limit=20&since=2026-11-22T09%3A00%3A00Z", auditTableGolden},
		{"since with fraction", []string{"audit", "list", "--since=2026-11-22T09:00:00.5Z", "--limit=10000"}, sampleAudit(),
			"/v1/audit?limit=10000&since=2026-11-22T09%3A00%3A00.5Z", auditTableGolden},
		{"json", []string{"audit", "list", "-o", "json", "--limit", "1"},
			api.AuditList{Records: sampleAudit().Records[:1]}, "/v1/audit?limit=1",
			"{\n  \"records\": [\n    {\n      \"time\": \"2026-11-22T09:19:16.123456789Z\",\n      \"who\": \"uid 0\",\n" +
				"      \"via\": \"socket\",\n      \"from\": \"unix:/var/lib/kmd/kmd.sock\",\n      \"action\": \"rekey.modify\",\n" +
				"      \"target\": \"cluster\",\n      \"detail\": \"key_rotation=6W\",\n      \"outcome\": \"ok\",\n      \"status\": 200,\n" +
				"      \"seq\": 1\n    }\n  ]\n}\n"},
		{"json empty", []string{"audit", "list", "-o", "json"}, api.AuditList{}, "/v1/audit", "{\n  \"records\": []\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, tc.answer) })
			r := f.run(t, runOpts{}, tc.args...)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != tc.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, tc.wantStdout)
			}
			var got []request
			for _, q := range f.requests() {
				got = append(got, request{Method: q.Method, URI: q.URI})
			}
			if want := []request{{Method: "GET", URI: tc.wantURI}}; !reflect.DeepEqual(got, want) {
				t.Errorf("requests %q, want %q", got, want)
			}
		})
	}
}

func TestAuditList_UsageErrors(t *testing.T) {
	sock := noDaemon(t)
	for _, tc := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"no subcommand", []string{"audit"}, `"kmctl audit" needs a subcommand: one of list`},
		{"unknown subcommand", []string{"audit", "show"}, `unknown command "show" for "kmctl audit"`},
		{"extra argument", []string{"audit", "list", "S3"}, `unexpected argument "S3"`},
		{"since yesterday", []string{"audit", "list", "--since", "yesterday"}, `invalid --since "yesterday": want an RFC 3339 time`},
		{"since date only", []string{"audit", "list", "--since=2026-11-22"}, `invalid --since "2026-11-22"`},
		{"since empty", []string{"audit", "list", "--since="}, `invalid --since ""`},
		{"since without value", []string{"audit", "list", "--since"}, "flag needs an argument"},
		{"limit zero", []string{"audit", "list", "--limit", "0"}, `invalid --limit "0": want a whole number from 1 to 10000`},
		{"limit negative", []string{"audit", "list", "--limit=-5"}, `invalid --limit "-5"`},
		{"limit too large", []string{"audit", "list", "--limit", "10001"}, `invalid --limit "10001"`},
		{"limit not a number", []string{"audit", "list", "--limit", "ten"}, `invalid --limit "ten"`},
		{"limit fraction", []string{"audit", "list", "--limit", "1.5"}, `invalid --limit "1.5"`},
		{"limit empty", []string{"audit", "list", "--limit="}, `invalid --limit ""`},
		{"unknown flag", []string{"audit", "list", "--domain", "S3"}, "unknown flag: --domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkUsageError(t, kmctl(t, runOpts{}, append([]string{"--socket", sock}, tc.args...)...), tc.reason)
		})
	}
}

func TestAuditList_Errors(t *testing.T) {
	r := kmctl(t, runOpts{}, "audit", "list", "--socket", noDaemon(t))
	if r.code != exitFail || !strings.HasPrefix(r.stderr, "kmctl: error: cannot reach kmd at ") || r.stdout != "" {
		t.Errorf("unreachable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	f := newFakeDaemon(t, apiError(403, api.CodeForbidden, "uid 1001 may not list the audit trail: it needs the admin role"))
	r = f.run(t, runOpts{}, "audit", "list")
	if want := "kmctl: error: uid 1001 may not list the audit trail: it needs the admin role\n" +
		"hint: your user lacks the role for this; kmd's access configuration maps users to roles\n"; r.code != exitFail || r.stderr != want {
		t.Errorf("forbidden: exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
	f = newFakeDaemon(t, apiError(400, api.CodeBadRequest, `invalid since "x"`))
	r = f.run(t, runOpts{}, "audit", "list", "--since", "2026-11-22T09:00:00Z")
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, `kmctl: error: invalid since "x"`) {
		t.Errorf("refused by kmd: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
	r = kmctl(t, runOpts{}, "audit", "list", "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "kmctl audit list [--since RFC3339] [--limit N]") {
		t.Errorf("help: exit %d\n%s", r.code, r.stdout)
	}
}
