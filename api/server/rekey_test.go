package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/logs"
)

var clusterDomains = []string{
	"CELOG", "CERTSTORE", "CLOUDPOOLS", "EMAIL", "FTP", "IPMI_MGMT", "JWT", "LHOTSE",
	"NDMP", "NETWORK", "PSTORE", "RICE", "S3", "SIQ", "SNMP", "SRS", "SSO",
}

var secondUTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// rawRows decodes a status answer's rows as raw JSON objects.
func rawRows(t *testing.T, body []byte, rowsKey string) []map[string]json.RawMessage {
	t.Helper()
	var out map[string]json.RawMessage
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("status %s: %v", body, err)
	}
	var rows []map[string]json.RawMessage
	if err := json.Unmarshal(out[rowsKey], &rows); err != nil {
		t.Fatalf("%q of %s: %v", rowsKey, body, err)
	}
	return rows
}

func jsonString(t *testing.T, m map[string]json.RawMessage, key string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(m[key], &s); err != nil {
		t.Fatalf("%s = %s, want a string", key, m[key])
	}
	return s
}

func TestStatus_ClusterJSON(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	for _, n := range []string{"a", "b"} {
		if _, err := k.c.Put(ctx, "S3", n, []byte("v"), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	status, hdr, body := k.do(t, "GET", "/v1/status/cluster", nil, nil)
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %s", status, hdr.Get("Content-Type"))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || string(top["total"]) != "17" {
		t.Fatalf("total %s, want 17 (%v)", top["total"], err)
	}
	rows := rawRows(t, body, "domains")
	var names []string
	keyIDs := map[string]bool{}
	for _, row := range rows {
		for _, key := range []string{"domain", "status", "key_id", "key_created", "location", "remote_key_id",
			"error", "entries", "rekey", "next_retry"} {
			if _, ok := row[key]; !ok {
				t.Errorf("row %s has no %q", row["domain"], key)
			}
		}
		d := jsonString(t, row, "domain")
		names = append(names, d)
		if s := jsonString(t, row, "status"); s != api.StatusActive {
			t.Errorf("%s: status %s", d, s)
		}
		kc := jsonString(t, row, "key_created")
		if !secondUTC.MatchString(kc) {
			t.Errorf("%s: key_created %q, want UTC to the second with Z", d, kc)
		}
		if created, _ := time.Parse(time.RFC3339, kc); time.Since(created) > time.Hour || time.Until(created) > time.Second {
			t.Errorf("%s: key_created %s is not now", d, kc)
		}
		id := jsonString(t, row, "key_id")
		if id == "" || keyIDs[id] {
			t.Errorf("%s: key_id %q empty or shared", d, id)
		}
		keyIDs[id] = true
		if loc := jsonString(t, row, "location"); loc != "Local" {
			t.Errorf("%s: location %q", d, loc)
		}
		for key, want := range map[string]string{"remote_key_id": `""`, "error": `""`, "rekey": "null", "next_retry": "null"} {
			if got := string(row[key]); got != want {
				t.Errorf("%s: %s = %s, want %s", d, key, got, want)
			}
		}
		wantEntries := "0"
		if d == "S3" {
			wantEntries = "2"
		}
		if got := string(row["entries"]); got != wantEntries {
			t.Errorf("%s: entries %s, want %s", d, got, wantEntries)
		}
	}
	if !slices.Equal(names, clusterDomains) {
		t.Fatalf("domains %q, want %q", names, clusterDomains)
	}
	st, err := k.c.ClusterStatus(ctx)
	if err != nil || st.Total != 17 || len(st.Domains) != 17 {
		t.Fatalf("client: %+v %v", st, err)
	}
}

func TestStatus_SEDJSON(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	status, _, body := k.do(t, "GET", "/v1/status/sed", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("got %d %s", status, body)
	}
	rows := rawRows(t, body, "nodes")
	if len(rows) != 1 {
		t.Fatalf("%d nodes, want 1: %s", len(rows), body)
	}
	row := rows[0]
	for _, key := range []string{"node", "status", "key_id", "location", "remote_key_id", "key_created", "error",
		"entries", "rekey", "next_retry"} {
		if _, ok := row[key]; !ok {
			t.Errorf("node row has no %q: %s", key, body)
		}
	}
	if string(row["node"]) != "1" || jsonString(t, row, "status") != api.StatusLocal || jsonString(t, row, "location") != "Local" {
		t.Errorf("node %s status %s location %s, want 1 LOCAL Local", row["node"], row["status"], row["location"])
	}
	if kc := jsonString(t, row, "key_created"); !secondUTC.MatchString(kc) {
		t.Errorf("key_created %q", kc)
	}
	st, err := k.c.SEDStatus(t.Context())
	if err != nil || st.Total != 1 || st.Nodes[0].Node != 1 || st.Nodes[0].KeyID == "" {
		t.Fatalf("client: %+v %v", st, err)
	}
}

func TestStatus_UnknownScope(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	for _, path := range []string{"/v1/status/nope", "/v1/status/CLUSTER", "/v1/rekey/nope"} {
		status, _, body := k.do(t, "GET", path, nil, nil)
		eb := wantErrorBody(t, status, body, http.StatusNotFound, api.CodeUnknownDomain)
		if !strings.Contains(eb.Error, "want cluster or sed") {
			t.Errorf("%s: message %q does not name the scopes", path, eb.Error)
		}
	}
	_, err := k.c.RekeyView(t.Context(), "nope")
	wantAPIError(t, err, http.StatusNotFound, api.CodeUnknownDomain, api.ErrUnknownDomain)
	_, err = k.modify(t, "nope", "6W")
	wantAPIError(t, err, http.StatusNotFound, api.CodeUnknownDomain, api.ErrUnknownDomain)
	_, err = k.c.StartRekey(t.Context(), "nope", nil)
	wantAPIError(t, err, http.StatusNotFound, api.CodeUnknownDomain, api.ErrUnknownDomain)
}

func domainStatus(t *testing.T, k *kmd, domain string) api.DomainStatus {
	t.Helper()
	st, err := k.c.ClusterStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Domains {
		if d.Domain == domain {
			return d
		}
	}
	t.Fatalf("no domain %s in status", domain)
	return api.DomainStatus{}
}

func completedEvents(t *testing.T, k *kmd, domain string) []api.Event {
	t.Helper()
	evs, err := k.c.Events(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Event
	for _, e := range evs.Events {
		if e.Name == logs.EventRekeyCompleted && e.Domain == domain {
			out = append(out, e)
		}
	}
	return out
}

// A rekey held at its first REWRAP batch: a second start is refused, entries
// stay readable and writable, and once released it completes with an event.
func TestRekey_StartWhileRunningThenComplete(t *testing.T) {
	t.Parallel()
	g := newGate("S3", "rewrap:batch")
	k := startKMD(t, kmdOptions{trace: g.trace})
	t.Cleanup(g.Release) // before kmd stops
	ctx := t.Context()
	values := map[string][]byte{}
	for _, n := range []string{"a", "b", "c", "bin"} {
		values[n] = []byte("value of " + n)
	}
	values["bin"] = allBytes()
	for n, v := range values {
		if _, err := k.c.Put(ctx, "S3", n, v, api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := domainStatus(t, k, "S3")

	status, _, body := k.do(t, "POST", "/v1/rekey/cluster", nil, []byte(`{"domains":["S3"]}`))
	if status != http.StatusAccepted {
		t.Fatalf("start: %d %s, want 202", status, body)
	}
	var started api.RekeyStartResponse
	if err := json.Unmarshal(body, &started); err != nil || !slices.Equal(started.Started, []string{"S3"}) {
		t.Fatalf("start answered %s", body)
	}
	g.waitReached(t)

	t.Run("second start", func(t *testing.T) {
		_, err := k.c.StartRekey(ctx, api.ScopeCluster, []string{"S3"})
		ae := wantAPIError(t, err, http.StatusConflict, api.CodeInProgress, api.ErrInProgress)
		if ae.Message != "rekey already in progress for S3" {
			t.Errorf("message %q", ae.Message)
		}
		// The whole scope includes S3: refused, and nothing else starts.
		_, err = k.c.StartRekey(ctx, api.ScopeCluster, nil)
		ae = wantAPIError(t, err, http.StatusConflict, api.CodeInProgress, api.ErrInProgress)
		if ae.Message != "rekey already in progress for S3" {
			t.Errorf("message %q", ae.Message)
		}
		if d := domainStatus(t, k, "CELOG"); d.Status != api.StatusActive {
			t.Errorf("CELOG %s after a refused start", d.Status)
		}
	})
	t.Run("status while running", func(t *testing.T) {
		d := domainStatus(t, k, "S3")
		if d.Status != api.StatusInProgress || d.Rekey == nil || d.Rekey.Total != int64(len(values)) || d.Rekey.Started.IsZero() {
			t.Fatalf("S3 %s rekey %+v, want IN_PROGRESS with progress of %d", d.Status, d.Rekey, len(values))
		}
		_, _, body := k.do(t, "GET", "/v1/status/cluster", nil, nil)
		for _, row := range rawRows(t, body, "domains") {
			if jsonString(t, row, "domain") != "S3" {
				continue
			}
			var p map[string]json.RawMessage
			if err := json.Unmarshal(row["rekey"], &p); err != nil {
				t.Fatalf("rekey %s", row["rekey"])
			}
			for _, key := range []string{"done", "total", "started"} {
				if _, ok := p[key]; !ok {
					t.Errorf("rekey %s has no %q", row["rekey"], key)
				}
			}
		}
	})
	t.Run("entries usable while running", func(t *testing.T) {
		for n, v := range values {
			got, _, err := k.c.Get(ctx, "S3", n)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("get %s: %q %v", n, got, err)
			}
		}
		values["during"] = []byte("written during the rekey")
		if _, err := k.c.Put(ctx, "S3", "during", values["during"], api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	g.Release()
	waitFor(t, "the rekey of S3 to complete", func() bool { return len(completedEvents(t, k, "S3")) > 0 })
	waitFor(t, "S3 to be ACTIVE", func() bool { return domainStatus(t, k, "S3").Status == api.StatusActive })
	after := domainStatus(t, k, "S3")
	if after.KeyID == before.KeyID || after.Rekey != nil || after.Error != "" {
		t.Fatalf("after the rekey: %+v (key before %s)", after, before.KeyID)
	}
	ev := completedEvents(t, k, "S3")[0]
	if ev.KeyID != after.KeyID || ev.Scope != api.ScopeCluster || ev.Message == "" {
		t.Errorf("event %+v, want the new key %s", ev, after.KeyID)
	}
	for n, v := range values {
		got, _, err := k.c.Get(ctx, "S3", n)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("get %s after the rekey: %q %v", n, got, err)
		}
	}

	t.Run("events since", func(t *testing.T) {
		evs, err := k.c.Events(ctx, ev.Time)
		if err != nil || !slices.ContainsFunc(evs.Events, func(e api.Event) bool { return e.Seq == ev.Seq }) {
			t.Fatalf("since the event's time: %+v %v", evs, err)
		}
		evs, err = k.c.Events(ctx, ev.Time.Add(time.Nanosecond))
		if err != nil || slices.ContainsFunc(evs.Events, func(e api.Event) bool { return e.Seq == ev.Seq }) {
			t.Fatalf("since after the event: %+v %v", evs, err)
		}
		status, _, body := k.do(t, "GET", "/v1/events?since="+ev.Time.Add(time.Hour).Format(time.RFC3339), nil, nil)
		if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"events":[]}` {
			t.Fatalf("since an hour later: %d %s", status, body)
		}
		for _, since := range []string{"yesterday", "2026-11-22", "2026-11-22T09:00:00", "1700000000"} {
			status, _, body := k.do(t, "GET", "/v1/events?since="+since, nil, nil)
			eb := wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
			if !strings.Contains(eb.Error, "RFC 3339") {
				t.Errorf("since=%s: message %q does not say what is right", since, eb.Error)
			}
		}
	})
}

// A rekey of the whole sed scope (empty body) completes and resets the
// scope's rotation clock.
func TestRekey_WholeScopeResetsClock(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	if _, err := k.c.Put(ctx, "SED", "drive-1", []byte("k1"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	status, _, body := k.do(t, "POST", "/v1/rekey/sed", nil, nil)
	if status != http.StatusAccepted || strings.TrimSpace(string(body)) != `{"started":["SED"]}` {
		t.Fatalf("start: %d %s", status, body)
	}
	waitFor(t, "the rekey of SED to complete", func() bool { return len(completedEvents(t, k, "SED")) > 0 })
	ev := completedEvents(t, k, "SED")[0]
	if ev.Scope != api.ScopeSED || ev.Node != 1 {
		t.Errorf("event %+v, want scope sed node 1", ev)
	}
	var view api.RekeyView
	waitFor(t, "last result succeeded", func() bool {
		v, err := k.c.RekeyView(ctx, api.ScopeSED)
		view = v
		return err == nil && v.LastResult == "succeeded"
	})
	if view.RekeyTime.Year() < 2000 || view.KeyRotation != "Never" || view.NextRekey != "Never" {
		t.Errorf("view %+v, want the clock reset", view)
	}
	got, _, err := k.c.Get(ctx, "SED", "drive-1")
	if err != nil || string(got) != "k1" {
		t.Fatalf("after the rekey: %q %v", got, err)
	}
}

func TestRekey_StartRefusals(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	for _, tc := range []struct {
		name, scope, body string
		status            int
		code              string
		says              string
	}{
		{"unknown field", "cluster", `{"domain":["S3"]}`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"malformed JSON", "cluster", `{"domains":["S3"]`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"two JSON values", "cluster", `{"domains":["S3"]} {"domains":["SIQ"]}`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"trailing garbage", "cluster", `{"domains":["S3"]}x`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		// Domains of their own, so that if the start is wrongly accepted,
		// the other cases are not refused for a rekey in progress.
		{"trailing brace", "cluster", `{"domains":["SSO"]}}`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"trailing bracket", "cluster", `{"domains":["SRS"]}]`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"wrong type", "cluster", `{"domains":"S3"}`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"array", "cluster", `["S3"]`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"unknown domain", "cluster", `{"domains":["NOPE"]}`, 404, api.CodeUnknownDomain, "NOPE"},
		{"unknown and known", "cluster", `{"domains":["S3","NOPE"]}`, 404, api.CodeUnknownDomain, "NOPE"},
		{"domain of another scope", "sed", `{"domains":["S3"]}`, 404, api.CodeUnknownDomain, "S3"},
		{"sed domain in cluster", "cluster", `{"domains":["SED"]}`, 404, api.CodeUnknownDomain, "SED"},
		{"unknown scope", "nope", `{}`, 404, api.CodeUnknownDomain, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := k.do(t, "POST", "/v1/rekey/"+tc.scope, nil, []byte(tc.body))
			eb := wantErrorBody(t, status, body, tc.status, tc.code)
			if !strings.Contains(eb.Error, tc.says) {
				t.Errorf("message %q does not say %s", eb.Error, tc.says)
			}
		})
	}
	_, err := k.c.StartRekey(t.Context(), api.ScopeCluster, []string{"NOPE"})
	wantAPIError(t, err, http.StatusNotFound, api.CodeUnknownDomain, api.ErrUnknownDomain)
	// Nothing started.
	st, err := k.c.ClusterStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Domains {
		if d.Status != api.StatusActive || d.Rekey != nil {
			t.Errorf("%s: %s %+v after refused starts", d.Domain, d.Status, d.Rekey)
		}
	}
	if evs, _ := k.c.Events(t.Context(), time.Time{}); len(evs.Events) != 0 {
		t.Errorf("events after refused starts: %+v", evs.Events)
	}
}

func TestRekey_ViewAndModify(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	for _, scope := range []string{api.ScopeCluster, api.ScopeSED} {
		t.Run("defaults "+scope, func(t *testing.T) {
			status, _, body := k.do(t, "GET", "/v1/rekey/"+scope, nil, nil)
			want := `{"rekey_time":"1970-01-01T00:00:00Z","key_rotation":"Never","next_rekey":"Never","last_result":"none"}`
			if status != http.StatusOK || strings.TrimSpace(string(body)) != want {
				t.Fatalf("got %d %s, want %s", status, body, want)
			}
		})
	}

	start := time.Now().UTC().Truncate(time.Second)
	view, err := k.modify(t, api.ScopeCluster, "6W")
	if err != nil {
		t.Fatal(err)
	}
	if view.KeyRotation != "6W" || view.RekeyTime.Before(start) || time.Since(view.RekeyTime) > time.Minute {
		t.Fatalf("after 6W: %+v", view)
	}
	if want := view.RekeyTime.AddDate(0, 0, 42).Format(time.RFC3339); view.NextRekey != want {
		t.Fatalf("next_rekey %s, want rekey_time + 42 days = %s", view.NextRekey, want)
	}
	got, err := k.c.RekeyView(ctx, api.ScopeCluster)
	if err != nil || got != view {
		t.Fatalf("view %+v %v, want %+v", got, err, view)
	}
	_, _, body := k.do(t, "GET", "/v1/rekey/cluster", nil, nil)
	var raw map[string]string
	if err := json.Unmarshal(body, &raw); err != nil || !secondUTC.MatchString(raw["rekey_time"]) || !secondUTC.MatchString(raw["next_rekey"]) {
		t.Fatalf("times not UTC to the second: %s", body)
	}
	if sed, _ := k.c.RekeyView(ctx, api.ScopeSED); sed.KeyRotation != "Never" {
		t.Errorf("sed rotation %s after modifying cluster", sed.KeyRotation)
	}

	for _, bad := range []string{"6X", "0W", "-1D", "W", "6", "6w", "", "never", " 6W", "6W ", "06W", "1.5W", "6WW"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			_, err := k.modify(t, api.ScopeCluster, bad)
			ae := wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidValue, api.ErrBadRequest)
			if !strings.Contains(ae.Message, "want Never or a positive integer") {
				t.Errorf("message %q does not say what is right", ae.Message)
			}
			if got, err := k.c.RekeyView(ctx, api.ScopeCluster); err != nil || got != view {
				t.Fatalf("view changed: %+v %v, want %+v", got, err, view)
			}
		})
	}
	for _, body := range []string{``, `{"rotation":"6W"}`, `{"key_rotation":6}`, `{"key_rotation":"6W"}{}`,
		`{"key_rotation":"7W"}}`, `{"key_rotation":"7W"}]`, `"6W"`} {
		t.Run("bad body "+body, func(t *testing.T) {
			before, err := k.c.RekeyView(ctx, api.ScopeCluster)
			if err != nil {
				t.Fatal(err)
			}
			status, _, b := k.do(t, "PUT", "/v1/rekey/cluster", nil, []byte(body))
			eb := wantErrorBody(t, status, b, http.StatusBadRequest, api.CodeBadRequest)
			if !strings.Contains(eb.Error, `{"key_rotation":"6W"}`) {
				t.Errorf("message %q does not name the expected form", eb.Error)
			}
			if got, err := k.c.RekeyView(ctx, api.ScopeCluster); err != nil || got != before {
				t.Fatalf("view changed: %+v %v, want %+v", got, err, before)
			}
		})
	}

	for _, tc := range []struct {
		rot  string
		next func(time.Time) time.Time
	}{
		{"2M", func(t time.Time) time.Time { return t.AddDate(0, 2, 0) }},
		{"1Y", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"90s", func(t time.Time) time.Time { return t.Add(90 * time.Second) }},
		{"3D", func(t time.Time) time.Time { return t.AddDate(0, 0, 3) }},
	} {
		v, err := k.modify(t, api.ScopeSED, tc.rot)
		if err != nil || v.KeyRotation != tc.rot || v.NextRekey != tc.next(v.RekeyTime).Format(time.RFC3339) {
			t.Errorf("%s: %+v %v", tc.rot, v, err)
		}
	}
	v, err := k.modify(t, api.ScopeSED, "Never")
	if err != nil || v.KeyRotation != "Never" || v.NextRekey != "Never" {
		t.Errorf("Never: %+v %v", v, err)
	}
}

// Changing the rotation re-arms the scheduler. Done in quick succession, as
// a script or a UI might, it must never hang: each modify answers at once.
func TestRekey_ModifyInQuickSuccession(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	for i := range 1000 {
		rot := []string{"6W", "90s", "Never", "1Y"}[i%4]
		if v, err := k.modify(t, api.ScopeSED, rot); err != nil || v.KeyRotation != rot {
			t.Fatalf("modify %d to %s: %+v %v", i, rot, v, err)
		}
	}
}

// When status shows a domain idle (ACTIVE, no rekey), a rekey of it can be
// started: a script that waits for ACTIVE and then starts the next rekey must
// not be told one is still in progress.
func TestRekey_IdleStatusMeansStartable(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	for i := range 60 {
		if _, err := k.c.StartRekey(t.Context(), api.ScopeCluster, []string{"JWT"}); err != nil {
			t.Fatalf("rekey %d: status said JWT is ACTIVE, but the start was refused: %v", i, err)
		}
		waitFor(t, "JWT to be ACTIVE", func() bool {
			d := domainStatus(t, k, "JWT")
			return d.Status == api.StatusActive && d.Rekey == nil
		})
	}
}
