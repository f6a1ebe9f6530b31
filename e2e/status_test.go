package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const tableTime = "2006-01-02T15:04:05" // how tables show times (SPEC samples)

// The SPEC's field names of a status row (cluster, then sed).
var (
	clusterFields = []string{"domain", "status", "key_id", "key_created", "location", "remote_key_id", "error", "entries", "rekey", "next_retry"}
	sedFields     = []string{"node", "status", "key_id", "location", "remote_key_id", "key_created", "error", "entries", "rekey", "next_retry"}
)

// checkFields checks that every row of rowsKey in the JSON object out has
// every field of want, and that total is there.
func checkFields(t *testing.T, what, out, rowsKey string, want []string) {
	t.Helper()
	var raw map[string]json.RawMessage
	decodeJSON(t, what, out, &raw)
	if _, ok := raw["total"]; !ok {
		t.Errorf("%s: no field total", what)
	}
	var rows []map[string]json.RawMessage
	decodeJSON(t, what+" "+rowsKey, string(raw[rowsKey]), &rows)
	for i, r := range rows {
		for _, f := range want {
			if _, ok := r[f]; !ok {
				t.Errorf("%s: row %d has no field %q", what, i, f)
			}
		}
	}
}

// TestStatusAtStart checks a new kmd's cluster and sed status, in JSON and
// as the SPEC's tables, its version, and the modes of its files.
func TestStatusAtStart(t *testing.T) {
	t.Parallel()
	begin := time.Now().Add(-time.Second)
	d := startKMD(t)

	out := d.must("cluster", "status", "-o", "json")
	checkFields(t, "cluster status -o json", out, "domains", clusterFields)
	var cs clusterStatus
	decodeJSON(t, "cluster status -o json", out, &cs)
	if cs.Total != 17 || len(cs.Domains) != 17 {
		t.Fatalf("cluster status: total %d with %d rows, want 17 and 17", cs.Total, len(cs.Domains))
	}
	for i, r := range cs.Domains {
		if r.Domain != clusterDomains[i] {
			t.Errorf("cluster status row %d is %s, want %s (SPEC order)", i, r.Domain, clusterDomains[i])
		}
		if r.Status != "ACTIVE" || r.Location != "Local" || r.KeyID == "" || r.Rekey != nil ||
			r.NextRetry != nil || r.Error != "" || r.RemoteKeyID != "" || r.Entries != 0 {
			t.Errorf("cluster status %s: %+v; want ACTIVE, Local, a key id, no rekey, no retry, no error, 0 entries", r.Domain, r)
		}
		checkKeyCreated(t, r.Domain, r.KeyCreated, begin)
	}

	out = d.must("sed", "status", "-o", "json")
	checkFields(t, "sed status -o json", out, "nodes", sedFields)
	var ss sedStatus
	decodeJSON(t, "sed status -o json", out, &ss)
	if ss.Total != 1 || len(ss.Nodes) != 1 {
		t.Fatalf("sed status: total %d with %d rows, want 1 and 1", ss.Total, len(ss.Nodes))
	}
	n := ss.Nodes[0]
	if n.Node != 1 || n.Status != "LOCAL" || n.Location != "Local" || n.KeyID == "" || n.Rekey != nil ||
		n.NextRetry != nil || n.Error != "" || n.RemoteKeyID != "" {
		t.Errorf("sed status: %+v; want node 1, LOCAL, Local, a key id, no rekey, no retry, no error", n)
	}
	checkKeyCreated(t, "SED", n.KeyCreated, begin)

	t.Run("cluster table", func(t *testing.T) {
		ls := lines(d.in(t).must("cluster", "status"))
		want := 1 + 1 + 17 + 1 + 1
		if len(ls) != want {
			t.Fatalf("cluster status: %d lines, want %d:\n%s", len(ls), want, strings.Join(ls, "\n"))
		}
		// The SPEC's header is
		//	Domain     Status       Key Creation Date    Error Info(if any)
		// Columns may be added (new fields may be added), so the header is
		// checked for the SPEC's columns, in order, Domain and Status where
		// the SPEC puts them, and the rows are read by the header's columns.
		const specHeader = "Domain     Status       Key Creation Date    Error Info(if any)"
		if ls[0] != specHeader {
			t.Logf("cluster status header differs from the SPEC sample (columns added?):\n%q\n%q", ls[0], specHeader)
		}
		cols := tableColumns(t, ls[0], "Domain", "Status", "Key Creation Date", "Error Info(if any)")
		if cols["Domain"] != 0 || cols["Status"] != 11 {
			t.Errorf("cluster status header %q: want Domain at column 0 and Status at 11, as in the SPEC", ls[0])
		}
		rule := strings.Repeat("-", 72)
		if ls[1] != rule || ls[19] != rule {
			t.Errorf("cluster status rules: %q and %q, want 72 dashes", ls[1], ls[19])
		}
		if ls[20] != "Total: 17" {
			t.Errorf("cluster status last line %q, want %q", ls[20], "Total: 17")
		}
		for i, r := range cs.Domains {
			got := tableRow(ls[0], ls[2+i])
			want := map[string]string{"Domain": r.Domain, "Status": "ACTIVE",
				"Key Creation Date": r.KeyCreated.UTC().Format(tableTime), "Error Info(if any)": ""}
			if _, ok := got["Location"]; ok {
				want["Location"] = "Local"
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("cluster status row %d %q: %s is %q, want %q", i, ls[2+i], k, got[k], v)
				}
			}
		}
	})

	t.Run("sed table", func(t *testing.T) {
		ls := lines(d.in(t).must("sed", "status"))
		if len(ls) != 5 {
			t.Fatalf("sed status: %d lines, want 5:\n%s", len(ls), strings.Join(ls, "\n"))
		}
		if h := " Node Status  Location  Remote Key ID  Key Creation Date   Error Info(if any)"; ls[0] != h {
			t.Errorf("sed status header:\n%q\nwant\n%q", ls[0], h)
		}
		rule := strings.Repeat("-", 77)
		if ls[1] != rule || ls[3] != rule {
			t.Errorf("sed status rules: %q and %q, want 77 dashes", ls[1], ls[3])
		}
		if want := " " + pad("1", 5) + pad("LOCAL", 8) + pad("Local", 10) + pad("", 15) + n.KeyCreated.UTC().Format(tableTime); ls[2] != want {
			t.Errorf("sed status row:\n%q\nwant\n%q", ls[2], want)
		}
		if ls[4] != "Total: 1" {
			t.Errorf("sed status last line %q, want %q", ls[4], "Total: 1")
		}
	})

	t.Run("version", func(t *testing.T) {
		out := d.in(t).must("version")
		if !strings.Contains(out, "kmctl e2e") || !strings.Contains(out, "kmd e2e") {
			t.Errorf("kmctl version: %q; want both versions, e2e", out)
		}
		out, code, _ := runKMD(t, nil, "--version")
		if code != 0 || strings.TrimSpace(out) != "kmd e2e" {
			t.Errorf("kmd --version: exit %d, %q; want 0, %q", code, out, "kmd e2e")
		}
	})

	t.Run("file modes", func(t *testing.T) {
		fi, err := os.Stat(d.sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket %s: mode %v, want a socket of mode 0600", d.sock, fi.Mode())
		}
		keys := filepath.Join(d.dataDir, "keys")
		var domains []string
		err = filepath.WalkDir(keys, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			switch {
			case e.IsDir() && fi.Mode().Perm()&0o077 != 0:
				t.Errorf("key dir %s: mode %v, want no access for group and others", p, fi.Mode())
			case !e.IsDir() && fi.Mode().Perm() != 0o600:
				t.Errorf("key file %s: mode %v, want 0600", p, fi.Mode())
			case e.IsDir() && p != keys:
				domains = append(domains, e.Name())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := append(slices.Clone(clusterDomains), "SED")
		slices.Sort(want)
		if !slices.Equal(domains, want) {
			t.Errorf("key dirs %v, want one per domain %v", domains, want)
		}
		for _, r := range cs.Domains {
			if files := d.in(t).keyFiles(r.Domain); !slices.Equal(files, []string{r.KeyID + ".key"}) {
				t.Errorf("keys/%s holds %v, want only %s.key", r.Domain, files, r.KeyID)
			}
		}
	})
}

// checkKeyCreated checks a key creation time: UTC, second precision, made
// by this kmd.
func checkKeyCreated(t *testing.T, what string, kc, begin time.Time) {
	t.Helper()
	if kc.Location() != time.UTC || kc.Nanosecond() != 0 {
		t.Errorf("%s key_created %s: want UTC with second precision", what, kc.Format(time.RFC3339Nano))
	}
	if kc.Before(begin.Truncate(time.Second)) || kc.After(time.Now()) {
		t.Errorf("%s key_created %s: want between %s and now", what, kc, begin)
	}
}

// pad left-aligns s in a column of width n.
func pad(s string, n int) string {
	return s + strings.Repeat(" ", max(0, n-len(s)))
}

// tableColumns returns where each of titles starts in a table header; they
// must all be there, in that order.
func tableColumns(t *testing.T, header string, titles ...string) map[string]int {
	t.Helper()
	cols := map[string]int{}
	from := 0
	for _, title := range titles {
		i := strings.Index(header[from:], title)
		if i < 0 {
			t.Fatalf("table header %q: no column %q after column %d", header, title, from)
		}
		cols[title] = from + i
		from += i + len(title)
	}
	return cols
}

// tableRow reads a row by the columns of its header: each title of the
// header (words separated by one space) heads the cell below it.
func tableRow(header, row string) map[string]string {
	type col struct {
		title string
		at    int
	}
	var cols []col
	for i := 0; i < len(header); {
		for i < len(header) && header[i] == ' ' {
			i++
		}
		start := i
		for i < len(header) && !(header[i] == ' ' && (i+1 >= len(header) || header[i+1] == ' ')) {
			i++
		}
		if start < i {
			cols = append(cols, col{header[start:i], start})
		}
	}
	cells := map[string]string{}
	for j, c := range cols {
		end := len(row)
		if j+1 < len(cols) {
			end = min(end, cols[j+1].at)
		}
		if c.at < end {
			cells[c.title] = strings.TrimSpace(row[c.at:end])
		} else {
			cells[c.title] = ""
		}
	}
	return cells
}
