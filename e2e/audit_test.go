package e2e_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// auditRecord is a record of `kmctl audit list -o json` (SPEC: Access).
type auditRecord struct {
	Time    time.Time `json:"time"`
	Who     string    `json:"who"`
	Via     string    `json:"via"`
	From    string    `json:"from"`
	Action  string    `json:"action"`
	Target  string    `json:"target"`
	Detail  string    `json:"detail"`
	Outcome string    `json:"outcome"`
	Status  int       `json:"status"`
	Error   string    `json:"error"`
	Seq     int64     `json:"seq"`
}

type auditList struct {
	Records []auditRecord `json:"records"`
}

func (d *daemon) audit(args ...string) []auditRecord {
	d.t.Helper()
	var l auditList
	decodeJSON(d.t, "audit list -o json", d.must(append([]string{"audit", "list", "-o", "json"}, args...)...), &l)
	return l.Records
}

// TestAudit drives the real kmd with the real kmctl: entry writes and
// deletes, a rekey and a schedule change are in the audit trail with who
// made them and from where, refusals too, reads are not, no value is in
// the file, and the trail survives a restart and a kill -9.
func TestAudit(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	const value = "AUDIT-E2E-VALUE-2b7e"
	begin := time.Now()

	d.mustIn([]byte(value), "entry", "put", "FTP", "admin/password")
	d.get("FTP", "admin/password")
	d.must("entry", "delete", "FTP", "admin/password")
	if _, stderr, code := d.kmctl("entry", "delete", "FTP", "admin/password"); code != 1 {
		t.Fatalf("delete of a deleted entry: exit %d, want 1: %s", code, stderr)
	}
	d.must("cluster", "rekey", "start", "--domain", "FTP", "--yes", "--wait")
	d.must("cluster", "rekey", "modify", "--key-rotation", "6W")
	if _, stderr, code := d.kmctl("sed", "rekey", "modify", "--key-rotation", "6X"); code != 2 {
		t.Fatalf("modify 6X: exit %d, want 2: %s", code, stderr)
	}
	d.clusterStatus()
	d.events()

	type row struct{ action, target, outcome string }
	want := []row{
		{"entry.put", "FTP/admin/password", "ok"},
		{"entry.delete", "FTP/admin/password", "ok"},
		{"entry.delete", "FTP/admin/password", "refused"},
		{"rekey.start", "cluster:FTP", "ok"},
		{"rekey.modify", "cluster", "ok"},
	}
	check := func(t *testing.T, recs []auditRecord, want []row) {
		t.Helper()
		var got []row
		for _, r := range recs {
			got = append(got, row{r.Action, r.Target, r.Outcome})
		}
		if !slices.Equal(got, want) {
			t.Fatalf("audit trail:\n%v\nwant:\n%v", got, want)
		}
		for i, r := range recs {
			if r.Who != "uid 0" || r.Via != "socket" || r.From != "unix:"+d.sock {
				t.Errorf("record %d (%s): who %q via %q from %q; want uid 0 over the socket unix:%s", i+1, r.Action, r.Who, r.Via, r.From, d.sock)
			}
			if r.Seq != int64(i+1) || r.Time.Before(begin) || r.Time.After(time.Now()) {
				t.Errorf("record %d (%s): seq %d, time %v", i+1, r.Action, r.Seq, r.Time)
			}
			if (r.Outcome == "ok") != (r.Error == "") {
				t.Errorf("record %d (%s): outcome %s with error %q", i+1, r.Action, r.Outcome, r.Error)
			}
		}
	}
	recs := d.audit()
	check(t, recs, want)
	for i, detail := range map[int]string{0: "version=1", 3: "started=FTP", 4: "key_rotation=6W"} {
		if recs[i].Detail != detail {
			t.Errorf("%s detail %q, want %q", recs[i].Action, recs[i].Detail, detail)
		}
	}
	if r := recs[2]; r.Status != 404 || !strings.Contains(r.Error, "admin/password") {
		t.Errorf("refused delete: status %d, error %q", r.Status, r.Error)
	}

	t.Run("table and flags", func(t *testing.T) {
		d := d.in(t)
		out := d.must("audit", "list")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 6 || !strings.HasPrefix(lines[0], "Time") || !strings.Contains(lines[0], "Outcome") {
			t.Fatalf("audit list table:\n%s", out)
		}
		for _, s := range []string{"uid 0", "unix:" + d.sock, "rekey.modify", "cluster:FTP", "refused: "} {
			if !strings.Contains(out, s) {
				t.Errorf("audit list table lacks %q:\n%s", s, out)
			}
		}
		if got := d.audit("--limit", "2"); len(got) != 2 || got[0].Seq != 4 || got[1].Seq != 5 {
			t.Errorf("--limit 2: %+v; want records 4 and 5", got)
		}
		since := recs[3].Time.Format(time.RFC3339Nano)
		if got := d.audit("--since", since); len(got) != 2 || got[0].Seq != 4 {
			t.Errorf("--since %s: %+v; want records 4 and 5", since, got)
		}
		for _, args := range [][]string{{"--limit", "0"}, {"--limit", "x"}, {"--since", "yesterday"}} {
			stdout, stderr, code := d.kmctl(append([]string{"audit", "list"}, args...)...)
			if first, _, _ := strings.Cut(stderr, "\n"); code != 2 || stdout != "" || !strings.HasPrefix(first, "kmctl: error: invalid "+args[0]) {
				t.Errorf("audit list %v: exit %d, stderr %q; want 2 and one line saying what is wrong", args, code, stderr)
			}
		}
	})

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(d.dataDir, "audit.log")
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("audit.log: %v, mode %v; want 0600", err, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(path)
		if n := strings.Count(string(b), "\n"); n != 5 {
			t.Errorf("audit.log has %d lines, want 5", n)
		}
		for _, s := range []string{value, base64.StdEncoding.EncodeToString([]byte(value))[:16]} {
			if strings.Contains(string(b), s) {
				t.Errorf("audit.log holds the entry value (%q):\n%s", s, b)
			}
		}
	})

	t.Run("survives restart and kill -9", func(t *testing.T) {
		d := d.in(t)
		d.restart()
		check(t, d.audit(), want)
		d.must("sed", "rekey", "modify", "--key-rotation", "Never")
		d.kill9()
		d.start()
		check(t, d.audit(), append(want, row{"rekey.modify", "sed", "ok"}))
	})
}
