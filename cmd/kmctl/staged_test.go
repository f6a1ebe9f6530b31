package main

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
)

var (
	stagedUntil = time.Date(2026, 11, 29, 9, 19, 16, 0, time.UTC)
	fpRetired   = "0123456789abcdef0123456789abcdef"
	fpCurrent   = "fedcba9876543210fedcba9876543210"
)

func samplePlan() api.RekeyPlan {
	return api.RekeyPlan{Scope: "cluster", DryRun: true, StagePeriod: "7D", WouldStart: false,
		Refused: "SSO is STAGED until 2026-11-29T09:19:16Z: run 'kmctl cluster rekey continue --domain SSO' or 'kmctl cluster rekey cancel --domain SSO' first",
		Entries: 1003, Total: 2, Domains: []api.RekeyPlanDomain{
			{Domain: "S3", Entries: 1000, Action: api.PlanRekey,
				CurrentKey: &api.PlanKey{KeyID: "k1", Fingerprint: fpCurrent, Location: "Local"},
				Create:     &api.PlanNewKey{Location: "Local"}, Destroy: &api.PlanKey{KeyID: "k1", Fingerprint: fpCurrent, Location: "Local"}},
			{Domain: "SSO", Entries: 3, Action: api.PlanRefuse, Reason: "SSO is STAGED until 2026-11-29T09:19:16Z",
				CurrentKey: &api.PlanKey{KeyID: "k2", Fingerprint: fpRetired, Location: "kmip1", RemoteKeyID: "r2"}},
		}}
}

const planGolden = `Dry run of a cluster rekey: nothing was changed.
Domain  Entries  Action  Current Key  Fingerprint                       Location  New Key At  Destroys     Reason
S3      1000     rekey   k1           fedcba9876543210fedcba9876543210  Local     Local       k1 after 7D
SSO     3        refuse  k2           0123456789abcdef0123456789abcdef  kmip1     -           -            SSO is STAGED until 2026-11-29T09:19:16Z
Total: 2 domain(s), 1003 entries
Staged: each old key is kept, RETIRED, for 7D after its entries are re-encrypted
Would start: no: SSO is STAGED until 2026-11-29T09:19:16Z: run 'kmctl cluster rekey continue --domain SSO' or 'kmctl cluster rekey cancel --domain SSO' first
`

func sampleKeys() api.KeyList {
	return api.KeyList{Total: 2, Keys: []api.Key{
		{Domain: "S3", KeyID: "k1", Fingerprint: fpRetired, State: api.KeyRetired, Location: "Local", Created: keyCreated, DestroyAt: &stagedUntil},
		{Domain: "S3", KeyID: "k2", Fingerprint: fpCurrent, State: api.KeyCurrent, Location: "kmip1", RemoteKeyID: "r2",
			Created: keyCreated.Add(time.Hour), Entries: 1000},
	}}
}

const keysGolden = `Domain  Key ID  Fingerprint                       State    Location  Created              Entries
S3      k1      0123456789abcdef0123456789abcdef  RETIRED  Local     2026-11-22T09:19:16  0
S3      k2      fedcba9876543210fedcba9876543210  CURRENT  kmip1     2026-11-22T10:19:16  1000
Total: 2
S3: retired key k1 is destroyed at 2026-11-29T09:19:16 unless its staged rekey is continued or cancelled first
`

func TestStaged_RequestsAndOutput(t *testing.T) {
	started := func(names ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, 202, api.RekeyStartResponse{Started: names})
		}
	}
	for _, tc := range []struct {
		name       string
		args       []string
		answer     http.HandlerFunc
		want       []request
		wantStdout string
	}{
		{
			name: "staged start", args: []string{"cluster", "rekey", "start", "--domain", "S3", "--stage-period", "7D", "--yes"},
			answer:     started("S3"),
			want:       []request{{Method: "POST", URI: "/v1/rekey/cluster", Body: `{"domains":["S3"],"stage_period":"7D"}`}},
			wantStdout: "Rekey started: S3\n",
		},
		{
			name: "sed staged start", args: []string{"sed", "rekey", "start", "--stage-period=12h", "--yes"},
			answer:     started("SED"),
			want:       []request{{Method: "POST", URI: "/v1/rekey/sed", Body: `{"stage_period":"12h"}`}},
			wantStdout: "Rekey started: SED\n",
		},
		{
			// No confirmation: a dry run changes nothing.
			name: "dry run", args: []string{"cluster", "rekey", "start", "--dry-run", "--domain", "S3", "--domain", "SSO", "--stage-period", "7D"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, samplePlan()) },
			want:       []request{{Method: "GET", URI: "/v1/rekey/cluster/plan?domain=S3&domain=SSO&stage_period=7D"}},
			wantStdout: planGolden,
		},
		{
			name: "sed dry run -o json", args: []string{"sed", "rekey", "start", "--dry-run", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, api.RekeyPlan{Scope: "sed", DryRun: true, WouldStart: true, Total: 1, Domains: []api.RekeyPlanDomain{
					{Domain: "SED", Node: 1, Action: api.PlanRekey, CurrentKey: &api.PlanKey{KeyID: "k", Fingerprint: fpCurrent, Location: "Local"},
						Create: &api.PlanNewKey{Location: "Local"}, Destroy: &api.PlanKey{KeyID: "k", Fingerprint: fpCurrent, Location: "Local"}}}})
			},
			want: []request{{Method: "GET", URI: "/v1/rekey/sed/plan"}},
			wantStdout: `{
  "scope": "sed",
  "dry_run": true,
  "stage_period": "",
  "would_start": true,
  "refused": "",
  "domains": [
    {
      "domain": "SED",
      "node": 1,
      "entries": 0,
      "action": "rekey",
      "reason": "",
      "current_key": {
        "key_id": "k",
        "fingerprint": "fedcba9876543210fedcba9876543210",
        "location": "Local",
        "remote_key_id": ""
      },
      "create": {
        "location": "Local"
      },
      "destroy": {
        "key_id": "k",
        "fingerprint": "fedcba9876543210fedcba9876543210",
        "location": "Local",
        "remote_key_id": ""
      }
    }
  ],
  "entries": 0,
  "total": 1
}
`,
		},
		{
			name: "continue", args: []string{"cluster", "rekey", "continue", "--domain", "S3", "--domain", "SSO"},
			answer:     started("S3", "SSO"),
			want:       []request{{Method: "POST", URI: "/v1/rekey/cluster/continue", Body: `{"domains":["S3","SSO"]}`}},
			wantStdout: "Continue started: S3, SSO\n",
		},
		{
			name: "continue every staged", args: []string{"cluster", "rekey", "continue", "-o", "json"},
			answer:     started("S3"),
			want:       []request{{Method: "POST", URI: "/v1/rekey/cluster/continue", Body: `{}`}},
			wantStdout: "{\n  \"started\": [\n    \"S3\"\n  ]\n}\n",
		},
		{
			name: "sed cancel", args: []string{"sed", "rekey", "cancel"},
			answer:     started("SED"),
			want:       []request{{Method: "POST", URI: "/v1/rekey/sed/cancel", Body: `{}`}},
			wantStdout: "Cancel started: SED\n",
		},
		{
			name: "keys list", args: []string{"cluster", "keys", "list", "--domain", "S3"},
			answer:     func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sampleKeys()) },
			want:       []request{{Method: "GET", URI: "/v1/keys/cluster?domain=S3"}},
			wantStdout: keysGolden,
		},
		{
			name: "sed keys list -o json", args: []string{"sed", "keys", "list", "-o", "json"},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, api.KeyList{Total: 1, Keys: []api.Key{{Domain: "SED", Node: 1, KeyID: "k", Fingerprint: fpCurrent,
					State: api.KeyCurrent, Location: "Local", Created: keyCreated}}})
			},
			want: []request{{Method: "GET", URI: "/v1/keys/sed"}},
			wantStdout: "{\n  \"keys\": [\n    {\n      \"domain\": \"SED\",\n      \"node\": 1,\n      \"key_id\": \"k\",\n" +
				"      \"fingerprint\": \"" + fpCurrent + "\",\n      \"state\": \"CURRENT\",\n      \"location\": \"Local\",\n" +
				"      \"remote_key_id\": \"\",\n      \"created\": \"2026-11-22T09:19:16Z\",\n      \"entries\": 0,\n" +
				"      \"destroy_at\": null\n    }\n  ],\n  \"total\": 1\n}\n",
		},
		{
			name: "keys delete", args: []string{"cluster", "keys", "delete", "--domain", "S3", "--fingerprint", strings.ToUpper(fpRetired)},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, api.KeyDeleteResponse{Deleted: sampleKeys().Keys[0]})
			},
			want:       []request{{Method: "DELETE", URI: "/v1/keys/cluster/" + fpRetired + "?domain=S3"}},
			wantStdout: "Deleted key k1 (fingerprint " + fpRetired + ") of S3\n",
		},
		{
			name: "sed keys delete", args: []string{"sed", "keys", "delete", "--fingerprint", fpRetired},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, api.KeyDeleteResponse{Deleted: api.Key{Domain: "SED", KeyID: "k1", Fingerprint: fpRetired}})
			},
			want:       []request{{Method: "DELETE", URI: "/v1/keys/sed/" + fpRetired}},
			wantStdout: "Deleted key k1 (fingerprint " + fpRetired + ") of SED\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDaemon(t, tc.answer)
			r := f.run(t, runOpts{}, tc.args...)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != tc.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, tc.wantStdout)
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

// --wait follows the status: a staged rekey ends at STAGED, a cancel at
// ACTIVE; a FAILED end is exit 1.
func TestStaged_Wait(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		statuses []string // S3's, one per status poll
		code     int
		stdout   string
		stderr   string
	}{
		{"staged start", []string{"cluster", "rekey", "start", "--domain", "S3", "--stage-period", "7D", "--yes", "--wait"},
			[]string{api.StatusInProgress, api.StatusStaged}, 0, "Rekey staged: S3\n", ""},
		{"cancel", []string{"cluster", "rekey", "cancel", "--domain", "S3", "--wait"},
			[]string{api.StatusInProgress, api.StatusInProgress, api.StatusActive}, 0, "Cancel completed: S3\n", ""},
		{"continue fails", []string{"cluster", "rekey", "continue", "--domain", "S3", "--wait"},
			[]string{api.StatusInProgress, api.StatusFailed}, 1, "", "kmctl: error: continue of S3 failed: boom\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			polls := 0
			f := newFakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost {
					writeJSON(w, 202, api.RekeyStartResponse{Started: []string{"S3"}})
					return
				}
				st := tc.statuses[min(polls, len(tc.statuses)-1)]
				polls++
				row := api.DomainStatus{Domain: "S3", Status: st, Entries: 10}
				if st == api.StatusFailed {
					row.Error = "boom"
				}
				if st == api.StatusStaged {
					row.StagedUntil = &stagedUntil
				}
				writeJSON(w, 200, api.ClusterStatus{Total: 1, Domains: []api.DomainStatus{row}})
			})
			r := f.run(t, runOpts{}, tc.args...)
			if r.code != tc.code || r.stdout != tc.stdout || r.stderr != tc.stderr {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestStaged_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"cluster", "rekey", "start", "--stage-period", "Never", "--yes"}, "Never is not allowed"},
		{[]string{"cluster", "rekey", "start", "--stage-period", "0D", "--yes"}, "the number must be positive"},
		{[]string{"sed", "rekey", "start", "--stage-period", "7X", "--yes"}, "want a positive integer followed by one of Y M W D h m s"},
		{[]string{"cluster", "rekey", "start", "--stage-period", "", "--dry-run"}, "empty value"},
		{[]string{"cluster", "rekey", "start", "--stage-period", "7d", "--dry-run"}, "did you mean 7D?"},
		{[]string{"cluster", "rekey", "start", "--dry-run", "--wait"}, "--wait does not go with --dry-run"},
		{[]string{"cluster", "rekey", "start", "--dry-run", "--domain", "s3"}, "names are upper case: S3"},
		{[]string{"cluster", "rekey", "continue", "--domain", "NOPE"}, `unknown domain "NOPE"`},
		{[]string{"cluster", "rekey", "cancel", "S3"}, `unexpected argument "S3"`},
		{[]string{"sed", "rekey", "cancel", "--domain", "SED"}, "unknown flag: --domain"},
		{[]string{"cluster", "keys", "list", "--domain", "SED"}, `unknown domain "SED"`},
		{[]string{"cluster", "keys"}, `needs a subcommand: one of delete, list`},
		{[]string{"cluster", "keys", "delete", "--fingerprint", fpRetired}, "missing --domain D"},
		{[]string{"cluster", "keys", "delete", "--domain", "S3"}, "missing --fingerprint FP"},
		{[]string{"cluster", "keys", "delete", "--domain", "S3", "--fingerprint", "abc"}, `invalid fingerprint "abc": want the 32 hex digits`},
		{[]string{"sed", "keys", "delete", "--fingerprint", strings.Repeat("z", 32)}, "invalid fingerprint"},
		{[]string{"sed", "keys", "delete", "--fingerprint", fpRetired + "0"}, "want the 32 hex digits that 'kmctl sed keys list' shows"},
		{[]string{"sed", "keys", "delete", "--domain", "SED", "--fingerprint", fpRetired}, "unknown flag: --domain"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// No daemon: a usage error is found before any request.
			r := kmctl(t, runOpts{}, append([]string{"--socket", noDaemon(t)}, tc.args...)...)
			checkUsageError(t, r, tc.says)
		})
	}
}

func TestStaged_Refusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		code   string
		msg    string
	}{
		{"start while staged", []string{"cluster", "rekey", "start", "--domain", "S3", "--yes"}, 409, api.CodeConflict,
			"S3 is STAGED until 2026-12-01T10:00:00Z: run 'kmctl cluster rekey continue --domain S3' or 'kmctl cluster rekey cancel --domain S3' first"},
		{"continue not staged", []string{"cluster", "rekey", "continue", "--domain", "S3"}, 409, api.CodeConflict,
			"S3 is not STAGED (it is ACTIVE); nothing to continue"},
		{"delete current", []string{"cluster", "keys", "delete", "--domain", "S3", "--fingerprint", fpCurrent}, 409, api.CodeConflict,
			"key k2 of S3 is CURRENT: new entries are sealed under it; only a RETIRED key can be deleted"},
		{"delete unknown", []string{"sed", "keys", "delete", "--fingerprint", fpCurrent}, 404, api.CodeNotFound,
			"no master key of SED has fingerprint " + fpCurrent + "; list them with 'kmctl sed keys list'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDaemon(t, apiError(tc.status, tc.code, tc.msg))
			r := f.run(t, runOpts{}, tc.args...)
			if r.code != exitFail || r.stdout != "" || r.stderr != "kmctl: error: "+tc.msg+"\n" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and the one line", r.code, r.stdout, r.stderr)
			}
		})
	}
}

func TestStaged_StatusTableShowsStagedUntil(t *testing.T) {
	st := sampleClusterStatus()
	st.Domains[0].Status = api.StatusStaged
	st.Domains[0].StagedUntil = &stagedUntil
	var b strings.Builder
	if err := renderClusterStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	want := "CELOG      STAGED       Local                    2026-11-22T09:19:16  retired key kept until 2026-11-29T09:19:16\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("cluster status:\n%s\nwant a row\n%s", b.String(), want)
	}
	sed := sampleSEDStatus()
	sed.Nodes[0].Status = api.StatusStaged
	sed.Nodes[0].StagedUntil = &stagedUntil
	b.Reset()
	if err := renderSEDStatus(&b, sed); err != nil {
		t.Fatal(err)
	}
	if want := " 1    STAGED  Local                    2026-11-22T09:19:16 retired key kept until 2026-11-29T09:19:16\n"; !strings.Contains(b.String(), want) {
		t.Errorf("sed status:\n%s\nwant a row\n%s", b.String(), want)
	}
}
