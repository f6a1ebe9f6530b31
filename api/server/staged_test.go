package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/logs"
)

func eventsNamed(t *testing.T, k *kmd, name, domain string) []api.Event {
	t.Helper()
	evs, err := k.c.Events(t.Context(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var out []api.Event
	for _, e := range evs.Events {
		if e.Name == name && e.Domain == domain {
			out = append(out, e)
		}
	}
	return out
}

func TestStaged_StartContinueCancelOverTheAPI(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := k.c.Put(ctx, "S3", n, []byte("v-"+n), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := domainStatus(t, k, "S3").KeyID
	resp, err := k.c.StartRekeyWith(ctx, api.ScopeCluster, api.RekeyStartRequest{Domains: []string{"S3"}, StagePeriod: "7D"})
	if err != nil || !slices.Equal(resp.Started, []string{"S3"}) {
		t.Fatalf("staged start: %+v, %v", resp, err)
	}
	waitFor(t, "S3 STAGED", func() bool { return domainStatus(t, k, "S3").Status == api.StatusStaged })
	st := domainStatus(t, k, "S3")
	if st.StagedUntil == nil || st.Rekey != nil || st.KeyID == before || st.Entries != 3 ||
		st.StagedUntil.Sub(time.Now()) < 7*24*time.Hour-time.Minute || st.StagedUntil.Sub(time.Now()) > 7*24*time.Hour {
		t.Fatalf("S3 status %+v, want STAGED for 7 days under a new key", st)
	}
	// The raw JSON carries staged_until, as RFC 3339 to the second.
	_, _, body := k.do(t, "GET", "/v1/status/cluster", nil, nil)
	for _, row := range rawRows(t, body, "domains") {
		d := jsonString(t, row, "domain")
		raw, ok := row["staged_until"]
		switch {
		case !ok:
			t.Errorf("%s has no staged_until", d)
		case d == "S3" && !secondUTC.MatchString(strings.Trim(string(raw), `"`)):
			t.Errorf("S3 staged_until %s", raw)
		case d != "S3" && string(raw) != "null":
			t.Errorf("%s staged_until %s, want null", d, raw)
		}
	}

	_, err = k.c.StartRekey(ctx, api.ScopeCluster, []string{"S3"})
	ae := wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	if !strings.HasPrefix(ae.Message, "S3 is STAGED until ") || !strings.HasSuffix(ae.Message, "or 'kmctl cluster rekey cancel --domain S3' first") {
		t.Errorf("start while STAGED: %q", ae.Message)
	}
	_, err = k.c.Migrate(ctx, api.ScopeCluster, api.MigrateRequest{ToLocal: true, Domains: []string{"S3"}})
	wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict)
	_, err = k.c.ContinueRekey(ctx, api.ScopeCluster, []string{"SSO"})
	if ae := wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict); ae.Message != "SSO is not STAGED (it is ACTIVE); nothing to continue" {
		t.Errorf("continue of SSO: %q", ae.Message)
	}

	// Keys: the retired one and the current one.
	l, err := k.c.Keys(ctx, api.ScopeCluster, []string{"S3"})
	if err != nil || l.Total != 2 || len(l.Keys) != 2 {
		t.Fatalf("keys of S3: %+v, %v", l, err)
	}
	var retired api.Key
	for _, key := range l.Keys {
		if key.State == api.KeyRetired {
			retired = key
		}
	}
	if retired.KeyID != before || retired.Entries != 0 || retired.DestroyAt == nil || !retired.DestroyAt.Equal(*st.StagedUntil) {
		t.Fatalf("retired key %+v, want %s, no entries, destroyed at %v", retired, before, st.StagedUntil)
	}

	resp, err = k.c.CancelRekey(ctx, api.ScopeCluster, nil)
	if err != nil || !slices.Equal(resp.Started, []string{"S3"}) {
		t.Fatalf("cancel: %+v %v", resp, err)
	}
	waitFor(t, "S3 ACTIVE", func() bool { return domainStatus(t, k, "S3").Status == api.StatusActive })
	if got := domainStatus(t, k, "S3").KeyID; got != before {
		t.Fatalf("S3 key %s after cancel, want %s back", got, before)
	}
	for _, n := range []string{"a", "b", "c"} {
		if v, _, err := k.c.Get(ctx, "S3", n); err != nil || string(v) != "v-"+n {
			t.Fatalf("S3/%s after cancel: %q %v", n, v, err)
		}
	}
	for _, name := range []string{logs.EventRekeyStaged, logs.EventRekeyCancelled} {
		if evs := eventsNamed(t, k, name, "S3"); len(evs) != 1 {
			t.Errorf("%d %s events", len(evs), name)
		}
	}

	// SED: staged, then its retired key deleted by fingerprint.
	if _, err := k.c.StartRekeyWith(ctx, api.ScopeSED, api.RekeyStartRequest{StagePeriod: "1h"}); err != nil {
		t.Fatal(err)
	}
	sedStatus := func() api.NodeStatus {
		s, err := k.c.SEDStatus(ctx)
		if err != nil || len(s.Nodes) != 1 {
			t.Fatalf("sed status %+v %v", s, err)
		}
		return s.Nodes[0]
	}
	waitFor(t, "SED STAGED", func() bool { return sedStatus().Status == api.StatusStaged })
	if sedStatus().StagedUntil == nil {
		t.Fatal("sed status without staged_until")
	}
	l, err = k.c.Keys(ctx, api.ScopeSED, nil)
	if err != nil || len(l.Keys) != 2 {
		t.Fatalf("sed keys %+v %v", l, err)
	}
	for _, key := range l.Keys {
		if key.State != api.KeyRetired {
			continue
		}
		del, err := k.c.DeleteKey(ctx, api.ScopeSED, "", strings.ToUpper(key.Fingerprint))
		if err != nil || del.Deleted.KeyID != key.KeyID || del.Deleted.Domain != "SED" {
			t.Fatalf("delete of the retired SED key: %+v %v", del, err)
		}
	}
	if st := sedStatus(); st.Status != api.StatusLocal {
		t.Fatalf("SED after its retired key was deleted: %+v", st)
	}
	if evs := eventsNamed(t, k, logs.EventSedsRekeyContinued, "SED"); len(evs) != 1 {
		t.Errorf("%d SED continued events", len(evs))
	}
}

func TestStaged_BadRequests(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	fp := strings.Repeat("ab", 16)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
		says                     string
	}{
		{"stage Never", "POST", "/v1/rekey/cluster", `{"domains":["S3"],"stage_period":"Never"}`, 400, api.CodeInvalidValue, "Never is not allowed"},
		{"stage 0D", "POST", "/v1/rekey/cluster", `{"stage_period":"0D"}`, 400, api.CodeInvalidValue, "positive"},
		{"stage 7X", "POST", "/v1/rekey/sed", `{"stage_period":"7X"}`, 400, api.CodeInvalidValue, "Y M W D h m s"},
		{"plan stage 7w", "GET", "/v1/rekey/cluster/plan?stage_period=7w", "", 400, api.CodeInvalidValue, "did you mean 7W"},
		{"plan unknown parameter", "GET", "/v1/rekey/cluster/plan?domains=S3", "", 400, api.CodeBadRequest, `unknown query parameter "domains"`},
		{"plan unknown domain", "GET", "/v1/rekey/cluster/plan?domain=NOPE", "", 404, api.CodeUnknownDomain, "NOPE"},
		{"plan sed with domain", "GET", "/v1/rekey/sed/plan?domain=SED", "", 400, api.CodeBadRequest, "do not name domains"},
		{"plan unknown scope", "GET", "/v1/rekey/nope/plan", "", 404, api.CodeUnknownDomain, "nope"},
		{"continue unknown field", "POST", "/v1/rekey/cluster/continue", `{"domain":["S3"]}`, 400, api.CodeBadRequest, `{"domains":["S3"]}`},
		{"continue unknown domain", "POST", "/v1/rekey/cluster/continue", `{"domains":["NOPE"]}`, 404, api.CodeUnknownDomain, "NOPE"},
		{"cancel sed with domain", "POST", "/v1/rekey/sed/cancel", `{"domains":["SED"]}`, 400, api.CodeBadRequest, "do not name domains"},
		{"cancel not staged", "POST", "/v1/rekey/cluster/cancel", `{"domains":["S3"]}`, 409, api.CodeConflict, "S3 is not STAGED (it is ACTIVE); nothing to cancel"},
		{"continue none staged", "POST", "/v1/rekey/cluster/continue", ``, 409, api.CodeConflict, "no cluster domain is STAGED; nothing to continue"},
		{"keys unknown domain", "GET", "/v1/keys/cluster?domain=NOPE", "", 404, api.CodeUnknownDomain, "NOPE"},
		{"keys sed with domain", "GET", "/v1/keys/sed?domain=S3", "", 400, api.CodeBadRequest, "do not name domains"},
		{"delete without domain", "DELETE", "/v1/keys/cluster/" + fp, "", 400, api.CodeBadRequest, "missing domain"},
		{"delete short fingerprint", "DELETE", "/v1/keys/cluster/abc?domain=S3", "", 400, api.CodeInvalidValue, "32 hex digits"},
		{"delete unknown fingerprint", "DELETE", "/v1/keys/cluster/" + fp + "?domain=S3", "", 404, api.CodeNotFound, "kmctl cluster keys list --domain S3"},
		{"delete sed other domain", "DELETE", "/v1/keys/sed/" + fp + "?domain=S3", "", 400, api.CodeBadRequest, "do not name domains"},
		{"delete unknown parameter", "DELETE", "/v1/keys/sed/" + fp + "?force=1", "", 400, api.CodeBadRequest, "force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			status, _, b := k.do(t, tc.method, tc.path, nil, body)
			eb := wantErrorBody(t, status, b, tc.status, tc.code)
			if !strings.Contains(eb.Error, tc.says) {
				t.Errorf("message %q does not say %s", eb.Error, tc.says)
			}
		})
	}
	// The current key cannot be deleted.
	l, err := k.c.Keys(t.Context(), api.ScopeCluster, []string{"FTP"})
	if err != nil || len(l.Keys) != 1 {
		t.Fatalf("keys of FTP %+v %v", l, err)
	}
	_, err = k.c.DeleteKey(t.Context(), api.ScopeCluster, "FTP", l.Keys[0].Fingerprint)
	if ae := wantAPIError(t, err, http.StatusConflict, api.CodeConflict, api.ErrConflict); !strings.Contains(ae.Message, "is CURRENT") {
		t.Errorf("delete of the current key: %q", ae.Message)
	}
	// Nothing changed, nothing raised.
	st, err := k.c.ClusterStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range st.Domains {
		if d.Status != api.StatusActive {
			t.Errorf("%s is %s after refused requests", d.Domain, d.Status)
		}
	}
	if evs, _ := k.c.Events(t.Context(), time.Time{}); len(evs.Events) != 0 {
		t.Errorf("events after refused requests: %+v", evs.Events)
	}
}

func TestStaged_PlanJSON(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	if _, err := k.c.Put(ctx, "JWT", "key", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	status, _, body := k.do(t, "GET", "/v1/rekey/cluster/plan?domain=JWT&domain=NDMP&stage_period=2W", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("plan: %d %s", status, body)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"scope": `"cluster"`, "dry_run": "true", "stage_period": `"2W"`,
		"would_start": "true", "refused": `""`, "entries": "1", "total": "2"} {
		if got := string(top[key]); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	rows := rawRows(t, body, "domains")
	if len(rows) != 2 || jsonString(t, rows[0], "domain") != "JWT" || jsonString(t, rows[1], "domain") != "NDMP" {
		t.Fatalf("rows %s", top["domains"])
	}
	jwt := domainStatus(t, k, "JWT")
	var p api.RekeyPlan
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	d := p.Domains[0]
	if d.Action != api.PlanRekey || d.Entries != 1 || d.CurrentKey == nil || d.CurrentKey.KeyID != jwt.KeyID ||
		len(d.CurrentKey.Fingerprint) != 32 || d.Create == nil || d.Create.Location != "Local" || d.Create.KeyID != "" ||
		d.Destroy == nil || d.Destroy.KeyID != jwt.KeyID {
		t.Errorf("JWT plan %+v", d)
	}
	// It changed nothing: the same keys, no events; a second plan is the same.
	if got := domainStatus(t, k, "JWT"); got.KeyID != jwt.KeyID || got.Status != api.StatusActive {
		t.Errorf("JWT after a plan %+v", got)
	}
	if _, _, again := k.do(t, "GET", "/v1/rekey/cluster/plan?domain=JWT&domain=NDMP&stage_period=2W", nil, nil); string(again) != string(body) {
		t.Errorf("a second plan differs:\n%s\n%s", body, again)
	}
	sed, err := k.c.PlanRekey(ctx, api.ScopeSED, nil, "")
	if err != nil || len(sed.Domains) != 1 || sed.Domains[0].Node != 1 || sed.StagePeriod != "" || !sed.WouldStart {
		t.Errorf("sed plan %+v %v", sed, err)
	}
	if evs, _ := k.c.Events(ctx, time.Time{}); len(evs.Events) != 0 {
		t.Errorf("events after plans: %+v", evs.Events)
	}
}
