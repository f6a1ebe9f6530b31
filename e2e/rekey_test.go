package e2e_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRekeys runs whole-scope, SED and per-domain rekeys and checks the
// key ids, the entries and the events, and that a rekey without --yes and
// without a terminal is refused.
func TestRekeys(t *testing.T) {
	t.Parallel()
	d := startKMD(t)

	data := map[string]map[string][]byte{}
	for _, dom := range []string{"S3", "FTP", "SSO", "CELOG", "JWT"} {
		data[dom] = genEntries(strings.ToLower(dom)+"/", 40)
		d.importEntries(dom, data[dom])
	}
	data["SED"] = genEntries("drive-", 5)
	for name, v := range data["SED"] {
		d.put("SED", name, v)
	}
	checkAll := func(d *daemon) {
		d.t.Helper()
		for _, dom := range sortedKeys(data) {
			d.checkExport(dom, data[dom])
		}
		d.checkGets("S3", []string{"s3/000001", "s3/000007", "s3/000040"}, data["S3"])
		d.checkGets("SED", []string{"drive-000003"}, data["SED"])
	}

	t.Run("refused without --yes and without a terminal", func(t *testing.T) {
		d := d.in(t)
		before, sedBefore := d.keyIDs(), d.sedKeyID()
		for _, args := range [][]string{
			{"cluster", "rekey", "start"},
			{"cluster", "rekey", "start", "--wait"},
			{"cluster", "rekey", "start", "--domain", "S3"},
			{"sed", "rekey", "start"},
		} {
			_, stderr, code := d.kmctl(args...)
			if code != 1 || len(errorLines(stderr)) != 1 {
				t.Errorf("kmctl %s (stdin not a terminal): exit %d, want 1 with one error line; stderr:\n%s", cmdline(args), code, stderr)
			}
		}
		if after := d.keyIDs(); !maps.Equal(before, after) {
			t.Errorf("a refused rekey changed key ids:\n%v\n%v", before, after)
		}
		for _, r := range d.clusterStatus().Domains {
			if r.Status != "ACTIVE" {
				t.Errorf("after a refused rekey %s is %s, want ACTIVE", r.Domain, r.Status)
			}
		}
		if d.sedKeyID() != sedBefore {
			t.Errorf("a refused sed rekey changed the SED key id")
		}
		if evs := d.events(); len(evs) != 0 {
			t.Errorf("events after refused rekeys: %+v, want none", evs)
		}
	})

	var afterCluster map[string]string
	t.Run("whole cluster", func(t *testing.T) {
		d := d.in(t)
		before, sedBefore := d.keyIDs(), d.sedKeyID()
		begin := time.Now().UTC().Truncate(time.Second)
		d.must("cluster", "rekey", "start", "--yes", "--wait")
		cs := d.clusterStatus()
		afterCluster = map[string]string{}
		for _, r := range cs.Domains {
			afterCluster[r.Domain] = r.KeyID
			if r.KeyID == before[r.Domain] || r.KeyID == "" {
				t.Errorf("%s key id %q after the rekey, was %q: want a new one", r.Domain, r.KeyID, before[r.Domain])
			}
			if r.Status != "ACTIVE" || r.Rekey != nil || r.Error != "" {
				t.Errorf("%s after rekey --wait: %+v, want ACTIVE without rekey or error", r.Domain, r)
			}
			if r.KeyCreated.Before(begin) {
				t.Errorf("%s key_created %s, before the rekey began at %s: want the new key's", r.Domain, r.KeyCreated, begin)
			}
			if want := int64(len(data[r.Domain])); r.Entries != want {
				t.Errorf("%s entries %d after the rekey, want %d", r.Domain, r.Entries, want)
			}
			if files := d.keyFiles(r.Domain); !slices.Equal(files, []string{r.KeyID + ".key"}) {
				t.Errorf("keys/%s holds %v after the rekey, want only %s.key", r.Domain, files, r.KeyID)
			}
		}
		if d.sedKeyID() != sedBefore {
			t.Errorf("a cluster rekey changed the SED key id")
		}
		// A successful whole-scope rekey resets the rotation clock.
		v := d.rekeyView("cluster")
		if rt := parseTime(t, "rekey_time", v.RekeyTime); v.LastResult != "succeeded" || rt.Before(begin) {
			t.Errorf("cluster rekey view after a whole-scope rekey: %+v; want last_result succeeded, rekey_time reset", v)
		}
		checkAll(d)
	})

	t.Run("sed", func(t *testing.T) {
		d := d.in(t)
		before, sedBefore := d.keyIDs(), d.sedKeyID()
		d.must("sed", "rekey", "start", "--yes", "--wait")
		n := d.sedStatus().Nodes[0]
		if n.KeyID == sedBefore || n.Status != "LOCAL" || n.Rekey != nil {
			t.Errorf("sed status after sed rekey --wait: %+v; want LOCAL with a key id other than %s", n, sedBefore)
		}
		if after := d.keyIDs(); !maps.Equal(before, after) {
			t.Errorf("a sed rekey changed cluster key ids")
		}
		if files := d.keyFiles("SED"); !slices.Equal(files, []string{n.KeyID + ".key"}) {
			t.Errorf("keys/SED holds %v, want only %s.key", files, n.KeyID)
		}
		checkAll(d)
	})

	var since time.Time
	t.Run("some domains", func(t *testing.T) {
		d := d.in(t)
		before, sedBefore := d.keyIDs(), d.sedKeyID()
		since = time.Now().UTC()
		out := d.must("cluster", "rekey", "start", "--domain", "S3", "--domain", "FTP", "--yes", "--wait")
		if !strings.Contains(out, "S3") || !strings.Contains(out, "FTP") {
			t.Errorf("rekey start --wait printed %q; want it to name S3 and FTP", out)
		}
		after := d.keyIDs()
		for _, dom := range clusterDomains {
			changed := after[dom] != before[dom]
			if want := dom == "S3" || dom == "FTP"; changed != want {
				t.Errorf("%s key id changed: %v, want %v", dom, changed, want)
			}
		}
		if d.sedKeyID() != sedBefore {
			t.Errorf("a cluster rekey of S3 and FTP changed the SED key id")
		}
		checkAll(d)
	})

	t.Run("events", func(t *testing.T) {
		d := d.in(t)
		evs := d.events()
		ids := d.keyIDs()
		for _, dom := range clusterDomains {
			want := 1
			if dom == "S3" || dom == "FTP" {
				want = 2
			}
			if got := countEvents(evs, "KeyManagerRekeyCompleted", dom); got != want {
				t.Errorf("%d KeyManagerRekeyCompleted events for %s, want %d", got, dom, want)
			}
		}
		if got := countEvents(evs, "KeyManagerRekeyCompleted", "SED"); got != 1 {
			t.Errorf("%d KeyManagerRekeyCompleted events for SED, want 1", got)
		}
		var last = map[string]event{}
		for i, e := range evs {
			if e.Name != "KeyManagerRekeyCompleted" {
				t.Errorf("unexpected event %+v", e)
			}
			if i > 0 && e.Seq <= evs[i-1].Seq {
				t.Errorf("events not in order: seq %d after %d", e.Seq, evs[i-1].Seq)
			}
			if e.Time.IsZero() || e.Message == "" {
				t.Errorf("event %+v: want a time and a message", e)
			}
			wantScope := "cluster"
			if e.Domain == "SED" {
				wantScope = "sed"
			}
			if e.Scope != wantScope {
				t.Errorf("event %+v: scope %q, want %q", e, e.Scope, wantScope)
			}
			last[e.Domain] = e
		}
		for _, dom := range clusterDomains {
			if e := last[dom]; e.KeyID != "" && e.KeyID != ids[dom] {
				t.Errorf("last completed event of %s names key %s, current key is %s", dom, e.KeyID, ids[dom])
			}
		}
		if e := last["SED"]; e.Node != 1 {
			t.Errorf("SED event %+v: want node 1", e)
		}
		// --since keeps only the later events: those of S3 and FTP.
		var el eventList
		decodeJSON(t, "events list --since", d.must("events", "list", "--since", since.Format(time.RFC3339Nano), "-o", "json"), &el)
		var doms []string
		for _, e := range el.Events {
			doms = append(doms, e.Domain)
		}
		slices.Sort(doms)
		if !slices.Equal(doms, []string{"FTP", "S3"}) {
			t.Errorf("events list --since %s: events of %v, want FTP and S3", since.Format(time.RFC3339Nano), doms)
		}
	})

	t.Run("events survive a restart", func(t *testing.T) {
		d := d.in(t)
		before := d.events()
		d.restart()
		if after := d.events(); !slices.EqualFunc(before, after, func(a, b event) bool {
			return a.Seq == b.Seq && a.Name == b.Name && a.Domain == b.Domain && a.Time.Equal(b.Time) && a.KeyID == b.KeyID
		}) {
			t.Errorf("events after restart:\n%+v\nwant\n%+v", after, before)
		}
		checkAll(d)
	})
}

// sample returns k names spread evenly over names.
func sample(names []string, k int) []string {
	if len(names) <= k {
		return names
	}
	out := make([]string, 0, k)
	for i := range k {
		out = append(out, names[i*len(names)/k])
	}
	return out
}
