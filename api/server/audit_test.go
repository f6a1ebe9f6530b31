package server_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/audit"
)

// auditedKMD is a kmd with an audit trail in its data dir, whose requests
// come from the caller held in caller (none when nil), as the access layer
// would set it.
type auditedKMD struct {
	*kmd
	trail  *audit.Trail
	caller atomic.Pointer[access.Caller]
}

var rootCaller = &access.Caller{Via: access.ViaSocket, UID: 0, PID: 4242, Remote: "unix:/run/kmd-test.sock",
	Roles: []access.Role{access.Admin}}

func startAuditedKMD(t *testing.T, trailOf func(*audit.Trail) server.AuditTrail) *auditedKMD {
	t.Helper()
	dir := t.TempDir()
	trail, err := audit.Open(audit.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before startKMD's cleanup, so it runs after the server
	// has stopped.
	t.Cleanup(func() {
		if err := trail.Close(); err != nil {
			t.Errorf("close audit trail: %v", err)
		}
	})
	a := &auditedKMD{trail: trail}
	a.caller.Store(rootCaller)
	var at server.AuditTrail = trail
	if trailOf != nil {
		at = trailOf(trail)
	}
	a.kmd = startKMD(t, kmdOptions{dataDir: dir, options: []server.Option{server.WithAudit(at)},
		wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if c := a.caller.Load(); c != nil {
					r = r.WithContext(access.WithCaller(r.Context(), c))
				}
				h.ServeHTTP(w, r)
			})
		}})
	return a
}

// records lists the whole trail through the API.
func (a *auditedKMD) records(t *testing.T) []api.AuditRecord {
	t.Helper()
	l, err := a.c.Audit(t.Context(), time.Time{}, api.MaxAuditLimit)
	if err != nil {
		t.Fatal(err)
	}
	return l.Records
}

// checkFileHoldsNoSecret fails if audit.log holds any of secrets.
func (a *auditedKMD) checkFileHoldsNoSecret(t *testing.T, secrets ...string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dir, audit.File))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatal("audit.log is empty")
	}
	for _, s := range append(secrets, markerForms...) {
		if strings.Contains(string(b), s) {
			t.Errorf("audit.log holds %q:\n%s", s, b)
		}
	}
}

// want is the part of a record a test states.
type want struct {
	action, target, detail, outcome string
	status                          int
	errorHas                        string
}

func checkRecords(t *testing.T, got []api.AuditRecord, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		for _, r := range got {
			t.Logf("%s %s %s %d %q %q", r.Action, r.Target, r.Outcome, r.Status, r.Detail, r.Error)
		}
		t.Fatalf("%d records, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		r := got[i]
		if r.Action != w.action || r.Target != w.target || r.Detail != w.detail || r.Outcome != w.outcome || r.Status != w.status {
			t.Errorf("record %d: %s %q %q %s %d; want %s %q %q %s %d", i+1, r.Action, r.Target, r.Detail, r.Outcome, r.Status,
				w.action, w.target, w.detail, w.outcome, w.status)
		}
		if (w.outcome == audit.OK) != (r.Error == "") || !strings.Contains(r.Error, w.errorHas) {
			t.Errorf("record %d (%s %s): error %q; want one saying %q exactly when not ok", i+1, r.Action, r.Target, r.Error, w.errorHas)
		}
		if r.Seq != int64(i+1) {
			t.Errorf("record %d: seq %d", i+1, r.Seq)
		}
	}
}

// Every state-changing endpoint is recorded with who, from where, what
// and how it ended; reads are not.
func TestAudit_EachActionRecorded(t *testing.T) {
	t.Parallel()
	a := startAuditedKMD(t, nil)
	ctx := t.Context()
	begin := time.Now()
	const keyMarker = "KMIP-KEY-MARKER-51c9"
	b64 := base64.StdEncoding.EncodeToString([]byte(marker))

	if _, err := a.c.Put(ctx, "S3", "gw/token", []byte(marker), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := a.c.Put(ctx, "S3", "gw/token", []byte(marker), api.PutOptions{IfVersion: 5})
	wantAPIError(t, err, http.StatusPreconditionFailed, api.CodeVersion, api.ErrVersion)
	if err := a.c.Delete(ctx, "S3", "gw/token", api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, a.c.Delete(ctx, "S3", "gw/token", api.PutOptions{}), http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	if _, err := a.c.Import(ctx, "SSO", strings.NewReader(`{"name":"a","value":"`+b64+`"}`+"\n"+`{"name":"b","value":"`+b64+`"}`+"\n")); err != nil {
		t.Fatal(err)
	}
	_, err = a.c.Import(ctx, "SSO", strings.NewReader(`{"name":"c","value":"`+b64+`"}`+"\n"+`{"name":"","value":"`+b64+`"}`+"\n"))
	wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidName, api.ErrBadRequest)
	if _, err := a.c.RekeyModify(ctx, "cluster", "6W"); err != nil {
		t.Fatal(err)
	}
	_, err = a.c.RekeyModify(ctx, "sed", "6X")
	wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidValue, api.ErrBadRequest)
	if _, err := a.c.StartRekey(ctx, "cluster", []string{"S3", "SSO"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.c.StartRekey(ctx, "cluster", []string{"NOPE"})
	wantAPIError(t, err, http.StatusNotFound, api.CodeUnknownDomain, api.ErrUnknownDomain)
	_, err = a.c.Migrate(ctx, "sed", api.MigrateRequest{ToServer: "kmip9", Retry: true})
	wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	_, err = a.c.CreateKMIPServer(ctx, api.KMIPServerCreateRequest{Name: "kmip1", Host: "127.0.0.1", Port: 5696,
		CACertPEM: "not a certificate", ClientCertPEM: "not a certificate", ClientKeyPEM: keyMarker})
	wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidValue, api.ErrBadRequest)
	wantAPIError(t, a.c.DeleteKMIPServer(ctx, "kmip9"), http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	if _, err := a.c.VerifyKMIPServers(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// The staged rekey's changes: a staged start, a continue and a cancel
	// of a domain that is not STAGED, a key delete that matches nothing.
	if _, err := a.c.StartRekeyWith(ctx, "cluster", api.RekeyStartRequest{Domains: []string{"SNMP"}, StagePeriod: "7D"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.c.ContinueRekey(ctx, "cluster", []string{"FTP"})
	wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	_, err = a.c.CancelRekey(ctx, "cluster", []string{"FTP"})
	wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	_, err = a.c.DeleteKey(ctx, "cluster", "FTP", strings.Repeat("ab", 16))
	wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	status, _, _ := a.do(t, http.MethodPost, "/v1/nosuch", nil, []byte(marker))
	if status != http.StatusNotFound {
		t.Fatalf("POST /v1/nosuch: %d", status)
	}

	// Reads, which are not recorded.
	if _, err := a.c.ClusterStatus(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.ListAll(ctx, "SSO"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.c.Get(ctx, "SSO", "a"); err != nil {
		t.Fatal(err)
	}
	if err := a.c.Export(ctx, "SSO", &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.RekeyView(ctx, "cluster"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.PlanRekey(ctx, "cluster", nil, "7D"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Keys(ctx, "cluster", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Events(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := a.do(t, http.MethodHead, api.EntryPath("SSO", "a"), nil, nil); status != http.StatusOK {
		t.Fatalf("HEAD: %d", status)
	}

	recs := a.records(t)
	checkRecords(t, recs, []want{
		{"entry.put", "S3/gw/token", "version=1", audit.OK, 204, ""},
		{"entry.put", "S3/gw/token", "", audit.Refused, 412, "version"},
		{"entry.delete", "S3/gw/token", "", audit.OK, 204, ""},
		{"entry.delete", "S3/gw/token", "", audit.Refused, 404, "not found"},
		{"entry.import", "SSO", "imported=2", audit.OK, 200, ""},
		{"entry.import", "SSO", "", audit.Refused, 400, "line 2"},
		{"rekey.modify", "cluster", "key_rotation=6W", audit.OK, 200, ""},
		{"rekey.modify", "sed", "key_rotation=6X", audit.Refused, 400, `invalid key rotation "6X"`},
		{"rekey.start", "cluster:S3,SSO", "started=S3,SSO", audit.OK, 202, ""},
		{"rekey.start", "cluster:NOPE", "", audit.Refused, 404, "NOPE"},
		{"migrate", "sed", "to=kmip9 retry", audit.Refused, 404, "kmip9"},
		{"kmip.server.create", "kmip1", "host=127.0.0.1:5696", audit.Refused, 400, "certificate"},
		{"kmip.server.delete", "kmip9", "", audit.Refused, 404, "kmip9"},
		{"kmip.server.verify", "all", "", audit.OK, 200, ""},
		{"rekey.start", "cluster:SNMP", "stage_period=7D started=SNMP", audit.OK, 202, ""},
		{"rekey.continue", "cluster:FTP", "", audit.Refused, 409, "FTP is not STAGED"},
		{"rekey.cancel", "cluster:FTP", "", audit.Refused, 409, "FTP is not STAGED"},
		{"keys.delete", "cluster:FTP", "fingerprint=" + strings.Repeat("ab", 16), audit.Refused, 404, ""},
		{"request", "POST /v1/nosuch", "", audit.Refused, 404, "no such endpoint"},
	})
	for _, r := range recs {
		if r.Who != "uid 0" || r.Via != "socket" || r.From != "unix:/run/kmd-test.sock" {
			t.Errorf("%s %s: who %q via %q from %q; want uid 0, socket, unix:/run/kmd-test.sock", r.Action, r.Target, r.Who, r.Via, r.From)
		}
		if r.Time.Before(begin) || r.Time.After(time.Now()) || r.Time.Location() != time.UTC {
			t.Errorf("%s %s: time %v, want UTC during the test", r.Action, r.Target, r.Time)
		}
	}
	a.checkFileHoldsNoSecret(t, keyMarker, "not a certificate")
}

// A request kmd fails to serve is recorded as failed, with its status and
// the error line it answered.
func TestAudit_FailedRequestRecorded(t *testing.T) {
	t.Parallel()
	a := startAuditedKMD(t, nil)
	ctx := t.Context()
	if err := a.closeReg(); err != nil {
		t.Fatal(err)
	}
	_, err := a.c.Put(ctx, "S3", "a", []byte(marker), api.PutOptions{})
	wantAPIError(t, err, http.StatusInternalServerError, api.CodeInternal, api.ErrInternal)
	checkRecords(t, a.records(t), []want{
		{"entry.put", "S3/a", "", audit.Failed, 500, "internal error; see the kmd log"},
	})
	a.checkFileHoldsNoSecret(t)
}

// The trail records whoever the request's context names: a certificate
// subject over TLS, the socket's peer when nothing else names the caller.
func TestAudit_Callers(t *testing.T) {
	t.Parallel()
	a := startAuditedKMD(t, nil)
	ctx := t.Context()
	a.caller.Store(&access.Caller{Via: access.ViaTLS, Subject: "CN=s3-gateway,O=Example", Remote: "192.0.2.10:40312",
		Roles: []access.Role{access.Service("S3")}})
	if _, err := a.c.Put(ctx, "S3", "a", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	a.caller.Store(nil)
	if _, err := a.c.Put(ctx, "S3", "b", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	recs := a.records(t)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	if r := recs[0]; r.Who != "CN=s3-gateway,O=Example" || r.Via != "tls" || r.From != "192.0.2.10:40312" {
		t.Errorf("TLS caller recorded as who %q via %q from %q", r.Who, r.Via, r.From)
	}
	if r := recs[1]; r.Who != "uid 0" || r.Via != "socket" {
		t.Errorf("the socket's peer recorded as who %q via %q; want uid 0 via socket", r.Who, r.Via)
	}
}

// GET /v1/audit: since and limit, newest last, and one clear line for a
// bad value.
func TestAudit_List(t *testing.T) {
	t.Parallel()
	a := startAuditedKMD(t, nil)
	ctx := t.Context()
	for i := range 5 {
		if _, err := a.c.Put(ctx, "S3", fmt.Sprint("e", i), []byte("v"), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	all := a.records(t)
	if len(all) != 5 {
		t.Fatalf("%d records, want 5", len(all))
	}
	l, err := a.c.Audit(ctx, time.Time{}, 2)
	if err != nil || len(l.Records) != 2 || l.Records[0].Target != "S3/e3" || l.Records[1].Target != "S3/e4" {
		t.Errorf("limit 2: %+v %v; want e3 and e4", l.Records, err)
	}
	l, err = a.c.Audit(ctx, all[2].Time, 0)
	if err != nil || len(l.Records) != 3 || l.Records[0].Seq != 3 {
		t.Errorf("since the third record's time: %+v %v; want records 3-5", l.Records, err)
	}
	l, err = a.c.Audit(ctx, time.Now().Add(time.Hour), 0)
	if err != nil || l.Records == nil || len(l.Records) != 0 {
		t.Errorf("since an hour ahead: %+v %v; want an empty list", l.Records, err)
	}
	status, _, body := a.do(t, http.MethodGet, api.PathAudit, nil, nil)
	if status != http.StatusOK || !strings.HasPrefix(string(body), `{"records":[{"time":"`) {
		t.Errorf("GET /v1/audit: %d %s", status, body)
	}
	for _, tc := range []struct{ query, says string }{
		{"since=yesterday", `invalid since "yesterday": want an RFC 3339 time`},
		{"since=2026-11-22", `invalid since "2026-11-22"`},
		{"limit=0", `invalid limit "0": want 1 to 10000`},
		{"limit=10001", `invalid limit "10001"`},
		{"limit=-1", `invalid limit "-1"`},
		{"limit=ten", `invalid limit "ten"`},
	} {
		status, _, body := a.do(t, http.MethodGet, api.PathAudit+"?"+tc.query, nil, nil)
		eb := wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
		if !strings.Contains(eb.Error, tc.says) || strings.Contains(eb.Error, "\n") {
			t.Errorf("%s: %q; want one line saying %q", tc.query, eb.Error, tc.says)
		}
	}
	if got := a.records(t); len(got) != 5 {
		t.Errorf("listing was recorded: %d records", len(got))
	}
}

func TestAudit_ListWithoutTrail(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	_, err := k.c.Audit(t.Context(), time.Time{}, 0)
	ae := wantAPIError(t, err, http.StatusNotFound, api.CodeNoEndpoint, nil)
	if !strings.Contains(ae.Message, "without an audit trail") {
		t.Errorf("message %q", ae.Message)
	}
	if _, err := os.Stat(filepath.Join(k.dir, audit.File)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("audit.log without a trail: %v", err)
	}
}

// orderedTrail notes when a record is made, in one sequence with the
// answers the client is sent.
type orderedTrail struct {
	*audit.Trail
	mu     sync.Mutex
	events *[]string
	fail   bool
}

func (o *orderedTrail) note(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	*o.events = append(*o.events, s)
}

func (o *orderedTrail) Record(ctx context.Context, r audit.Record) error {
	if o.fail {
		o.note("record failed " + r.Action)
		return errors.New("disk full")
	}
	err := o.Trail.Record(ctx, r)
	o.note("recorded " + r.Action)
	return err
}

// The record is durable before the answer leaves; when it cannot be
// written, the answer still says what was done, and the failure is logged.
func TestAudit_RecordedBeforeTheAnswer(t *testing.T) {
	t.Parallel()
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("record fails %v", fail), func(t *testing.T) {
			var events []string
			var ot *orderedTrail
			dir := t.TempDir()
			trail, err := audit.Open(audit.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { trail.Close() })
			ot = &orderedTrail{Trail: trail, events: &events, fail: fail}
			k := startKMD(t, kmdOptions{dataDir: dir, options: []server.Option{server.WithAudit(ot)},
				wrap: func(h http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						h.ServeHTTP(&noteWriter{ResponseWriter: w, o: ot}, r)
					})
				}})
			if _, err := k.c.Put(t.Context(), "S3", "a", []byte(marker), api.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			ot.mu.Lock()
			got := strings.Join(events, ", ")
			ot.mu.Unlock()
			want := "recorded entry.put, answered 204"
			if fail {
				want = "record failed entry.put, answered 204"
			}
			if got != want {
				t.Errorf("events %q, want %q", got, want)
			}
			if n := k.logs.FilterMessage("audit record not written").Len(); n != map[bool]int{false: 0, true: 1}[fail] {
				t.Errorf("%d \"audit record not written\" log lines", n)
			}
		})
	}
}

type noteWriter struct {
	http.ResponseWriter
	o *orderedTrail
}

func (w *noteWriter) WriteHeader(status int) {
	w.o.note(fmt.Sprint("answered ", status))
	w.ResponseWriter.WriteHeader(status)
}

// Concurrent writers are all recorded, each once.
func TestAudit_ConcurrentWrites(t *testing.T) {
	t.Parallel()
	a := startAuditedKMD(t, nil)
	const writers, each = 8, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ctx, cancel := context.WithTimeout(context.Background(), requestLimit)
				_, err := a.c.Put(ctx, "S3", fmt.Sprintf("w%d/%d", w, i), []byte(marker), api.PutOptions{})
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	recs := a.records(t)
	targets := map[string]int{}
	for i, r := range recs {
		targets[r.Target]++
		if r.Seq != int64(i+1) || r.Action != "entry.put" || r.Outcome != audit.OK {
			t.Errorf("record %d: %+v", i+1, r)
		}
	}
	if len(recs) != writers*each || len(targets) != writers*each {
		t.Errorf("%d records for %d distinct targets, want %d each once", len(recs), len(targets), writers*each)
	}
	a.checkFileHoldsNoSecret(t)
}
