// Command bench is `make bench` (issue 6): it measures kmd's rekey through
// the real daemon and kmctl, the floors under it (Go's AES-256-GCM, SQLite
// rewriting the same rows), its peer (SQLCipher's PRAGMA rekey), the
// entries API under a rekey (from a separate load-generator process), growth
// from one N to the next, and kmctl entry import, all in one run on one
// machine. It prints one table and writes it to BENCHMARKS.md with how to
// reproduce it. It asserts nothing about time: each target is printed as a
// ratio with PASS or MISS beside it.
//
//	go run ./bench [-n 100000,1000000] [-runs 3] [-out BENCHMARKS.md] [-quick]
//	bench loadgen -socket S -n N ...   (the load generator; run by bench itself)
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loadgen" {
		if err := runLoadgen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	os.Exit(code)
}

// options are the command line.
type options struct {
	ns     []int
	runs   int
	out    string
	quick  bool
	domain string
	load   loadOptions
	// minWindow bounds an idle load window from below.
	minWindow time.Duration
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	nList := fs.String("n", "100000,1000000", "comma-separated entry counts N; the largest also gets the online (load) measurements")
	var o options
	fs.IntVar(&o.runs, "runs", 3, "runs of each measurement (the import runs once per N)")
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "file the table is written to")
	fs.BoolVar(&o.quick, "quick", false, "smoke test: N=10000,20000 and 1 run unless -n or -runs is given")
	fs.StringVar(&o.domain, "domain", "S3", "the cluster domain that is filled and rekeyed")
	fs.IntVar(&o.load.getRate, "get-rate", 1000, "online load: entries-API GETs per second")
	fs.IntVar(&o.load.putRate, "put-rate", 100, "online load: entries-API PUTs per second")
	fs.IntVar(&o.load.workers, "workers", 8, "online load: concurrent requests per operation at most")
	fs.DurationVar(&o.load.warmup, "warmup", time.Second, "online load: how long the load runs before each window, not measured")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick && !set["n"] {
		*nList = "10000,20000"
	}
	if o.quick && !set["runs"] {
		o.runs = 1
	}
	for f := range strings.SplitSeq(*nList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-n: %q is not a positive count", f)
		}
		o.ns = append(o.ns, n)
	}
	slices.Sort(o.ns)
	o.ns = slices.Compact(o.ns)
	if o.runs < 1 {
		return o, errors.New("-runs: want at least 1")
	}
	if o.load.getRate < 1 || o.load.putRate < 0 || o.load.workers < 1 || o.load.warmup < 0 {
		return o, errors.New("-get-rate and -workers must be >= 1, -put-rate and -warmup >= 0")
	}
	o.minWindow = 2 * time.Second
	if o.quick {
		o.minWindow = time.Second
	}
	return o, nil
}

// command is the command line that reproduces this run.
func (o options) command() string {
	ns := make([]string, len(o.ns))
	for i, n := range o.ns {
		ns[i] = strconv.Itoa(n)
	}
	c := fmt.Sprintf("go run ./bench -n %s -runs %d -out %s", strings.Join(ns, ","), o.runs, o.out)
	if o.load != (loadOptions{getRate: 1000, putRate: 100, workers: 8, warmup: time.Second}) {
		c += fmt.Sprintf(" -get-rate %d -put-rate %d -workers %d -warmup %v", o.load.getRate, o.load.putRate, o.load.workers, o.load.warmup)
	}
	if o.domain != "S3" {
		c += " -domain " + o.domain
	}
	return c
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run measures everything and writes the report. Exit status 1 when a
// measurement of kmd itself could not be made (the table is written all
// the same); a MISS is not a failure.
func run(args []string) (int, error) {
	o, err := parseFlags(args)
	if err != nil {
		return 2, err
	}
	root, err := moduleRoot()
	if err != nil {
		return 1, err
	}
	rep := &report{opts: o, machine: machineInfo(root), started: time.Now().UTC()}
	logf("building kmd and kmctl (no -race) from %s", root)
	bins, err := buildBinaries(root)
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(bins.dir)
	cipherBin, cipherErr := ensureSQLCipher(logf)
	if cipherErr == nil {
		rep.machine.sqlcipher = sqlcipherVersion(cipherBin)
	} else {
		logf("SQLCipher rows will be not measured: %v", cipherErr)
	}
	for _, n := range o.ns {
		r := &nResult{n: n}
		rep.results = append(rep.results, r)
		var on *onlineResult
		if n == o.ns[len(o.ns)-1] {
			on = &onlineResult{n: n}
			rep.online = on
		}
		measureKMD(o, bins, r, on)
		measureFloors(o, r)
		if cipherErr != nil {
			for _, s := range []*stat{&r.cipherDef, &r.cipher4k} {
				s.fail(fmt.Errorf("sqlcipher unavailable: %v", cipherErr))
			}
		} else {
			measureSQLCipher(o, cipherBin, r)
		}
	}
	rep.took = time.Since(rep.started)
	text := rep.render()
	fmt.Print(text)
	if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
		return 1, err
	}
	logf("wrote %s (%v)", o.out, rep.took.Round(time.Second))
	if bad := rep.kmdFailures(); len(bad) > 0 {
		return 1, fmt.Errorf("kmd measurements failed: %s", strings.Join(bad, "; "))
	}
	return 0, nil
}

// measureKMD fills a fresh kmd's domain with N entries through kmctl entry
// import (timed: the import measurement), restarts kmd so the import's
// memory is not counted in the rekey's RSS, then times o.runs rekeys on
// that daemon; with on set, it then measures the entries API idle and
// during o.runs more rekeys.
func measureKMD(o options, bins *binaries, r *nResult, on *onlineResult) {
	fail := func(err error) {
		logf("N=%d: kmd: %v", r.n, err)
		for _, s := range r.kmdStats() {
			s.fail(err)
		}
		if on != nil {
			on.fail(err)
		}
	}
	d, err := newDaemon(bins)
	if err != nil {
		fail(err)
		return
	}
	defer d.close()
	if err := d.start(); err != nil {
		fail(err)
		return
	}
	file := filepath.Join(d.root, "import.jsonl")
	if err := writeImportFile(file, r.n, uint64(r.n)); err != nil {
		fail(err)
		return
	}
	logf("N=%d: kmctl entry import", r.n)
	took, err := d.importEntries(o.domain, file, r.n)
	os.Remove(file)
	if err != nil {
		fail(err)
		return
	}
	r.importSec.add(took.Seconds())
	if kib, err := procStatusKiB(d.cmd.Process.Pid, "VmHWM"); err == nil {
		r.importRSS.add(float64(kib) / 1024)
	} else {
		r.importRSS.fail(err)
	}
	logf("N=%d: import %.2fs; restarting kmd", r.n, took.Seconds())
	if err := d.stop(); err != nil {
		fail(err)
		return
	}
	if err := d.start(); err != nil {
		fail(err)
		return
	}
	for i := range o.runs {
		res, err := d.rekey(o.domain, r.n)
		if err != nil {
			r.rekey.fail(err)
			r.rate.fail(err)
			r.rss.fail(err)
			logf("N=%d: rekey %d: %v", r.n, i+1, err)
			continue
		}
		logf("N=%d: rekey %d: %.2fs, peak RSS %.1f MiB", r.n, i+1, res.seconds, res.rssMiB)
		r.rekey.add(res.seconds)
		r.rate.add(float64(r.n) / res.seconds)
		if res.rssMiB > 0 {
			r.rss.add(res.rssMiB)
		} else {
			r.rss.fail(errors.New("/proc/<pid>/clear_refs or VmHWM unavailable"))
		}
	}
	if on != nil {
		measureOnline(o, d, r, on)
	}
	if err := d.stop(); err != nil {
		logf("N=%d: stopping kmd: %v", r.n, err)
		r.rekey.fail(fmt.Errorf("kmd did not stop cleanly: %w", err))
	}
}

// measureOnline runs the load generator for o.runs idle windows (each as
// long as the median rekey, within [minWindow, 15s]) and then during
// o.runs rekeys.
func measureOnline(o options, d *daemon, r *nResult, on *onlineResult) {
	window := o.minWindow
	if r.rekey.ok() {
		window = min(max(time.Duration(r.rekey.median()*float64(time.Second)), o.minWindow), 15*time.Second)
	}
	for i := range o.runs {
		lg, err := startLoadgen(d.sock, o.domain, r.n, o.load)
		if err != nil {
			on.fail(err)
			return
		}
		time.Sleep(window) // the measurement window itself
		res, err := lg.stop()
		if err != nil {
			on.fail(err)
			return
		}
		logf("N=%d: idle load %d: GET p99 %.2f ms, PUT p99 %.2f ms", r.n, i+1, res.Get.P99ms, res.Put.P99ms)
		on.getIdle.add(res.Get)
		on.putIdle.add(res.Put)
	}
	for i := range o.runs {
		lg, err := startLoadgen(d.sock, o.domain, r.n, o.load)
		if err != nil {
			on.fail(err)
			return
		}
		rr, rerr := d.rekey(o.domain, r.n)
		res, err := lg.stop()
		if err = errors.Join(rerr, err); err != nil {
			on.fail(err)
			return
		}
		logf("N=%d: rekey under load %d: %.2fs; GET p99 %.2f ms, PUT p99 %.2f ms", r.n, i+1, rr.seconds, res.Get.P99ms, res.Put.P99ms)
		on.rekeyLoaded.add(rr.seconds)
		on.getLoaded.add(res.Get)
		on.putLoaded.add(res.Put)
	}
}

func measureFloors(o options, r *nResult) {
	for range o.runs {
		took, err := aesFloor(r.n)
		if err != nil {
			r.aes.fail(err)
			continue
		}
		r.aes.add(took.Seconds())
	}
	logf("N=%d: AES-GCM floor %v", r.n, r.aes.vals)
	db, err := newSQLiteDB(r.n)
	if err != nil {
		r.sqlBatch.fail(err)
		r.sqlRow.fail(err)
		return
	}
	defer db.close()
	for range o.runs {
		for _, perRow := range []bool{false, true} {
			s := &r.sqlBatch
			if perRow {
				s = &r.sqlRow
			}
			took, err := db.rewrite(perRow)
			if err != nil {
				s.fail(err)
				continue
			}
			s.add(took.Seconds())
		}
	}
	logf("N=%d: SQLite floor %v, per row %v", r.n, r.sqlBatch.vals, r.sqlRow.vals)
}

func measureSQLCipher(o options, bin string, r *nResult) {
	for _, pageSize := range []int{0, 4096} {
		s := &r.cipherDef
		if pageSize > 0 {
			s = &r.cipher4k
		}
		c, err := newCipherDB(bin, r.n, pageSize)
		if err != nil {
			s.fail(err)
			continue
		}
		if pageSize == 0 {
			r.cipherDefPage = c.pageSizeOf()
		}
		for range o.runs {
			took, err := c.rekey()
			if err != nil {
				s.fail(err)
				continue
			}
			s.add(took.Seconds())
		}
		c.close()
		logf("N=%d: SQLCipher page %d rekey %v", r.n, pageSize, s.vals)
	}
}

// moduleRoot is the directory of go.mod, as `go env GOMOD` says.
func moduleRoot() (string, error) {
	out, err := exec.Command(goBin(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the kmd module: run from the repository")
	}
	return filepath.Dir(mod), nil
}

// machine describes where the figures come from.
type machine struct {
	cpu, kernel, goVersion, commit, sqlcipher string
	cores                                     int
	memGiB                                    float64
}

func machineInfo(root string) machine {
	m := machine{cpu: "?", kernel: "?", goVersion: runtime.Version(), commit: "?", sqlcipher: "not installed", cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(goBin(), "version").Output(); err == nil {
		m.goVersion = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	}
	if kib, err := procStatusKiBFile("/proc/meminfo", "MemTotal"); err == nil {
		m.memGiB = float64(kib) / (1 << 20)
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.commit += " with uncommitted changes"
		}
	}
	return m
}

func procStatusKiBFile(path, field string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", field, path)
}
