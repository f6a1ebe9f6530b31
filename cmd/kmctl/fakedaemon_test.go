package main

// Tests against a fake daemon: an httptest server on a unix socket that
// records what kmctl sends and answers scripted responses. They check
// request paths, bodies and error mapping only; kmd's behaviour is tested
// end to end against the real daemon elsewhere.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
)

// request is what the fake daemon received.
type request struct {
	Method, URI string
	Header      http.Header
	Body        string
}

type fakeDaemon struct {
	socket string
	mu     sync.Mutex
	reqs   []request
}

// newFakeDaemon serves h on a fresh unix socket and records every request.
func newFakeDaemon(t *testing.T, h http.HandlerFunc) *fakeDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "kmctl") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeDaemon{socket: filepath.Join(dir, "kmd.sock")}
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, request{Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone(), Body: string(b)})
		f.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		h(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeDaemon) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func apiError(status int, code, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, status, api.ErrorBody{Error: msg, Code: code})
	}
}

func (f *fakeDaemon) run(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	return kmctl(t, o, append([]string{"--socket", f.socket}, args...)...)
}

func TestFakeDaemon_RequestsAndOutput(t *testing.T) {
	view := api.RekeyView{RekeyTime: time.Date(2026, 11, 22, 18, 38, 45, 0, time.UTC), KeyRotation: "6W",
		NextRekey: "2027-01-03T18:38:45Z", LastResult: "succeeded"}
	events := api.EventList{Events: []api.Event{{Seq: 1, Time: keyCreated, Name: "KeyManagerRekeyCompleted", Scope: "cluster",
		Domain: "S3", Message: "rekey of S3 completed"}}}
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		answer     http.HandlerFunc
		want       []request // Method, URI and Body compared
		wantStdout string
	}{
		{
			name: "cluster status", args: []string{"cluster", "status"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleClusterStatus()) },
			want:   []request{{Method: "GET", URI: "/v1/status/cluster"}}, wantStdout: specClusterStatus,
		},
		{
			name: "sed status", args: []string{"sed", "status"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleSEDStatus()) },
			want:   []request{{Method: "GET", URI: "/v1/status/sed"}}, wantStdout: specSEDStatus,
		},
		{
			name: "cluster rekey start", args: []string{"cluster", "rekey", "start", "--yes", "--domain", "S3", "--domain", "SSO", "--domain", "S3"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"S3", "SSO"}})
			},
			want:       []request{{Method: "POST", URI: "/v1/rekey/cluster", Body: `{"domains":["S3","SSO"]}`}},
			wantStdout: "Rekey started: S3, SSO\n",
		},
		{
			name: "cluster rekey start all -o json", args: []string{"cluster", "rekey", "start", "--yes", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"CELOG", "S3"}})
			},
			want:       []request{{Method: "POST", URI: "/v1/rekey/cluster", Body: `{}`}},
			wantStdout: "{\n  \"started\": [\n    \"CELOG\",\n    \"S3\"\n  ]\n}\n",
		},
		{
			name: "sed rekey start", args: []string{"sed", "rekey", "start", "--yes"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"SED"}})
			},
			want: []request{{Method: "POST", URI: "/v1/rekey/sed", Body: `{}`}}, wantStdout: "Rekey started: SED\n",
		},
		{
			name: "rekey view", args: []string{"cluster", "rekey", "view"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, view) },
			want:   []request{{Method: "GET", URI: "/v1/rekey/cluster"}}, wantStdout: specRekeyView,
		},
		{
			name: "rekey modify", args: []string{"sed", "rekey", "modify", "--key-rotation", "6W"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, view) },
			want:   []request{{Method: "PUT", URI: "/v1/rekey/sed", Body: `{"key_rotation":"6W"}`}}, wantStdout: specRekeyView,
		},
		{
			name: "rekey modify Never -o json", args: []string{"cluster", "rekey", "modify", "--key-rotation", "Never", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, view) },
			want:   []request{{Method: "PUT", URI: "/v1/rekey/cluster", Body: `{"key_rotation":"Never"}`}},
			wantStdout: "{\n  \"rekey_time\": \"2026-11-22T18:38:45Z\",\n  \"key_rotation\": \"6W\",\n" +
				"  \"next_rekey\": \"2027-01-03T18:38:45Z\",\n  \"last_result\": \"succeeded\"\n}\n",
		},
		{
			name: "entry put", args: []string{"entry", "put", "S3", "gw/a b"}, stdin: "\x00\xffsecret\n",
			answer: func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("ETag", `"3"`); w.WriteHeader(204) },
			want:   []request{{Method: "PUT", URI: "/v1/domains/S3/entries/gw%2Fa%20b", Body: "\x00\xffsecret\n"}},
		},
		{
			name: "entry put empty value -o json", args: []string{"entry", "put", "S3", "n", "-o", "json"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("ETag", `"1"`); w.WriteHeader(204) },
			want:       []request{{Method: "PUT", URI: "/v1/domains/S3/entries/n"}},
			wantStdout: "{\n  \"domain\": \"S3\",\n  \"name\": \"n\",\n  \"version\": 1\n}\n",
		},
		{
			name: "entry get", args: []string{"entry", "get", "S3", "gw/token"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("ETag", `"7"`)
				w.Write([]byte("\x00bytes\r\n"))
			},
			want: []request{{Method: "GET", URI: "/v1/domains/S3/entries/gw%2Ftoken"}}, wantStdout: "\x00bytes\r\n",
		},
		{
			name: "entry get -o json", args: []string{"entry", "get", "SED", "drive-1", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("ETag", `"7"`)
				w.Write([]byte("hi"))
			},
			want:       []request{{Method: "GET", URI: "/v1/domains/SED/entries/drive-1"}},
			wantStdout: "{\n  \"domain\": \"SED\",\n  \"name\": \"drive-1\",\n  \"version\": 7,\n  \"value\": \"aGk=\"\n}\n",
		},
		{
			name: "entry delete", args: []string{"entry", "delete", "S3", "x"},
			answer: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) },
			want:   []request{{Method: "DELETE", URI: "/v1/domains/S3/entries/x"}},
		},
		{
			name: "entry list", args: []string{"entry", "list", "S3"},
			answer: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("after") == "" {
					writeJSON(w, 200, api.EntryList{Names: []string{"a", "c"}, Next: "c"})
					return
				}
				writeJSON(w, 200, api.EntryList{Names: []string{"b"}})
			},
			want: []request{{Method: "GET", URI: "/v1/domains/S3/entries?limit=1000"},
				{Method: "GET", URI: "/v1/domains/S3/entries?after=c&limit=1000"}},
			wantStdout: "a\nb\nc\n",
		},
		{
			name: "entry list empty -o json", args: []string{"entry", "list", "S3", "-o", "json"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.EntryList{}) },
			want:       []request{{Method: "GET", URI: "/v1/domains/S3/entries?limit=1000"}},
			wantStdout: "{\n  \"names\": []\n}\n",
		},
		{
			name: "entry import", args: []string{"entry", "import", "S3"},
			stdin:  `{"name":"a","value":"aGk="}` + "\n" + `{"name":"b","value":""}` + "\n",
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.ImportResponse{Imported: 2}) },
			want: []request{{Method: "POST", URI: "/v1/domains/S3/import",
				Body: `{"name":"a","value":"aGk="}` + "\n" + `{"name":"b","value":""}` + "\n"}},
			wantStdout: "Imported 2 entries\n",
		},
		{
			name: "entry import -o json", args: []string{"entry", "import", "S3", "-o", "json"}, stdin: "",
			answer:     func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.ImportResponse{}) },
			want:       []request{{Method: "POST", URI: "/v1/domains/S3/import"}},
			wantStdout: "{\n  \"imported\": 0\n}\n",
		},
		{
			name: "entry export", args: []string{"entry", "export", "S3"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				io.WriteString(w, `{"name":"a","value":"aGk="}`+"\n"+api.ExportEnd+"\n")
			},
			want: []request{{Method: "GET", URI: "/v1/domains/S3/export"}}, wantStdout: `{"name":"a","value":"aGk="}` + "\n",
		},
		{
			name: "events list", args: []string{"events", "list", "--since", "2026-11-22T10:00:00+01:00"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, events) },
			want:   []request{{Method: "GET", URI: "/v1/events?since=2026-11-22T09%3A00%3A00Z"}},
			wantStdout: "Time                  Event                      Scope    Domain      Attempt  Message\n" +
				"2026-11-22T09:19:16Z  KeyManagerRekeyCompleted   cluster  S3                   rekey of S3 completed\n",
		},
		{
			name: "events list -o json", args: []string{"events", "list", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, events) },
			want:   []request{{Method: "GET", URI: "/v1/events"}},
			wantStdout: "{\n  \"events\": [\n    {\n      \"seq\": 1,\n      \"time\": \"2026-11-22T09:19:16Z\",\n" +
				"      \"event\": \"KeyManagerRekeyCompleted\",\n      \"scope\": \"cluster\",\n      \"domain\": \"S3\",\n" +
				"      \"message\": \"rekey of S3 completed\"\n    }\n  ]\n}\n",
		},
		{
			name: "kmip server list", args: []string{"kmip", "server", "list"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleKMIPServers()) },
			want:   []request{{Method: "GET", URI: "/v1/kmip/servers/"}}, wantStdout: kmipListGolden,
		},
		{
			name: "kmip server list empty -o json", args: []string{"kmip", "server", "list", "-o", "json"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.KMIPServerList{}) },
			want:       []request{{Method: "GET", URI: "/v1/kmip/servers/"}},
			wantStdout: "{\n  \"servers\": []\n}\n",
		},
		{
			name: "kmip server view", args: []string{"kmip", "server", "view", "kmip1"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleKMIPServer()) },
			want:   []request{{Method: "GET", URI: "/v1/kmip/servers/kmip1"}}, wantStdout: kmipViewGolden,
		},
		{
			name: "kmip server view -o json", args: []string{"kmip", "server", "view", "kmip1", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleKMIPServer()) },
			want:   []request{{Method: "GET", URI: "/v1/kmip/servers/kmip1"}},
			wantStdout: "{\n  \"name\": \"kmip1\",\n  \"host\": \"kmip.example.com\",\n  \"port\": 5696,\n" +
				"  \"min_tls_version\": \"1.2\",\n  \"connection_timeout\": \"10s\",\n  \"client_cert_subject\": \"CN=kmd,O=Example\",\n" +
				"  \"client_cert_expires\": \"2027-11-22T09:19:16+01:00\",\n  \"created\": \"2026-11-22T09:19:16Z\",\n  \"keys\": 2,\n" +
				"  \"domains\": [\n    \"S3\",\n    \"SSO\"\n  ]\n}\n",
		},
		{
			name: "kmip server delete", args: []string{"kmip", "server", "delete", "kmip_old-1.a"},
			answer: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) },
			want:   []request{{Method: "DELETE", URI: "/v1/kmip/servers/kmip_old-1.a"}}, wantStdout: "KMIP server kmip_old-1.a deleted\n",
		},
		{
			name: "kmip server delete -o json", args: []string{"kmip", "server", "delete", "kmip1", "-o", "json"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) },
			want:       []request{{Method: "DELETE", URI: "/v1/kmip/servers/kmip1"}},
			wantStdout: "{\n  \"name\": \"kmip1\",\n  \"deleted\": true\n}\n",
		},
		{
			name: "kmip server verify one", args: []string{"kmip", "server", "verify", "kmip1"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, api.KMIPVerifyResponse{Reports: []api.KMIPVerifyReport{sampleVerifyOK()}})
			},
			want:       []request{{Method: "POST", URI: "/v1/kmip/servers/kmip1/verify"}},
			wantStdout: kmipVerifyGolden[:strings.Index(kmipVerifyGolden, "\n\n")+1],
		},
		{
			name: "kmip server verify none", args: []string{"kmip", "server", "verify", "-o", "json"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.KMIPVerifyResponse{}) },
			want:       []request{{Method: "POST", URI: "/v1/kmip/servers/-/verify"}},
			wantStdout: "{\n  \"reports\": []\n}\n",
		},
		{
			name: "cluster migrate to a server", args: []string{"cluster", "migrate", "--to-server", "kmip1", "--domain", "S3", "--domain", "SSO",
				"--domain", "S3", "--retry", "--yes"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"S3", "SSO"}})
			},
			want:       []request{{Method: "POST", URI: "/v1/migrate/cluster", Body: `{"to_server":"kmip1","domains":["S3","SSO"],"retry":true}`}},
			wantStdout: "Migration started: S3, SSO\n",
		},
		{
			name: "cluster migrate to local -o json", args: []string{"cluster", "migrate", "--to-local", "--yes", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"CELOG", "S3"}})
			},
			want:       []request{{Method: "POST", URI: "/v1/migrate/cluster", Body: `{"to_local":true}`}},
			wantStdout: "{\n  \"started\": [\n    \"CELOG\",\n    \"S3\"\n  ]\n}\n",
		},
		{
			name: "sed migrate to local", args: []string{"sed", "migrate", "--to-local", "--retry", "--yes"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"SED"}})
			},
			want:       []request{{Method: "POST", URI: "/v1/migrate/sed", Body: `{"to_local":true,"retry":true}`}},
			wantStdout: "Migration started: SED\n",
		},
		{
			name: "sed migrate to a server", args: []string{"sed", "migrate", "--to-server=kmip1", "--to-local=false", "--yes"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"SED"}})
			},
			want:       []request{{Method: "POST", URI: "/v1/migrate/sed", Body: `{"to_server":"kmip1"}`}},
			wantStdout: "Migration started: SED\n",
		},
		{
			name: "version", args: []string{"version"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.Version{Version: "v1.2.3"}) },
			want:   []request{{Method: "GET", URI: "/v1/version"}}, wantStdout: "kmctl dev\nkmd v1.2.3\n",
		},
		{
			name: "version -o json", args: []string{"version", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, api.Version{Version: "v1.2.3"}) },
			want:   []request{{Method: "GET", URI: "/v1/version"}}, wantStdout: "{\n  \"kmctl\": \"dev\",\n  \"kmd\": \"v1.2.3\"\n}\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDaemon(t, tc.answer)
			r := f.run(t, runOpts{stdin: tc.stdin}, tc.args...)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != tc.wantStdout {
				t.Errorf("stdout:\n%q\nwant:\n%q", r.stdout, tc.wantStdout)
			}
			var got []request
			for _, q := range f.requests() {
				got = append(got, request{Method: q.Method, URI: q.URI, Body: q.Body})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("requests:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

func TestFakeDaemon_StatusJSONAsReceived(t *testing.T) {
	f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleClusterStatus()) })
	r := f.run(t, runOpts{}, "cluster", "status", "-o", "json")
	var got api.ClusterStatus
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	if !reflect.DeepEqual(got, sampleClusterStatus()) {
		t.Errorf("json status %+v, want %+v", got, sampleClusterStatus())
	}
	for _, field := range []string{`"key_created": "2026-11-22T09:19:16Z"`, `"rekey": null`, `"next_retry": null`, `"done": 420000`} {
		if !strings.Contains(r.stdout, field) {
			t.Errorf("json status lacks %s", field)
		}
	}
}

func TestFakeDaemon_ErrorMapping(t *testing.T) {
	pf := writePEMFixtures(t)
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		answer     http.HandlerFunc
		wantCode   int
		wantStderr string // exact for exit 1; the first line for exit 2
	}{
		{"rekey in progress", []string{"cluster", "rekey", "start", "--yes", "--domain", "S3"}, "",
			apiError(409, api.CodeInProgress, "rekey already in progress for S3"),
			1, "kmctl: error: rekey already in progress for S3\n"},
		{"sed rekey in progress with --wait", []string{"sed", "rekey", "start", "--yes", "--wait"}, "",
			apiError(409, api.CodeInProgress, "rekey already in progress for SED"),
			1, "kmctl: error: rekey already in progress for SED\n"},
		{"rotation refused by kmd", []string{"cluster", "rekey", "modify", "--key-rotation", "6W"}, "",
			apiError(400, api.CodeInvalidValue, `invalid key rotation "6W": too long for this cluster`),
			2, `kmctl: error: invalid key rotation "6W": too long for this cluster`},
		{"name refused by kmd", []string{"entry", "get", "S3", "n"}, "",
			apiError(400, api.CodeInvalidName, "invalid entry name: reserved"),
			2, "kmctl: error: invalid entry name: reserved"},
		{"since refused by kmd", []string{"events", "list", "--since", "2026-11-22T09:00:00Z"}, "",
			apiError(400, api.CodeBadRequest, "invalid since\nsecond line"),
			2, "kmctl: error: invalid since; second line"},
		{"unknown domain to rekey", []string{"cluster", "rekey", "start", "--yes", "--domain", "S3"}, "",
			apiError(404, api.CodeUnknownDomain, `unknown domain "S3" in scope cluster`),
			1, "kmctl: error: unknown domain \"S3\" in scope cluster\n"},
		{"entry not found", []string{"entry", "get", "S3", "n"}, "",
			apiError(404, api.CodeNotFound, `entry not found: "n"`), 1, "kmctl: error: entry not found: \"n\"\n"},
		{"delete not found", []string{"entry", "delete", "S3", "n"}, "",
			apiError(404, api.CodeNotFound, `entry not found: "n"`), 1, "kmctl: error: entry not found: \"n\"\n"},
		{"list unknown domain", []string{"entry", "list", "NOPE"}, "",
			apiError(404, api.CodeUnknownDomain, "unknown domain NOPE"), 1, "kmctl: error: unknown domain NOPE\n"},
		{"export forbidden", []string{"entry", "export", "S3"}, "",
			apiError(403, api.CodeForbidden, "export needs the admin role"),
			1, "kmctl: error: export needs the admin role\nhint: your user lacks the role for this; kmd's access configuration maps users to roles\n"},
		{"import refused", []string{"entry", "import", "S3"}, "{}\n",
			apiError(400, api.CodeInvalidName, "line 1: invalid entry name: empty"),
			1, "kmctl: error: import into S3 refused, nothing imported: line 1: invalid entry name: empty\n"},
		{"import value too large", []string{"entry", "import", "S3"}, "{}\n",
			apiError(413, api.CodeTooLarge, "line 1: value too large"),
			1, "kmctl: error: import into S3 refused, nothing imported: line 1: value too large\n"},
		{"import unavailable", []string{"entry", "import", "S3"}, "{}\n",
			apiError(503, api.CodeUnavailable, "master key unavailable"), 1, "kmctl: error: master key unavailable\n"},
		{"put too large", []string{"entry", "put", "S3", "n"}, "v",
			apiError(413, api.CodeTooLarge, "value too large"), 1, "kmctl: error: value too large\n"},
		{"put version conflict", []string{"entry", "put", "S3", "n"}, "v",
			apiError(412, api.CodeVersion, "entry version does not match"), 1, "kmctl: error: entry version does not match\n"},
		{"status internal", []string{"cluster", "status"}, "",
			apiError(500, api.CodeInternal, "internal error; see the kmd log"), 1, "kmctl: error: internal error; see the kmd log\n"},
		{"not JSON", []string{"sed", "rekey", "view"}, "",
			func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "oops", 502) }, 1, "kmctl: error: kmd answered 502 Bad Gateway\n"},
		{"kmip delete in use", []string{"kmip", "server", "delete", "kmip1"}, "",
			apiError(409, api.CodeConflict, "kmip server kmip1 holds the master keys of S3, SSO; migrate them first"),
			1, "kmctl: error: kmip server kmip1 holds the master keys of S3, SSO; migrate them first\n"},
		{"kmip delete unknown", []string{"kmip", "server", "delete", "kmip9"}, "",
			apiError(404, api.CodeNotFound, "unknown kmip server kmip9"), 1, "kmctl: error: unknown kmip server kmip9\n"},
		{"kmip view unknown", []string{"kmip", "server", "view", "kmip9"}, "",
			apiError(404, api.CodeNotFound, "unknown kmip server kmip9"), 1, "kmctl: error: unknown kmip server kmip9\n"},
		{"kmip verify unknown", []string{"kmip", "server", "verify", "kmip9"}, "",
			apiError(404, api.CodeNotFound, "unknown kmip server kmip9"), 1, "kmctl: error: unknown kmip server kmip9\n"},
		{"kmip list forbidden", []string{"kmip", "server", "list"}, "",
			apiError(403, api.CodeForbidden, "forbidden"),
			1, "kmctl: error: forbidden\nhint: your user lacks the role for this; kmd's access configuration maps users to roles\n"},
		{"kmip create refused", pf.createArgs(), "",
			apiError(400, api.CodeBadRequest, "client key does not match client certificate; want the private key of that certificate"),
			2, "kmctl: error: client key does not match client certificate; want the private key of that certificate"},
		{"kmip create exists", pf.createArgs(), "",
			apiError(409, api.CodeConflict, "kmip server kmip1 exists"), 1, "kmctl: error: kmip server kmip1 exists\n"},
		{"kmip create unreachable server", pf.createArgs(), "",
			apiError(503, api.CodeUnavailable, "kmip server verification failed: dial tcp: connection refused"),
			1, "kmctl: error: kmip server verification failed: dial tcp: connection refused\n"},
		{"migrate unknown server", []string{"cluster", "migrate", "--to-server", "kmip9", "--yes"}, "",
			apiError(404, api.CodeNotFound, "unknown kmip server kmip9"), 1, "kmctl: error: unknown kmip server kmip9\n"},
		{"migrate in progress", []string{"sed", "migrate", "--to-local", "--yes", "--wait"}, "",
			apiError(409, api.CodeInProgress, "rekey already in progress for SED"), 1, "kmctl: error: rekey already in progress for SED\n"},
		{"migrate nothing to do", []string{"cluster", "migrate", "--to-local", "--domain", "S3", "--yes"}, "",
			apiError(409, api.CodeConflict, "nothing to migrate: S3 is already Local"), 1, "kmctl: error: nothing to migrate: S3 is already Local\n"},
		{"migrate refused as bad request", []string{"cluster", "migrate", "--to-local", "--yes"}, "",
			apiError(400, api.CodeBadRequest, "domains: not in scope sed"), 2, "kmctl: error: domains: not in scope sed"},
		{"export cut short", []string{"entry", "export", "S3"}, "",
			func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"name":"a","value":""}`+"\n") },
			1, "kmctl: error: export of S3 ended early: unexpected EOF\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDaemon(t, tc.answer)
			r := f.run(t, runOpts{stdin: tc.stdin}, tc.args...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, tc.wantCode, r.stderr)
			}
			if tc.wantCode == exitUsage {
				checkUsageError(t, r, "")
				if first := strings.SplitN(r.stderr, "\n", 2)[0]; first != tc.wantStderr {
					t.Errorf("first line %q, want %q", first, tc.wantStderr)
				}
				return
			}
			if r.stderr != tc.wantStderr {
				t.Errorf("stderr:\n%q\nwant:\n%q", r.stderr, tc.wantStderr)
			}
		})
	}
}

// statusScript answers successive cluster or sed status polls from a list;
// the last answer repeats. It answers POST /v1/rekey/* with started.
func statusScript(started []string, polls ...any) http.HandlerFunc {
	var mu sync.Mutex
	n := 0
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			writeJSON(w, 202, api.RekeyStartResponse{Started: started})
			return
		}
		mu.Lock()
		p := polls[min(n, len(polls)-1)]
		n++
		mu.Unlock()
		writeJSON(w, 200, p)
	}
}

func clusterPoll(rows ...api.DomainStatus) api.ClusterStatus {
	return api.ClusterStatus{Domains: rows, Total: 17}
}

func TestFakeDaemon_RekeyWait(t *testing.T) {
	running := func(d string, done int64) api.DomainStatus {
		return api.DomainStatus{Domain: d, Status: api.StatusInProgress, Entries: 100, Rekey: &api.Progress{Done: done, Total: 100}}
	}
	active := func(d string) api.DomainStatus {
		return api.DomainStatus{Domain: d, Status: api.StatusActive, Entries: 100}
	}
	failed := func(d, err string) api.DomainStatus {
		return api.DomainStatus{Domain: d, Status: api.StatusFailed, Entries: 100, Error: err}
	}
	script := []any{
		clusterPoll(active("CELOG"), running("S3", 0), running("SSO", 10), failed("FTP", "not started by us")),
		clusterPoll(active("CELOG"), running("S3", 50), active("SSO"), failed("FTP", "not started by us")),
		clusterPoll(active("CELOG"), active("S3"), active("SSO"), failed("FTP", "not started by us")),
	}
	args := []string{"cluster", "rekey", "start", "--yes", "--wait", "--domain", "S3", "--domain", "SSO"}

	t.Run("off a terminal", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"S3", "SSO"}, script...))
		r := f.run(t, runOpts{}, args...)
		if r.code != exitOK || r.stdout != "Rekey completed: S3, SSO\n" || r.stderr != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		reqs := f.requests()
		if len(reqs) != 4 || reqs[0].URI != "/v1/rekey/cluster" || reqs[1].URI != "/v1/status/cluster" {
			t.Errorf("requests: %+v", reqs)
		}
	})

	t.Run("on a terminal", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"S3", "SSO"}, script...))
		clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		r := f.run(t, runOpts{stdoutTerminal: true, setup: func(a *app) {
			a.now = func() time.Time { clock = clock.Add(time.Second); return clock }
		}}, args...)
		want := "\rRekeying 2 domain(s): 10/200 entries (5%), - entries/s, ETA -" +
			"\rRekeying 2 domain(s): 150/200 entries (75%), 140 entries/s, ETA 1s" +
			"\rRekeying 2 domain(s): 200/200 entries (100%), 95 entries/s, ETA 0s\n" +
			"Rekey completed: S3, SSO\n"
		if r.code != exitOK || r.stdout != want {
			t.Errorf("exit %d, stdout:\n%q\nwant:\n%q", r.code, r.stdout, want)
		}
	})

	t.Run("json on a terminal draws no progress", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"S3", "SSO"}, script...))
		r := f.run(t, runOpts{stdoutTerminal: true}, append(args, "-o", "json")...)
		if r.code != exitOK || r.stdout != "{\n  \"started\": [\n    \"S3\",\n    \"SSO\"\n  ]\n}\n" {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
	})

	t.Run("failed", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"S3", "SSO"},
			clusterPoll(running("S3", 0), running("SSO", 0)),
			clusterPoll(failed("S3", "kmip: connection refused"), failed("SSO", "disk full"))))
		r := f.run(t, runOpts{}, args...)
		want := "kmctl: error: rekey of S3 failed: kmip: connection refused\nrekey of SSO failed: disk full\n"
		if r.code != exitFail || r.stderr != want || r.stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr:\n%q\nwant:\n%q", r.code, r.stdout, r.stderr, want)
		}
	})

	t.Run("sed", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"SED"},
			api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{Node: 1, Status: "MIGRATING", Entries: 4}}},
			api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{Node: 1, Status: api.StatusInProgress, Entries: 4, Rekey: &api.Progress{Done: 2, Total: 4}}}},
			api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{Node: 1, Status: api.StatusLocal, Entries: 4}}}))
		r := f.run(t, runOpts{}, "sed", "rekey", "start", "--yes", "--wait")
		if r.code != exitOK || r.stdout != "Rekey completed: SED\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if n := len(f.requests()); n != 4 {
			t.Errorf("%d requests, want the start and 3 polls", n)
		}
	})

	t.Run("sed failed", func(t *testing.T) {
		f := newFakeDaemon(t, statusScript([]string{"SED"},
			api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{Node: 1, Status: api.StatusFailed, Error: "kmip: timeout"}}}))
		r := f.run(t, runOpts{}, "sed", "rekey", "start", "--yes", "--wait")
		if r.code != exitFail || r.stderr != "kmctl: error: rekey of SED failed: kmip: timeout\n" {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("status error while waiting", func(t *testing.T) {
		f := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"S3"}})
				return
			}
			apiError(500, api.CodeInternal, "internal error; see the kmd log")(w, r)
		})
		r := f.run(t, runOpts{}, "cluster", "rekey", "start", "--yes", "--wait", "--domain", "S3")
		if r.code != exitFail || r.stderr != "kmctl: error: internal error; see the kmd log\n" {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var polls atomic.Int32
		f := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"S3"}})
				return
			}
			if polls.Add(1) == 2 {
				cancel()
			}
			writeJSON(w, 200, clusterPoll(running("S3", 1)))
		})
		r := f.run(t, runOpts{ctx: ctx, stdoutTerminal: true, setup: func(a *app) { a.pollInterval = time.Millisecond }},
			"cluster", "rekey", "start", "--yes", "--wait", "--domain", "S3")
		if r.code != exitFail || !strings.HasPrefix(r.stderr, "kmctl: error: interrupted while waiting") ||
			!strings.Contains(r.stderr, "\nhint: the rekey goes on in kmd; follow it with kmctl cluster status\n") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		if !strings.HasSuffix(r.stdout, "\n") || strings.Contains(r.stdout, "Rekey completed") {
			t.Errorf("stdout %q: want the progress line ended, no completion", r.stdout)
		}
	})
}

func TestFakeDaemon_ConfirmedRekeyStarts(t *testing.T) {
	f := newFakeDaemon(t, statusScript([]string{"SED"}))
	r := f.run(t, runOpts{stdin: "yes\n", stdinTerminal: true}, "sed", "rekey", "start")
	if r.code != exitOK || r.stdout != confirmPrompt+"Rekey started: SED\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].URI != "/v1/rekey/sed" {
		t.Errorf("requests %+v", reqs)
	}
}

func TestFakeDaemon_UsageErrorsSendNothing(t *testing.T) {
	f := newFakeDaemon(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	for _, args := range [][]string{
		{"cluster", "rekey", "modify", "--key-rotation", "6X"},
		{"cluster", "rekey", "start", "--yes", "--domain", "NOPE"},
		{"entry", "put", "S3", ""},
		{"events", "list", "--since", "yesterday"},
		{"-o", "yaml", "cluster", "status"},
		{"kmip", "server", "create", "Local", "--host", "h"},
		{"kmip", "server", "view", ""},
		{"kmip", "server", "verify", "-"},
		{"sed", "migrate", "--yes"},
		{"cluster", "migrate", "--to-server", "kmip1", "--to-local", "--yes"},
	} {
		if r := f.run(t, runOpts{stdin: "v"}, args...); r.code != exitUsage {
			t.Errorf("%v: exit %d", args, r.code)
		}
	}
	if r := f.run(t, runOpts{stdin: "no\n", stdinTerminal: true}, "cluster", "rekey", "start"); r.code != exitOK {
		t.Errorf("cancelled rekey: exit %d", r.code)
	}
	if r := f.run(t, runOpts{stdin: "no\n", stdinTerminal: true}, "cluster", "migrate", "--to-local"); r.code != exitOK {
		t.Errorf("cancelled migration: exit %d", r.code)
	}
	if reqs := f.requests(); len(reqs) != 0 {
		t.Errorf("kmd was asked %+v", reqs)
	}
}
