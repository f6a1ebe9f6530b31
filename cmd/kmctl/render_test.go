package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
)

var keyCreated = time.Date(2026, 11, 22, 9, 19, 16, 0, time.UTC)

// The SPEC samples, byte for byte; the cluster status sample with the
// Location and Remote Key ID columns of a newer issue, which wins over the
// SPEC (TestRender_MatchesSpecFile checks the rest against the SPEC).
const (
	specClusterStatus = `Domain     Status       Location  Remote Key ID  Key Creation Date    Error Info(if any)
------------------------------------------------------------------------
CELOG      ACTIVE       Local                    2026-11-22T09:19:16
S3         IN_PROGRESS  Local                    2026-11-22T09:19:16
SSO        FAILED       Local                    2026-11-22T09:19:16  kmip: connection refused
------------------------------------------------------------------------
Total: 17
`
	specSEDStatus = ` Node Status  Location  Remote Key ID  Key Creation Date   Error Info(if any)
-----------------------------------------------------------------------------
 1    LOCAL   Local                    2026-11-22T09:19:16
-----------------------------------------------------------------------------
Total: 1
`
	specRekeyView = `Rekey Time: 2026-11-22T18:38:45
Key Rotation: 6W
Next Rekey: 2027-01-03T18:38:45
Last Result: succeeded
`
)

func sampleClusterStatus() api.ClusterStatus {
	return api.ClusterStatus{Total: 17, Domains: []api.DomainStatus{
		{Domain: "CELOG", Status: api.StatusActive, KeyID: "k1", KeyCreated: keyCreated, Location: "Local", Entries: 3},
		{Domain: "S3", Status: api.StatusInProgress, KeyID: "k2", KeyCreated: keyCreated, Location: "Local", Entries: 1000000,
			Rekey: &api.Progress{Done: 420000, Total: 1000000, Started: keyCreated}},
		{Domain: "SSO", Status: api.StatusFailed, KeyID: "k3", KeyCreated: keyCreated, Location: "Local",
			Error: "kmip: connection refused"},
	}}
}

func sampleSEDStatus() api.SEDStatus {
	return api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{
		{Node: 1, Status: api.StatusLocal, KeyID: "k", Location: "Local", KeyCreated: keyCreated},
	}}
}

func render(t *testing.T, f func(*bytes.Buffer) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := f(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRenderClusterStatus_SpecSample(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return renderClusterStatus(b, sampleClusterStatus()) })
	if got != specClusterStatus {
		t.Errorf("cluster status table:\n%s\nwant (SPEC):\n%s", got, specClusterStatus)
	}
	if n := strings.Count(strings.Split(got, "\n")[1], "-"); n != 72 {
		t.Errorf("rule has %d dashes, want 72", n)
	}
}

func TestRenderSEDStatus_SpecSample(t *testing.T) {
	got := render(t, func(b *bytes.Buffer) error { return renderSEDStatus(b, sampleSEDStatus()) })
	if got != specSEDStatus {
		t.Errorf("sed status table:\n%s\nwant (SPEC):\n%s", got, specSEDStatus)
	}
	if n := strings.Count(strings.Split(got, "\n")[1], "-"); n != 77 {
		t.Errorf("rule has %d dashes, want 77", n)
	}
}

func TestRenderRekeyView_SpecSample(t *testing.T) {
	v := api.RekeyView{RekeyTime: time.Date(2026, 11, 22, 18, 38, 45, 0, time.UTC), KeyRotation: "6W",
		NextRekey: "2027-01-03T18:38:45Z", LastResult: "succeeded"}
	if got := render(t, func(b *bytes.Buffer) error { return renderRekeyView(b, v) }); got != specRekeyView {
		t.Errorf("rekey view:\n%s\nwant (SPEC):\n%s", got, specRekeyView)
	}
}

// specBlock returns the first fenced block after heading in SPEC.md, or
// skips when the SPEC is not beside the module.
func specBlock(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("/work/shared/SPEC.md")
	if err != nil {
		t.Skipf("SPEC.md not available: %v", err)
	}
	s := string(b)
	i := strings.Index(s, heading)
	if i < 0 {
		t.Fatalf("SPEC.md has no %q", heading)
	}
	s = s[i:]
	start := strings.Index(s, "```\n") + len("```\n")
	end := strings.Index(s[start:], "```")
	return s[start : start+end]
}

// withoutLocationColumns cuts the Location and Remote Key ID columns
// (offsets 24 to 49, where neither is widened) out of a cluster status
// table's header and rows: what the SPEC sample shows.
func withoutLocationColumns(table string) string {
	lines := strings.Split(table, "\n")
	for i, l := range lines {
		if len(l) > 49 && !strings.HasPrefix(l, "---") {
			lines[i] = l[:24] + l[49:]
		}
	}
	return strings.Join(lines, "\n")
}

func TestRender_MatchesSpecFile(t *testing.T) {
	for _, tc := range []struct {
		heading, want string
	}{
		{"### cluster status (table)", withoutLocationColumns(specClusterStatus)},
		{"### sed status (table)", specSEDStatus},
		{"### rekey view", specRekeyView},
	} {
		if got := specBlock(t, tc.heading); got != tc.want {
			t.Errorf("SPEC %s:\n%q\nthe golden sample here:\n%q", tc.heading, got, tc.want)
		}
	}
}

func TestRenderClusterStatus_WidensLongValues(t *testing.T) {
	st := api.ClusterStatus{Total: 2, Domains: []api.DomainStatus{
		{Domain: "CLOUDPOOLS", Status: "SOME_VERY_LONG_STATUS", KeyCreated: keyCreated, Error: "x"},
		{Domain: "IPMI_MGMT", Status: api.StatusActive, Error: "line one\nline two"},
	}}
	want := `Domain     Status                 Location  Remote Key ID  Key Creation Date    Error Info(if any)
------------------------------------------------------------------------
CLOUDPOOLS SOME_VERY_LONG_STATUS                           2026-11-22T09:19:16  x
IPMI_MGMT  ACTIVE                                                               line one line two
------------------------------------------------------------------------
Total: 2
`
	if got := render(t, func(b *bytes.Buffer) error { return renderClusterStatus(b, st) }); got != want {
		t.Errorf("widened table:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderClusterStatus_KMIPRemoteKeyID(t *testing.T) {
	st := api.ClusterStatus{Total: 17, Domains: []api.DomainStatus{
		{Domain: "CELOG", Status: api.StatusActive, Location: "Local", KeyCreated: keyCreated},
		{Domain: "S3", Status: api.StatusActive, Location: "kmip1", RemoteKeyID: "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
			KeyCreated: keyCreated},
		{Domain: "SSO", Status: api.StatusMigrating, Location: "Local", KeyCreated: keyCreated},
		{Domain: "SIQ", Status: api.StatusFailed, Location: "kmip1", RemoteKeyID: "3f2504e0-4f89-11d3-9a0c-0305e82c3302",
			KeyCreated: keyCreated, Error: "kmip: connection refused"},
	}}
	want := `Domain     Status       Location  Remote Key ID                         Key Creation Date    Error Info(if any)
------------------------------------------------------------------------
CELOG      ACTIVE       Local                                           2026-11-22T09:19:16
S3         ACTIVE       kmip1     3f2504e0-4f89-11d3-9a0c-0305e82c3301  2026-11-22T09:19:16
SSO        MIGRATING    Local                                           2026-11-22T09:19:16
SIQ        FAILED       kmip1     3f2504e0-4f89-11d3-9a0c-0305e82c3302  2026-11-22T09:19:16  kmip: connection refused
------------------------------------------------------------------------
Total: 17
`
	if got := render(t, func(b *bytes.Buffer) error { return renderClusterStatus(b, st) }); got != want {
		t.Errorf("cluster table with KMIP keys:\n%s\nwant:\n%s", got, want)
	}
	// A server name as long as the Location column widens it too.
	st = api.ClusterStatus{Total: 1, Domains: []api.DomainStatus{
		{Domain: "S3", Status: api.StatusActive, Location: "kmip.example.com", RemoteKeyID: "42", KeyCreated: keyCreated},
	}}
	want = `Domain     Status       Location          Remote Key ID  Key Creation Date    Error Info(if any)
------------------------------------------------------------------------
S3         ACTIVE       kmip.example.com  42             2026-11-22T09:19:16
------------------------------------------------------------------------
Total: 1
`
	if got := render(t, func(b *bytes.Buffer) error { return renderClusterStatus(b, st) }); got != want {
		t.Errorf("cluster table with a long location:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderSEDStatus_KMIPRemoteKeyID(t *testing.T) {
	st := api.SEDStatus{Total: 1, Nodes: []api.NodeStatus{{
		Node: 12, Status: api.StatusKMIP, Location: "kmip1.example.com", RemoteKeyID: "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
		KeyCreated: keyCreated, Error: "",
	}}}
	want := ` Node Status  Location           Remote Key ID                         Key Creation Date   Error Info(if any)
-----------------------------------------------------------------------------
 12   KMIP    kmip1.example.com  3f2504e0-4f89-11d3-9a0c-0305e82c3301  2026-11-22T09:19:16
-----------------------------------------------------------------------------
Total: 1
`
	if got := render(t, func(b *bytes.Buffer) error { return renderSEDStatus(b, st) }); got != want {
		t.Errorf("sed table with a KMIP key:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderStatus_Empty(t *testing.T) {
	want := "Domain     Status       Location  Remote Key ID  Key Creation Date    Error Info(if any)\n" + strings.Repeat("-", 72) + "\n" +
		strings.Repeat("-", 72) + "\nTotal: 0\n"
	if got := render(t, func(b *bytes.Buffer) error { return renderClusterStatus(b, api.ClusterStatus{}) }); got != want {
		t.Errorf("empty table:\n%q\nwant:\n%q", got, want)
	}
}

func TestRenderRekeyView(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    api.RekeyView
		want string
	}{
		{"before any schedule", api.RekeyView{RekeyTime: time.Unix(0, 0).UTC(), KeyRotation: "Never", NextRekey: "Never", LastResult: "none"},
			"Rekey Time: 1970-01-01T00:00:00\nKey Rotation: Never\nNext Rekey: Never\nLast Result: none\n"},
		{"zero time", api.RekeyView{KeyRotation: "Never", NextRekey: "Never", LastResult: "none"},
			"Rekey Time: 1970-01-01T00:00:00\nKey Rotation: Never\nNext Rekey: Never\nLast Result: none\n"},
		{"other zone", api.RekeyView{RekeyTime: time.Date(2026, 11, 22, 19, 38, 45, 0, time.FixedZone("CET", 3600)),
			KeyRotation: "2M", NextRekey: "2027-01-22T19:38:45+01:00", LastResult: "failed"},
			"Rekey Time: 2026-11-22T18:38:45\nKey Rotation: 2M\nNext Rekey: 2027-01-22T18:38:45\nLast Result: failed\n"},
		{"unparsable next", api.RekeyView{RekeyTime: keyCreated, KeyRotation: "1Y", NextRekey: "soon", LastResult: "in progress"},
			"Rekey Time: 2026-11-22T09:19:16\nKey Rotation: 1Y\nNext Rekey: soon\nLast Result: in progress\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := render(t, func(b *bytes.Buffer) error { return renderRekeyView(b, tc.v) }); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestRenderEvents(t *testing.T) {
	l := api.EventList{Events: []api.Event{
		{Seq: 1, Time: time.Date(2026, 11, 22, 9, 19, 16, 500, time.UTC), Name: "KeyManagerRekeyFailed", Scope: "cluster",
			Domain: "S3", Attempt: 2, Error: "kmip: connection refused", Message: "rekey of S3 failed"},
		{Seq: 2, Time: time.Date(2026, 11, 22, 10, 0, 0, 0, time.FixedZone("X", 7200)), Name: "KeyManagerSedsRekeyFailed",
			Scope: "sed", Domain: "SED", Node: 1, Attempt: 1, Message: "", Error: "disk\nfull"},
		{Seq: 3, Time: time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC), Name: "KeyManagerRekeyCompleted", Scope: "cluster",
			Domain: "CLOUDPOOLS", Message: "rekey of CLOUDPOOLS completed"},
	}}
	want := `Time                  Event                      Scope    Domain      Attempt  Message
2026-11-22T09:19:16Z  KeyManagerRekeyFailed      cluster  S3          2        rekey of S3 failed: kmip: connection refused
2026-11-22T08:00:00Z  KeyManagerSedsRekeyFailed  sed      SED         1        disk full
2026-11-22T11:00:00Z  KeyManagerRekeyCompleted   cluster  CLOUDPOOLS           rekey of CLOUDPOOLS completed
`
	if got := render(t, func(b *bytes.Buffer) error { return renderEvents(b, l) }); got != want {
		t.Errorf("events:\n%s\nwant:\n%s", got, want)
	}
	header := "Time                  Event                      Scope    Domain      Attempt  Message\n"
	if got := render(t, func(b *bytes.Buffer) error { return renderEvents(b, api.EventList{}) }); got != header {
		t.Errorf("no events: %q, want the header only", got)
	}
}

func TestFormatProgress(t *testing.T) {
	for _, tc := range []struct {
		domains     int
		done, total int64
		rate        float64
		want        string
	}{
		{3, 420000, 1000000, 85000, "Rekeying 3 domain(s): 420000/1000000 entries (42%), 85000 entries/s, ETA 7s"},
		{3, 0, 1000000, -1, "Rekeying 3 domain(s): 0/1000000 entries (0%), - entries/s, ETA -"},
		{1, 10, 100, 0, "Rekeying 1 domain(s): 10/100 entries (10%), 0 entries/s, ETA -"},
		{1, 0, 1000000, 100, "Rekeying 1 domain(s): 0/1000000 entries (0%), 100 entries/s, ETA 2h46m40s"},
		{17, 100, 100, 12.6, "Rekeying 17 domain(s): 100/100 entries (100%), 13 entries/s, ETA 0s"},
		{1, 0, 0, -1, "Rekeying 1 domain(s): 0/0 entries (100%), - entries/s, ETA -"},
		{1, 1, 3, 0.5, "Rekeying 1 domain(s): 1/3 entries (33%), 1 entries/s, ETA 4s"},
		{1, 0, 1 << 62, 1e-9, "Rekeying 1 domain(s): 0/4611686018427387904 entries (0%), 0 entries/s, ETA -"},
	} {
		if got := formatProgress("Rekeying", tc.domains, tc.done, tc.total, tc.rate); got != tc.want {
			t.Errorf("formatProgress(%d, %d, %d, %v) =\n%q\nwant\n%q", tc.domains, tc.done, tc.total, tc.rate, got, tc.want)
		}
	}
	if got, want := formatProgress(opMigration.ongoing, 1, 2, 4, -1), "Migrating 1 domain(s): 2/4 entries (50%), - entries/s, ETA -"; got != want {
		t.Errorf("migration progress %q, want %q", got, want)
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if r := m.rate(t0, 1000); r != -1 {
		t.Errorf("first sample: rate %v, want -1 (unknown)", r)
	}
	if r := m.rate(t0, 1000); r != -1 {
		t.Errorf("no time elapsed: rate %v, want -1", r)
	}
	if r := m.rate(t0.Add(2*time.Second), 171000); r != 85000 {
		t.Errorf("170000 entries in 2s: rate %v, want 85000", r)
	}
	if r := m.rate(t0.Add(3*time.Second), 500); r != -1 {
		t.Errorf("done went backwards: rate %v, want -1", r)
	}
}

func TestProgressLine_Redraw(t *testing.T) {
	var b bytes.Buffer
	p := progressLine{w: &b}
	p.end() // nothing drawn: nothing written
	p.draw("abcdef")
	p.draw("abc")
	p.draw("abcd")
	p.end()
	p.end()
	if want := "\rabcdef\rabc   \rabcd\n"; b.String() != want {
		t.Errorf("redraws: %q, want %q", b.String(), want)
	}
}

func TestRekeyFailures(t *testing.T) {
	states := []rekeyState{
		{name: "CELOG", status: api.StatusActive},
		{name: "S3", status: api.StatusFailed, err: "kmip: connection refused"},
		{name: "SSO", status: api.StatusFailed},
	}
	err := rekeyFailures(opRekey, states)
	want := "rekey of S3 failed: kmip: connection refused\nrekey of SSO failed"
	if err == nil || err.Error() != want {
		t.Errorf("failures: %v, want %q", err, want)
	}
	err = rekeyFailures(opMigration, states)
	want = "migration of S3 failed: kmip: connection refused\nmigration of SSO failed"
	if err == nil || err.Error() != want {
		t.Errorf("migration failures: %v, want %q", err, want)
	}
	if err := rekeyFailures(opRekey, states[:1]); err != nil {
		t.Errorf("no failure: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	st := sampleClusterStatus()
	states := clusterStates(st, []string{"S3", "SSO"})
	running, done, total := summarize(states)
	if !running || done != 420000 || total != 1000000 || len(states) != 2 {
		t.Errorf("summarize = %v, %d, %d over %d states; want true, 420000, 1000000 over 2", running, done, total, len(states))
	}
	sed := sedStates(api.SEDStatus{Nodes: []api.NodeStatus{{Node: 1, Status: "MIGRATING", Entries: 7}, {Node: 2, Status: "LOCAL", Entries: 5}}})
	if sed[0].name != "SED on node 1" || !sed[0].running() || sed[0].done != 0 || sed[0].total != 7 || sed[1].done != 5 {
		t.Errorf("sed states: %+v", sed)
	}
}

// A real cluster status has all 17 domains: the columns must stay where the
// SPEC and the issue put them (CLOUDPOOLS, the longest name, leaves one
// space).
func TestRenderClusterStatus_AllDomainsKeepOffsets(t *testing.T) {
	st := api.ClusterStatus{Total: len(domains.ClusterDomains)}
	for _, d := range domains.ClusterDomains {
		st.Domains = append(st.Domains, api.DomainStatus{Domain: d, Status: api.StatusInProgress, Location: "Local", KeyCreated: keyCreated})
	}
	got := render(t, func(b *bytes.Buffer) error { return renderClusterStatus(b, st) })
	lines := strings.Split(got, "\n")
	if len(lines) != 17+5 {
		t.Fatalf("%d lines:\n%s", len(lines), got)
	}
	for _, l := range lines[2 : 2+17] {
		if l[11:24] != "IN_PROGRESS  " || l[24:49] != "Local"+strings.Repeat(" ", 20) || l[49:] != "2026-11-22T09:19:16" {
			t.Errorf("row %q: columns moved from offsets 11, 24 and 49", l)
		}
	}
	if lines[len(lines)-2] != "Total: 17" {
		t.Errorf("total line %q", lines[len(lines)-2])
	}
}
