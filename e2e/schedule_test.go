package e2e_test

import (
	"maps"
	"strings"
	"testing"
	"time"
)

// TestSchedules sets rotation schedules, checks view (JSON and table),
// that they survive a restart, and that a short SED rotation rekeys by
// itself until it is set to Never.
func TestSchedules(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	clusterKeys := d.keyIDs()

	t.Run("before any schedule", func(t *testing.T) {
		d := d.in(t)
		for _, scope := range []string{"cluster", "sed"} {
			v := d.rekeyView(scope)
			if v.RekeyTime != "1970-01-01T00:00:00Z" || v.KeyRotation != "Never" || v.NextRekey != "Never" {
				t.Errorf("%s rekey view -o json at start: %+v; want rekey_time 1970-01-01T00:00:00Z, Never, Never", scope, v)
			}
			checkViewTable(t, d, scope, v)
		}
	})

	var view6W rekeyView
	t.Run("modify and view", func(t *testing.T) {
		d := d.in(t)
		for _, tc := range []struct {
			rotation string
			next     func(time.Time) time.Time
		}{
			{"2M", func(t time.Time) time.Time { return t.AddDate(0, 2, 0) }},
			{"1Y", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
			{"30D", func(t time.Time) time.Time { return t.AddDate(0, 0, 30) }},
			{"6W", func(t time.Time) time.Time { return t.Add(42 * 24 * time.Hour) }},
		} {
			begin := time.Now().UTC().Truncate(time.Second)
			out := d.must("cluster", "rekey", "modify", "--key-rotation", tc.rotation, "-o", "json")
			var printed rekeyView
			decodeJSON(t, "rekey modify -o json", out, &printed)
			v := d.rekeyView("cluster")
			if printed != v {
				t.Errorf("rekey modify printed %+v, view says %+v", printed, v)
			}
			rt := parseTime(t, "rekey_time", v.RekeyTime)
			if v.KeyRotation != tc.rotation {
				t.Errorf("key_rotation %q after modify --key-rotation %s", v.KeyRotation, tc.rotation)
			}
			if rt.Before(begin) || rt.After(time.Now()) {
				t.Errorf("rekey_time %s after modify at %s: want the time of the modify", rt, begin)
			}
			if next := parseTime(t, "next_rekey", v.NextRekey); !next.Equal(tc.next(rt)) {
				t.Errorf("key rotation %s: next_rekey %s, want %s (rekey_time %s + %s)", tc.rotation, next, tc.next(rt), rt, tc.rotation)
			}
			checkViewTable(t, d, "cluster", v)
			view6W = v
		}
		if v := d.rekeyView("sed"); v.KeyRotation != "Never" {
			t.Errorf("a cluster modify changed the sed schedule: %+v", v)
		}
	})

	t.Run("persisted across restart", func(t *testing.T) {
		d := d.in(t)
		d.restart()
		if v := d.rekeyView("cluster"); v != view6W {
			t.Errorf("cluster rekey view after restart: %+v, want %+v", v, view6W)
		}
		checkViewTable(t, d, "cluster", view6W)
	})

	t.Run("a rekey due while kmd was down runs once at start", func(t *testing.T) {
		d := d.in(t)
		before := d.sedKeyID()
		d.must("sed", "rekey", "modify", "--key-rotation", "10s")
		next := parseTime(t, "next_rekey", d.rekeyView("sed").NextRekey)
		d.stop()
		time.Sleep(time.Until(next) + time.Second) // kmd is down: nothing to poll
		restarted := time.Now()
		d.start()
		if !waitSEDKeyChange(d, before, 15*time.Second) {
			t.Fatalf("the SED rekey due while kmd was down did not run at start")
		}
		d.must("sed", "rekey", "modify", "--key-rotation", "Never")
		n := 0
		for _, e := range d.events() {
			if e.Name == "KeyManagerRekeyCompleted" && e.Domain == "SED" && e.Time.After(restarted) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d SED rekeys completed after the restart, want 1", n)
		}
	})

	t.Run("sed rotation runs by itself", func(t *testing.T) {
		d := d.in(t)
		first := d.sedKeyID()
		d.must("sed", "rekey", "modify", "--key-rotation", "3s")
		if !waitSEDKeyChange(d, first, 15*time.Second) {
			t.Fatalf("with key rotation 3s the SED key id did not change within 15s")
		}
		// And again: each rekey resets the clock, the next is due 3s later.
		second := d.sedKeyID()
		view := d.rekeyView("sed")
		if !waitSEDKeyChange(d, second, 20*time.Second) {
			t.Errorf("with key rotation 3s, no second automatic SED rekey within 20s of the first; "+
				"rekey view said next rekey %s, it is now %s", view.NextRekey, time.Now().UTC().Format(time.RFC3339))
		}
		d.must("sed", "rekey", "modify", "--key-rotation", "Never")
		if !waitUntil(time.Minute, func() bool { return d.sedStatus().Nodes[0].Status == "LOCAL" }) {
			t.Fatalf("SED not LOCAL after setting Never")
		}
		k := d.sedKeyID()
		time.Sleep(8 * time.Second) // nothing may happen meanwhile
		if n := d.sedStatus().Nodes[0]; n.KeyID != k || n.Status != "LOCAL" {
			t.Errorf("with key rotation Never the SED changed: %+v, key was %s", n, k)
		}
		if v := d.rekeyView("sed"); v.KeyRotation != "Never" || v.NextRekey != "Never" || v.LastResult != "succeeded" {
			t.Errorf("sed rekey view: %+v; want Never, Never, last result succeeded", v)
		}
		if got := countEvents(d.events(), "KeyManagerRekeyCompleted", "SED"); got < 1 {
			t.Errorf("no KeyManagerRekeyCompleted event for the scheduled SED rekeys")
		}
	})

	// The 6W cluster schedule never fired.
	if after := d.keyIDs(); !maps.Equal(after, clusterKeys) {
		t.Errorf("cluster key ids changed without a rekey due")
	}
}

// waitSEDKeyChange polls until the SED key id is not from and SED is LOCAL
// again; it reports whether that happened within timeout.
func waitSEDKeyChange(d *daemon, from string, timeout time.Duration) bool {
	return waitUntil(timeout, func() bool {
		out, _, code := d.kmctlQuiet(nil, "sed", "status", "-o", "json")
		var ss sedStatus
		return code == 0 && decodeQuiet(out, &ss) && len(ss.Nodes) == 1 &&
			ss.Nodes[0].KeyID != from && ss.Nodes[0].Status == "LOCAL"
	})
}

// checkViewTable checks the table form of `rekey view` against v.
func checkViewTable(t *testing.T, d *daemon, scope string, v rekeyView) {
	t.Helper()
	next := v.NextRekey
	if next != "Never" {
		next = parseTime(t, "next_rekey", next).Format(tableTime)
	}
	want := []string{
		"Rekey Time: " + parseTime(t, "rekey_time", v.RekeyTime).Format(tableTime),
		"Key Rotation: " + v.KeyRotation,
		"Next Rekey: " + next,
		"Last Result: " + v.LastResult,
	}
	got := lines(d.in(t).must(scope, "rekey", "view"))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s rekey view:\n%s\nwant\n%s", scope, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func parseTime(t *testing.T, what, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("%s %q: want an RFC 3339 time: %v", what, s, err)
	}
	if !strings.HasSuffix(s, "Z") || tm.Nanosecond() != 0 {
		t.Errorf("%s %q: want UTC, second precision", what, s)
	}
	return tm.UTC()
}
