package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// stat is one measured quantity over runs, or why it was not measured.
type stat struct {
	vals []float64
	err  string
}

func (s *stat) add(v float64) { s.vals = append(s.vals, v) }

// fail records the first reason a run could not be measured.
func (s *stat) fail(err error) {
	if s.err == "" {
		s.err = strings.ReplaceAll(err.Error(), "\n", " ")
		if len(s.err) > 160 {
			s.err = s.err[:160] + "…"
		}
	}
}

// ok: at least one run measured and none failed.
func (s stat) ok() bool { return len(s.vals) > 0 && s.err == "" }

func (s stat) median() float64 {
	v := slices.Clone(s.vals)
	slices.Sort(v)
	if len(v) == 0 {
		return math.NaN()
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (s stat) min() float64 { return slices.Min(s.vals) }
func (s stat) max() float64 { return slices.Max(s.vals) }

// nResult holds what was measured for one N.
type nResult struct {
	n                   int
	rekey, rate, rss    stat // kmd: seconds, entries/s, MiB
	importSec           stat
	importRSS           stat // kmd's peak RSS over the import, MiB
	aes                 stat // floors, seconds
	sqlBatch, sqlRow    stat
	cipherDef, cipher4k stat // SQLCipher rekey, seconds
	cipherDefPage       string
}

func (r *nResult) kmdStats() []*stat {
	return []*stat{&r.rekey, &r.rate, &r.rss, &r.importSec, &r.importRSS}
}

// loadStats are one operation's figures over the load windows.
type loadStats struct {
	p50, p99, max, tput stat
	p99send, p99sched   stat
	count, failures     int
	firstErr            string
}

func (l *loadStats) add(r opResult) {
	l.p50.add(r.P50ms)
	l.p99.add(r.P99ms)
	l.p99send.add(r.P99SendMs)
	l.p99sched.add(r.P99SchedMs)
	l.max.add(r.Maxms)
	l.tput.add(r.Throughput)
	l.count += r.Count
	l.failures += r.Failures
	if l.firstErr == "" {
		l.firstErr = r.FirstError
	}
}

func (l *loadStats) fail(err error) {
	for _, s := range []*stat{&l.p50, &l.p99, &l.p99send, &l.p99sched, &l.max, &l.tput} {
		s.fail(err)
	}
}

// onlineResult holds the entries-API measurements at the largest N.
type onlineResult struct {
	n                                      int
	rekeyLoaded                            stat
	getIdle, getLoaded, putIdle, putLoaded loadStats
}

func (o *onlineResult) fail(err error) {
	o.rekeyLoaded.fail(err)
	for _, l := range []*loadStats{&o.getIdle, &o.getLoaded, &o.putIdle, &o.putLoaded} {
		l.fail(err)
	}
}

func (o *onlineResult) loads() []*loadStats {
	return []*loadStats{&o.getIdle, &o.getLoaded, &o.putIdle, &o.putLoaded}
}

type report struct {
	opts    options
	machine machine
	started time.Time
	took    time.Duration
	results []*nResult
	online  *onlineResult
}

// kmdFailures lists the measurements of kmd that could not be made.
func (rp *report) kmdFailures() []string {
	var bad []string
	for _, r := range rp.results {
		for _, s := range r.kmdStats() {
			if s.err != "" {
				bad = append(bad, fmt.Sprintf("N=%d: %s", r.n, s.err))
				break
			}
		}
	}
	if o := rp.online; o != nil && o.rekeyLoaded.err != "" {
		bad = append(bad, fmt.Sprintf("online: %s", o.rekeyLoaded.err))
	}
	return bad
}

// num prints a figure with three significant digits or so.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "?"
	case a >= 1000:
		return thousands(int64(math.Round(v)))
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func thousands(v int64) string {
	s := fmt.Sprint(v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// nLabel: 100k, 1M, 2000.
func nLabel(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// The rows' labels; bench_test.go checks that every one is in the table.
const (
	rowRekey       = "kmd rekey (kmctl cluster rekey start --wait)"
	rowRate        = "kmd rekey throughput"
	rowRSS         = "kmd peak RSS during the rekey (VmHWM)"
	rowImport      = "kmctl entry import"
	rowImportRSS   = "kmd peak RSS during the import (VmHWM)"
	rowAES         = "floor: AES-256-GCM open+seal (Go crypto)"
	rowSQLBatch    = "floor: SQLite rewrite, one UPDATE per batch (id range, randomblob)"
	rowSQLRow      = "floor: SQLite rewrite, one UPDATE per row (bound values)"
	rowCipherDef   = "SQLCipher PRAGMA rekey, defaults"
	rowCipher4k    = "SQLCipher PRAGMA rekey, 4096-byte pages"
	rowRekeyLoaded = "kmd rekey under load"
	rowFailed      = "failed requests (all windows)"
	rowTimeRatio   = "growth: rekey time ratio"
	rowRSSRatio    = "growth: peak RSS ratio"
	rowImportRatio = "import time / rekey time"
	rowSlowdown    = "rekey time under load / without"
)

type table struct{ b strings.Builder }

func (t *table) row(cells ...string) {
	t.b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

// statRow renders a measured row: median, min-max, runs, and a rate of N
// per median when perSec.
func (t *table) statRow(label string, n int, s stat, unit string, perSec bool) {
	if !s.ok() {
		why := s.err
		if why == "" {
			why = "no run"
		}
		t.row(label, nLabel(n), "not measured: "+why, "", "", "")
		return
	}
	rate := ""
	if perSec {
		rate = num(float64(n)/s.median()) + " entries/s"
	}
	t.row(label, nLabel(n), num(s.median())+" "+unit, num(s.min())+" – "+num(s.max())+" "+unit, fmt.Sprint(len(s.vals)), rate)
}

func (t *table) ratioRow(label, n string, a, b stat, unit string) {
	if !a.ok() || !b.ok() {
		t.row(label, n, "not measured: "+firstErr(a, b), "", "", "")
		return
	}
	t.row(label, n, num(a.median()/b.median())+unit, "", "", "medians")
}

func firstErr(ss ...stat) string {
	for _, s := range ss {
		if s.err != "" {
			return s.err
		}
		if len(s.vals) == 0 {
			return "no run"
		}
	}
	return ""
}

// target is one issue-6 target: a measured ratio (or figure) against its
// limit.
type target struct {
	name, limit string
	v           float64
	max         float64
	unit        string
	why         string // not empty: not measured, and why
}

func (rp *report) targets() []target {
	big := rp.results[len(rp.results)-1]
	nb := nLabel(big.n)
	ratio := func(name string, a, b stat, lim float64) target {
		t := target{name: name, max: lim, unit: "x", limit: fmt.Sprintf("≤ %sx", num(lim))}
		if !a.ok() || !b.ok() {
			t.why = firstErr(a, b)
			return t
		}
		t.v = a.median() / b.median()
		return t
	}
	ts := []target{
		ratio("rekey "+nb+" / SQLCipher 4096-page rekey", big.rekey, big.cipher4k, 1.0),
		ratio("rekey "+nb+" / SQLCipher default rekey", big.rekey, big.cipherDef, 0.5),
	}
	// The floor is the faster of the two SQLite rewrites: one UPDATE
	// statement per batch, or one per row in the batch's transaction.
	floor, how := big.sqlBatch, "one UPDATE per batch"
	if big.sqlRow.ok() && (!floor.ok() || big.sqlRow.median() < floor.median()) {
		floor, how = big.sqlRow, "one UPDATE per row"
	}
	ts = append(ts, ratio("rekey "+nb+" / SQLite rewrite floor ("+how+", the faster)", big.rekey, floor, 1.3))
	on := rp.online
	p99 := target{name: "GET p99 during the rekey (" + nLabel(on.n) + ")", max: 2, unit: " ms", limit: "≤ 2 ms"}
	if on.getLoaded.p99.ok() {
		p99.v = on.getLoaded.p99.median()
	} else {
		p99.why = firstErr(on.getLoaded.p99)
	}
	ts = append(ts, p99, ratio("GET p99 during the rekey / idle p99", on.getLoaded.p99, on.getIdle.p99, 2))
	failed := target{name: "failed requests", max: 0, unit: "", limit: "= 0"}
	if on.getLoaded.p99.ok() && on.getIdle.p99.ok() {
		for _, l := range on.loads() {
			failed.v += float64(l.failures)
		}
	} else {
		failed.why = firstErr(on.getIdle.p99, on.getLoaded.p99)
	}
	rss := target{name: "kmd peak RSS at " + nb, max: 100, unit: " MiB", limit: "≤ 100 MiB"}
	if big.rss.ok() {
		rss.v = big.rss.median()
	} else {
		rss.why = firstErr(big.rss)
	}
	ts = append(ts, failed, rss)
	if len(rp.results) < 2 {
		for _, name := range []string{"RSS ratio", "time ratio"} {
			ts = append(ts, target{name: name, limit: "", why: "needs two N (-n a,b)"})
		}
	} else {
		small := rp.results[0]
		g := nb + "/" + nLabel(small.n)
		ts = append(ts, ratio("RSS ratio "+g, big.rss, small.rss, 1.2))
		// 11 for 1M/100k: linear growth plus 10%.
		ts = append(ts, ratio("time ratio "+g, big.rekey, small.rekey, 1.1*float64(big.n)/float64(small.n)))
	}
	ts = append(ts, ratio("import "+nb+" / rekey "+nb, big.importSec, big.rekey, 2))
	return ts
}

func (rp *report) render() string {
	m := rp.machine
	var b strings.Builder
	fmt.Fprintf(&b, "# kmd benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (bench/, issue 6). Every figure below comes from one run of the program on one machine.\n\n")
	fmt.Fprintf(&b, "- Machine: %s, %d cores, %.1f GiB RAM, %s\n", m.cpu, m.cores, m.memGiB, m.kernel)
	fmt.Fprintf(&b, "- Go: %s\n", m.goVersion)
	fmt.Fprintf(&b, "- SQLCipher: %s\n", m.sqlcipher)
	fmt.Fprintf(&b, "- Date: %s (the run took %s)\n", rp.started.Format(time.RFC3339), rp.took.Round(time.Second))
	fmt.Fprintf(&b, "- Commit: %s\n", m.commit)
	fmt.Fprintf(&b, "- Reproduce: from the repository root, as root (it may `apt-get install -y sqlcipher`): `%s`\n", rp.opts.command())
	fmt.Fprintf(&b, "- Method: each figure is the median of the runs, min – max beside it. kmd and kmctl are built without -race from this checkout. "+
		"A rekey is timed from `kmctl cluster rekey start --domain %s --yes --wait` to its return, on a daemon that holds N entries of %d-byte values "+
		"(imported with `kmctl entry import`, timed once per N, then kmd restarted); its peak RSS is VmHWM, reset before each rekey. "+
		"Online: a separate process sends %d GET/s and %d PUT/s (open loop; latency from each request's release by the load generator's timer, waits for a free worker included; `from schedule` adds the timer's own lateness, `from send` leaves out the wait for a worker) over the unix socket, "+
		"idle and during %d further rekeys of the largest N; each window begins after the load has run %v, unmeasured. See bench/README.md.\n\n",
		rp.opts.domain, valueSize, rp.opts.load.getRate, rp.opts.load.putRate, rp.opts.runs, rp.opts.load.warmup)

	var t table
	t.row("Measurement", "N", "Median", "Min – max", "Runs", "Rate")
	t.row("---", "---", "---", "---", "---", "---")
	for _, r := range rp.results {
		t.statRow(rowRekey, r.n, r.rekey, "s", true)
		t.statRow(rowRate, r.n, r.rate, "entries/s", false)
		t.statRow(rowRSS, r.n, r.rss, "MiB", false)
		t.statRow(rowImport, r.n, r.importSec, "s", true)
		t.statRow(rowImportRSS, r.n, r.importRSS, "MiB", false)
		t.statRow(rowAES, r.n, r.aes, "s", true)
		t.statRow(rowSQLBatch, r.n, r.sqlBatch, "s", true)
		t.statRow(rowSQLRow, r.n, r.sqlRow, "s", true)
		label := rowCipherDef
		if r.cipherDefPage != "" {
			label += " (" + r.cipherDefPage + "-byte pages)"
		}
		t.statRow(label, r.n, r.cipherDef, "s", true)
		t.statRow(rowCipher4k, r.n, r.cipher4k, "s", true)
	}
	on := rp.online
	t.statRow(rowRekeyLoaded, on.n, on.rekeyLoaded, "s", true)
	for _, x := range []struct {
		name string
		l    *loadStats
	}{{"GET idle", &on.getIdle}, {"GET during rekey", &on.getLoaded}, {"PUT idle", &on.putIdle}, {"PUT during rekey", &on.putLoaded}} {
		t.statRow(x.name+" p50", on.n, x.l.p50, "ms", false)
		t.statRow(x.name+" p99", on.n, x.l.p99, "ms", false)
		t.statRow(x.name+" p99 from schedule", on.n, x.l.p99sched, "ms", false)
		t.statRow(x.name+" p99 from send", on.n, x.l.p99send, "ms", false)
		t.statRow(x.name+" max", on.n, x.l.max, "ms", false)
		t.statRow(x.name+" throughput", on.n, x.l.tput, "req/s", false)
	}
	failed, total, firstErr := 0, 0, ""
	for _, l := range on.loads() {
		failed += l.failures
		total += l.count
		if firstErr == "" {
			firstErr = l.firstErr
		}
	}
	if on.getIdle.p99.ok() && on.getLoaded.p99.ok() {
		note := fmt.Sprintf("of %s", thousands(int64(total)))
		if firstErr != "" {
			note += "; first: " + firstErr
		}
		t.row(rowFailed, nLabel(on.n), fmt.Sprint(failed), "", "", note)
	} else {
		t.row(rowFailed, nLabel(on.n), "not measured: "+firstErr2(on), "", "", "")
	}
	big := rp.results[len(rp.results)-1]
	t.ratioRow(rowSlowdown, nLabel(on.n), on.rekeyLoaded, big.rekey, "x")
	if len(rp.results) >= 2 {
		small := rp.results[0]
		g := nLabel(big.n) + "/" + nLabel(small.n)
		t.ratioRow(rowTimeRatio, g, big.rekey, small.rekey, "x")
		t.ratioRow(rowRSSRatio, g, big.rss, small.rss, "x")
	} else {
		t.row(rowTimeRatio, nLabel(big.n), "not measured: needs two N (-n a,b)", "", "", "")
		t.row(rowRSSRatio, nLabel(big.n), "not measured: needs two N (-n a,b)", "", "", "")
	}
	t.ratioRow(rowImportRatio, nLabel(big.n), big.importSec, big.rekey, "x")
	b.WriteString("## Results\n\n")
	b.WriteString(t.b.String())

	b.WriteString("\n## Targets (issue 6)\n\n")
	var tt table
	tt.row("Target", "Measured", "Limit", "Result")
	tt.row("---", "---", "---", "---")
	for _, x := range rp.targets() {
		if x.why != "" {
			tt.row(x.name, "not measured: "+x.why, x.limit, "NOT MEASURED")
			continue
		}
		res := "PASS"
		if x.v > x.max {
			res = "MISS"
		}
		v := num(x.v)
		if x.unit == "" {
			v = fmt.Sprintf("%.0f", x.v) // a count
		}
		tt.row(x.name, v+x.unit, x.limit, res)
	}
	b.WriteString(tt.b.String())
	return b.String()
}

func firstErr2(on *onlineResult) string {
	if s := firstErr(on.getIdle.p99, on.getLoaded.p99); s != "" {
		return s
	}
	return "no run"
}
