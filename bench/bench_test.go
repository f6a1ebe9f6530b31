package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestQuickRun builds this program (without -race, as `make bench` runs
// it), runs it with -quick on two tiny N, and checks that BENCHMARKS.md is
// written with the machine header, the command to reproduce it, every row
// of the table and every target. kmd's own rows must hold figures (kmd is
// built from this checkout, so nothing excuses them); a SQLCipher row may
// instead say "not measured: why" when the package cannot be installed.
// It proves the harness runs end to end; it asserts nothing about time.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kmd, kmctl and this program and runs them (about 20 s)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "BENCHMARKS.md")
	cmd := exec.Command(bin, "-quick", "-n", "1000,2000", "-out", out)
	stderr, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench -quick: %v\n%s", err, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"- Machine: ", "- Go: go", "- SQLCipher: ", "- Date: ", "- Commit: ",
		"- Reproduce: ", "`go run ./bench -n 1000,2000 -runs 1 -out " + out + "`", "## Results", "## Targets"} {
		if !strings.Contains(md, want) {
			t.Errorf("BENCHMARKS.md lacks %q", want)
		}
	}
	rows := map[string]string{} // label and N -> the row's cells
	for line := range strings.SplitSeq(md, "\n") {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if strings.HasPrefix(line, "| ") && len(cells) >= 3 {
			rows[cells[0]+" @ "+cells[1]] = line
		}
	}
	measured := regexp.MustCompile(`^\| [^|]+ \| [^|]+ \| [0-9][0-9.,]*( [a-zA-Z/]+|x)? \|`)
	check := func(label, n string, mayBeUnmeasured bool) {
		t.Helper()
		line, ok := rows[label+" @ "+n]
		switch {
		case !ok:
			t.Errorf("no row %q for N=%s", label, n)
		case measured.MatchString(line):
		case mayBeUnmeasured && strings.Contains(line, "| not measured: ") && !strings.Contains(line, "not measured:  |"):
			t.Logf("row %q not measured: %s", label, line)
		default:
			t.Errorf("row %q for N=%s holds no figure: %s", label, n, line)
		}
	}
	for _, n := range []string{"1k", "2k"} {
		for _, label := range []string{rowRekey, rowRate, rowRSS, rowImport, rowImportRSS, rowAES, rowSQLBatch, rowSQLRow} {
			check(label, n, false)
		}
		check(rowCipher4k, n, true)
		found := false
		for k := range rows {
			if strings.HasPrefix(k, rowCipherDef) && strings.HasSuffix(k, " @ "+n) {
				found = true
				check(strings.TrimSuffix(k, " @ "+n), n, true)
			}
		}
		if !found {
			t.Errorf("no row %q for N=%s", rowCipherDef, n)
		}
	}
	for _, label := range []string{rowRekeyLoaded, rowFailed, rowSlowdown, rowImportRatio} {
		check(label, "2k", false)
	}
	for _, op := range []string{"GET idle", "GET during rekey", "PUT idle", "PUT during rekey"} {
		for _, m := range []string{"p50", "p99", "p99 from schedule", "p99 from send", "max", "throughput"} {
			check(op+" "+m, "2k", false)
		}
	}
	for _, label := range []string{rowTimeRatio, rowRSSRatio} {
		check(label, "2k/1k", false)
	}
	if line := rows[rowFailed+" @ 2k"]; !strings.Contains(line, "| 2k | 0 |") {
		t.Errorf("requests failed during the quick run: %s", line)
	}
	targets := []string{"rekey 2k / SQLCipher 4096-page rekey", "rekey 2k / SQLCipher default rekey", "rekey 2k / SQLite rewrite floor",
		"GET p99 during the rekey (2k)", "GET p99 during the rekey / idle p99", "failed requests", "kmd peak RSS at 2k",
		"RSS ratio 2k/1k", "time ratio 2k/1k", "import 2k / rekey 2k"}
	verdict := regexp.MustCompile(`\| (PASS|MISS|NOT MEASURED) \|$`)
	for _, name := range targets {
		line, ok := "", false
		for l := range strings.SplitSeq(md, "\n") {
			if strings.HasPrefix(l, "| "+name) {
				line, ok = l, true
			}
		}
		if !ok || !verdict.MatchString(line) {
			t.Errorf("target %q: row %q, want one ending in PASS, MISS or NOT MEASURED", name, line)
		}
		if strings.HasSuffix(line, "| NOT MEASURED |") && !strings.Contains(name, "SQLCipher") {
			t.Errorf("target %q not measured: %s", name, line)
		}
	}
}
