package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The binaries under test, built once by TestMain.
var kmdBin, kmctlBin string

// Bounds of the harness's waits. They are deadlines, never sleeps.
const (
	startTimeout = 30 * time.Second // kmd answering after a start
	stopTimeout  = 20 * time.Second // kmd exiting after SIGTERM
	cmdTimeout   = 3 * time.Minute  // one kmctl or kmd command
	pollEvery    = 50 * time.Millisecond
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests spend much of their time waiting on kmd (polls, restarts,
	// schedules), so they overlap well beyond the number of CPUs.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", "4")
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kmde2e-bin")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs("..") // the module root: the tests run in e2e/
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	gobin := "go"
	if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	}
	for _, name := range []string{"kmd", "kmctl"} {
		out := filepath.Join(dir, name)
		cmd := exec.Command(gobin, "build", "-race", "-ldflags", "-X main.version=e2e", "-o", out, "./cmd/"+name)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/%s: %v\n%s", name, err, b)
			return 1
		}
	}
	kmdBin, kmctlBin = filepath.Join(dir, "kmd"), filepath.Join(dir, "kmctl")
	return m.Run()
}

// cleanEnv is the test process's environment without any KMD_* variable,
// so that the developer's settings never leak into a test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KMD_") && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	return env
}

// kmctlEnv is kmctl's environment. The race runtime sleeps a second
// before a successful exit (atexit_sleep_ms) by default; kmctl is run
// thousands of times, so it does not here.
func kmctlEnv() []string {
	return append(cleanEnv(), "GORACE=atexit_sleep_ms=0")
}

// kmdOptions configure a daemon.
type kmdOptions struct {
	// args come after the harness's own flags, so they override them.
	args []string
	// env is added to the (KMD_*-free) environment.
	env []string
	// bare: pass none of the harness's flags but --data-dir, --socket and
	// --log-file (for tests of configuration precedence).
	bare bool
	// defaultSocket: pass no --socket; kmd listens on <data-dir>/kmd.sock.
	defaultSocket bool
}

// daemon is one kmd as seen from one test: the test reports its failures.
// Subtests use d.in(t).
type daemon struct {
	t *testing.T
	*kmdProc
}

// in returns the same kmd reporting to t.
func (d *daemon) in(t *testing.T) *daemon { return &daemon{t: t, kmdProc: d.kmdProc} }

// kmdProc is one kmd, in its own temporary directory:
//
//	<root>/data       the data dir
//	<root>/kmd.sock   the socket
//	<root>/kmd.log    the log file
//	<root>/kmd.out    kmd's stdout and stderr (all starts)
type kmdProc struct {
	opts    kmdOptions
	root    string
	dataDir string
	sock    string
	logFile string
	outFile string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	running bool
}

// newDaemon prepares a daemon's directory without starting it.
func newDaemon(t *testing.T, opts kmdOptions) *daemon {
	t.Helper()
	// Not t.TempDir(): unix socket paths are limited to 108 bytes and the
	// test's name would be part of the path.
	root, err := os.MkdirTemp("", "kmde2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("E2E_KEEP") != "" {
			t.Logf("kept %s", root)
			return
		}
		os.RemoveAll(root)
	})
	d := &daemon{t: t, kmdProc: &kmdProc{
		opts: opts, root: root,
		dataDir: filepath.Join(root, "data"),
		sock:    filepath.Join(root, "kmd.sock"),
		logFile: filepath.Join(root, "kmd.log"),
		outFile: filepath.Join(root, "kmd.out"),
	}}
	if opts.defaultSocket {
		d.sock = filepath.Join(d.dataDir, "kmd.sock")
	}
	t.Cleanup(func() {
		if d.isRunning() {
			d.stop()
		}
		if t.Failed() {
			t.Logf("kmd output (%s):\n%s", d.outFile, tail(d.outFile, 40))
			t.Logf("kmd log (%s):\n%s", d.logFile, tail(d.logFile, 40))
		}
	})
	return d
}

// startKMD starts a kmd with the harness's flags and extraArgs after them,
// waits until it answers, and stops it (checking its exit status) when the
// test ends.
func startKMD(t *testing.T, extraArgs ...string) *daemon {
	t.Helper()
	return startKMDOpts(t, kmdOptions{args: extraArgs})
}

func startKMDOpts(t *testing.T, opts kmdOptions) *daemon {
	t.Helper()
	d := newDaemon(t, opts)
	d.start()
	return d
}

func (d *kmdProc) isRunning() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

// argv is kmd's command line.
func (d *kmdProc) argv() []string {
	args := []string{"--data-dir", d.dataDir, "--log-file", d.logFile}
	if !d.opts.defaultSocket {
		args = append(args, "--socket", d.sock)
	}
	if !d.opts.bare {
		args = append(args, "--log-format", "json", "--retry-interval", "1m")
	}
	return append(args, d.opts.args...)
}

// launch starts the kmd process and returns at once.
func (d *daemon) launch() {
	d.t.Helper()
	out, err := os.OpenFile(d.outFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(kmdBin, d.argv()...)
	cmd.Env = append(cleanEnv(), d.opts.env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start kmd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	d.mu.Lock()
	d.cmd, d.done, d.running = cmd, done, true
	d.mu.Unlock()
}

// start starts kmd and waits until `cluster status -o json` succeeds.
func (d *daemon) start() {
	d.t.Helper()
	d.launch()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-d.done:
			d.mu.Lock()
			d.running = false
			d.mu.Unlock()
			d.t.Fatalf("kmd exited while starting (%v):\n%s", d.cmd.ProcessState, tail(d.outFile, 20))
		default:
		}
		if _, _, code := d.kmctlQuiet(nil, "cluster", "status", "-o", "json"); code == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("kmd did not answer within %v:\n%s", startTimeout, tail(d.outFile, 20))
		}
		time.Sleep(pollEvery)
	}
}

// stop sends SIGTERM, waits for kmd to exit and checks that it exited 0
// (and that the race detector saw nothing). It returns how long kmd took.
func (d *daemon) stop() time.Duration {
	d.t.Helper()
	return d.stopWith(syscall.SIGTERM)
}

// stopWith is stop with another signal.
func (d *daemon) stopWith(sig syscall.Signal) time.Duration {
	d.t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	begin := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		d.t.Errorf("%v kmd: %v", sig, err)
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		cmd.Process.Kill()
		<-done
		d.t.Errorf("kmd did not exit within %v of %v; killed", stopTimeout, sig)
	}
	took := time.Since(begin)
	d.mu.Lock()
	d.running = false
	d.mu.Unlock()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Errorf("kmd exited with status %d (%v) after %v, want 0:\n%s", code, cmd.ProcessState, sig, tail(d.outFile, 30))
	}
	d.checkRaces()
	return took
}

// kill9 kills kmd with SIGKILL and waits for it to be gone.
func (d *daemon) kill9() {
	d.t.Helper()
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatalf("SIGKILL kmd: %v", err)
	}
	<-done
	d.mu.Lock()
	d.running = false
	d.mu.Unlock()
	d.checkRaces()
}

// restart stops kmd cleanly and starts it again on the same directory.
func (d *daemon) restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

func (d *daemon) checkRaces() {
	d.t.Helper()
	b, _ := os.ReadFile(d.outFile)
	if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
		d.t.Errorf("the race detector reported a data race in kmd:\n%s", b)
	}
}

// signal sends sig to the running kmd.
func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("%v kmd: %v", sig, err)
	}
}

// pid is the running kmd's process id.
func (d *kmdProc) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// kmctl runs kmctl against this daemon, stdin empty (not a terminal).
func (d *daemon) kmctl(args ...string) (stdout, stderr string, exit int) {
	d.t.Helper()
	return runKmctl(d.t, d.sock, nil, args...)
}

// kmctlIn runs kmctl against this daemon with stdin.
func (d *daemon) kmctlIn(stdin []byte, args ...string) (stdout, stderr string, exit int) {
	d.t.Helper()
	return runKmctl(d.t, d.sock, stdin, args...)
}

// kmctlQuiet is kmctl for polling: it reports nothing to the test.
func (d *kmdProc) kmctlQuiet(stdin []byte, args ...string) (stdout, stderr string, exit int) {
	return execKmctl(d.sock, stdin, args...)
}

// runKmctl runs kmctl --socket sock args...; a kmctl that cannot be run or
// does not finish in time fails the test (from any goroutine).
func runKmctl(t testing.TB, sock string, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, code := execKmctl(sock, stdin, args...)
	if code < 0 {
		t.Errorf("kmctl %s: %s", strings.Join(args, " "), stderr)
	}
	return stdout, stderr, code
}

func execKmctl(sock string, stdin []byte, args ...string) (string, string, int) {
	return execKmctlEnv(nil, sock, stdin, args...)
}

// execKmctlEnv runs kmctl with env added to its environment; an empty sock
// passes no --socket.
func execKmctlEnv(env []string, sock string, stdin []byte, args ...string) (string, string, int) {
	if sock != "" {
		args = append([]string{"--socket", sock}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, kmctlBin, args...)
	cmd.Env = append(kmctlEnv(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case ctx.Err() != nil:
		return out.String(), fmt.Sprintf("timed out after %v; stderr: %s", cmdTimeout, errb.String()), -1
	case errors.As(err, &ee) && ee.Exited():
		return out.String(), errb.String(), ee.ExitCode()
	default:
		return out.String(), fmt.Sprintf("%v; stderr: %s", err, errb.String()), -1
	}
}

// runKMD runs kmd with args and env (added to a KMD_*-free environment) to
// its end, for the tests of kmd's own errors.
func runKMD(t *testing.T, env []string, args ...string) (output string, exit int, took time.Duration) {
	t.Helper()
	out, code, took, exited := runKMDFor(t, 30*time.Second, env, args...)
	if !exited {
		t.Fatalf("kmd %s: did not exit within 30s:\n%s", strings.Join(args, " "), out)
	}
	return out, code, took
}

// runKMDFor runs kmd for at most limit; a kmd still running then is
// stopped with SIGTERM (then SIGKILL) and reported as not exited.
func runKMDFor(t *testing.T, limit time.Duration, env []string, args ...string) (output string, exit int, took time.Duration, exited bool) {
	t.Helper()
	cmd := exec.Command(kmdBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("kmd %s: %v", strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	exited = true
	select {
	case err = <-done:
	case <-time.After(limit):
		exited = false
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			err = <-done
		}
	}
	took = time.Since(begin)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0, took, exited
	case errors.As(err, &ee) && ee.Exited():
		return out.String(), ee.ExitCode(), took, exited
	}
	return out.String() + err.Error(), -1, took, exited
}

// lockedBuffer is a bytes.Buffer safe for a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// must runs kmctl and fails the test unless it exits 0; it returns stdout.
func (d *daemon) must(args ...string) string {
	d.t.Helper()
	return d.mustIn(nil, args...)
}

func (d *daemon) mustIn(stdin []byte, args ...string) string {
	d.t.Helper()
	stdout, stderr, code := d.kmctlIn(stdin, args...)
	if code != 0 {
		d.t.Fatalf("kmctl %s: exit %d, want 0; stderr:\n%s", cmdline(args), code, stderr)
	}
	return stdout
}

// cmdline shows args for a message, quoting the odd ones.
func cmdline(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'") || len(a) > 40 {
			if len(a) > 40 {
				a = a[:37] + "..."
			}
			a = fmt.Sprintf("%q", a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// JSON shapes of SPEC.md, declared here rather than imported from the api
// package, so that the tests check the contract and not the code.

type progress struct {
	Done    int64     `json:"done"`
	Total   int64     `json:"total"`
	Started time.Time `json:"started"`
}

type domainRow struct {
	Domain      string     `json:"domain"`
	Status      string     `json:"status"`
	KeyID       string     `json:"key_id"`
	KeyCreated  time.Time  `json:"key_created"`
	Location    string     `json:"location"`
	RemoteKeyID string     `json:"remote_key_id"`
	Error       string     `json:"error"`
	Entries     int64      `json:"entries"`
	Rekey       *progress  `json:"rekey"`
	NextRetry   *time.Time `json:"next_retry"`
}

type clusterStatus struct {
	Domains []domainRow `json:"domains"`
	Total   int         `json:"total"`
}

// row returns the row of domain.
func (c clusterStatus) row(t testing.TB, domain string) domainRow {
	t.Helper()
	for _, r := range c.Domains {
		if r.Domain == domain {
			return r
		}
	}
	t.Fatalf("cluster status has no row for %s", domain)
	return domainRow{}
}

type nodeRow struct {
	Node        int        `json:"node"`
	Status      string     `json:"status"`
	KeyID       string     `json:"key_id"`
	Location    string     `json:"location"`
	RemoteKeyID string     `json:"remote_key_id"`
	KeyCreated  time.Time  `json:"key_created"`
	Error       string     `json:"error"`
	Entries     int64      `json:"entries"`
	Rekey       *progress  `json:"rekey"`
	NextRetry   *time.Time `json:"next_retry"`
}

type sedStatus struct {
	Nodes []nodeRow `json:"nodes"`
	Total int       `json:"total"`
}

type rekeyView struct {
	RekeyTime   string `json:"rekey_time"`
	KeyRotation string `json:"key_rotation"`
	NextRekey   string `json:"next_rekey"`
	LastResult  string `json:"last_result"`
}

type event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Name    string    `json:"event"`
	Scope   string    `json:"scope"`
	Domain  string    `json:"domain"`
	Node    int       `json:"node"`
	KeyID   string    `json:"key_id"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
	Message string    `json:"message"`
}

type eventList struct {
	Events []event `json:"events"`
}

// importLine is one line of `entry import` / `entry export`.
type importLine struct {
	Name  string `json:"name"`
	Value []byte `json:"value"`
}

// The 17 cluster domains, in the order of SPEC.md.
var clusterDomains = []string{
	"CELOG", "CERTSTORE", "CLOUDPOOLS", "EMAIL", "FTP", "IPMI_MGMT", "JWT", "LHOTSE",
	"NDMP", "NETWORK", "PSTORE", "RICE", "S3", "SIQ", "SNMP", "SRS", "SSO",
}

func decodeJSON(t testing.TB, what, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%s: not the JSON of SPEC.md: %v\n%s", what, err, s)
	}
}

func (d *daemon) clusterStatus() clusterStatus {
	d.t.Helper()
	var cs clusterStatus
	decodeJSON(d.t, "cluster status -o json", d.must("cluster", "status", "-o", "json"), &cs)
	return cs
}

func (d *daemon) sedStatus() sedStatus {
	d.t.Helper()
	var ss sedStatus
	decodeJSON(d.t, "sed status -o json", d.must("sed", "status", "-o", "json"), &ss)
	if len(ss.Nodes) != 1 {
		d.t.Fatalf("sed status -o json: %d nodes, want 1", len(ss.Nodes))
	}
	return ss
}

func (d *daemon) sedKeyID() string {
	d.t.Helper()
	return d.sedStatus().Nodes[0].KeyID
}

func (d *daemon) rekeyView(scope string) rekeyView {
	d.t.Helper()
	var v rekeyView
	decodeJSON(d.t, scope+" rekey view -o json", d.must(scope, "rekey", "view", "-o", "json"), &v)
	return v
}

func (d *daemon) events() []event {
	d.t.Helper()
	var el eventList
	decodeJSON(d.t, "events list -o json", d.must("events", "list", "-o", "json"), &el)
	return el.Events
}

// keyIDs maps every cluster domain to its current key id.
func (d *daemon) keyIDs() map[string]string {
	d.t.Helper()
	ids := map[string]string{}
	for _, r := range d.clusterStatus().Domains {
		ids[r.Domain] = r.KeyID
	}
	return ids
}

func (d *daemon) put(domain, name string, value []byte) {
	d.t.Helper()
	if value == nil {
		value = []byte{}
	}
	d.mustIn(value, "entry", "put", domain, name)
}

func (d *daemon) get(domain, name string) []byte {
	d.t.Helper()
	return []byte(d.must("entry", "get", domain, name))
}

// list returns `entry list DOMAIN`, one name a line.
func (d *daemon) list(domain string) []string {
	d.t.Helper()
	return lines(d.must("entry", "list", domain))
}

// importEntries imports entries into domain with one `entry import`.
func (d *daemon) importEntries(domain string, entries map[string][]byte) {
	d.t.Helper()
	d.mustIn(importLines(entries), "entry", "import", domain)
}

// export returns `entry export DOMAIN` decoded.
func (d *daemon) export(domain string) map[string][]byte {
	d.t.Helper()
	return parseExport(d.t, d.must("entry", "export", domain))
}

func importLines(entries map[string][]byte) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, name := range sortedKeys(entries) {
		enc.Encode(importLine{Name: name, Value: entries[name]})
	}
	return b.Bytes()
}

func parseExport(t testing.TB, out string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		var l importLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("entry export line %d: %v: %q", n, err, sc.Text())
		}
		if _, dup := m[l.Name]; dup {
			t.Fatalf("entry export line %d: %q exported twice", n, l.Name)
		}
		if l.Value == nil {
			l.Value = []byte{}
		}
		m[l.Name] = l.Value
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// lines splits output into its lines, without the final newline.
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// genEntries makes n entries named prefix000001… whose values are
// deterministic binary data (32 bytes, every 7th one longer).
func genEntries(prefix string, n int) map[string][]byte {
	m := make(map[string][]byte, n)
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s%06d", prefix, i)
		m[name] = valueFor(name, i)
	}
	return m
}

func valueFor(name string, i int) []byte {
	sum := sha256.Sum256([]byte(name))
	v := sum[:]
	if i%7 == 0 {
		v = bytes.Repeat(v, 1+i%5)
	}
	return slices.Clone(v)
}

// waitUntil polls cond until it holds or timeout passes; it returns
// whether it held.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
}

// waitDomain polls cluster status until cond holds for domain's row and
// returns that row; it fails the test after timeout.
func (d *daemon) waitDomain(domain string, timeout time.Duration, what string, cond func(domainRow) bool) domainRow {
	d.t.Helper()
	var last domainRow
	ok := waitUntil(timeout, func() bool {
		out, _, code := d.kmctlQuiet(nil, "cluster", "status", "-o", "json")
		if code != 0 {
			return false
		}
		var cs clusterStatus
		if json.Unmarshal([]byte(out), &cs) != nil {
			return false
		}
		for _, r := range cs.Domains {
			if r.Domain == domain {
				last = r
				return cond(r)
			}
		}
		return false
	})
	if !ok {
		d.t.Fatalf("%s: %s not reached within %v (now %s); last status: %+v", domain, what, timeout,
			time.Now().UTC().Format(time.RFC3339Nano), last)
	}
	return last
}

// waitActive waits until domain is ACTIVE with no rekey.
func (d *daemon) waitActive(domain string, timeout time.Duration) domainRow {
	d.t.Helper()
	return d.waitDomain(domain, timeout, "ACTIVE", func(r domainRow) bool {
		return r.Status == "ACTIVE" && r.Rekey == nil
	})
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	ls := lines(string(b))
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// errorLines returns the lines of stderr that start with "kmctl: error:".
func errorLines(stderr string) []string {
	var out []string
	for _, l := range lines(stderr) {
		if strings.HasPrefix(l, "kmctl: error:") {
			out = append(out, l)
		}
	}
	return out
}

// b64Forms returns the forms a secret takes when base64-encoded anywhere in
// a stream: for each of the three alignments, the part of the encoding that
// depends on the secret alone.
func b64Forms(secret []byte) []string {
	var forms []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for shift := 0; shift < 3; shift++ {
			s := enc.EncodeToString(append(make([]byte, shift), secret...))
			start := 0
			if shift > 0 {
				start = 4
			}
			forms = append(forms, s[start:len(s)-4])
		}
	}
	return forms
}

// checkGets reads names of domain with `entry get`, a few at a time, and
// checks each value against want.
func (d *daemon) checkGets(domain string, names []string, want map[string][]byte) {
	d.t.Helper()
	const workers = 4
	var wg sync.WaitGroup
	ch := make(chan string)
	for range workers {
		wg.Go(func() {
			for name := range ch {
				out, stderr, code := runKmctl(d.t, d.sock, nil, "entry", "get", domain, name)
				switch {
				case code != 0:
					d.t.Errorf("entry get %s %q: exit %d, want 0: %s", domain, name, code, stderr)
				case !bytes.Equal([]byte(out), want[name]):
					d.t.Errorf("entry get %s %q: %d bytes %x…, want %d bytes %x…", domain, name,
						len(out), prefix([]byte(out)), len(want[name]), prefix(want[name]))
				}
			}
		})
	}
	for _, n := range names {
		ch <- n
	}
	close(ch)
	wg.Wait()
}

func prefix(b []byte) []byte { return b[:min(len(b), 16)] }

// checkExport checks that `entry export DOMAIN` is exactly want.
func (d *daemon) checkExport(domain string, want map[string][]byte) {
	d.t.Helper()
	got := d.export(domain)
	if len(got) != len(want) {
		d.t.Errorf("entry export %s: %d entries, want %d", domain, len(got), len(want))
	}
	bad := 0
	for name, v := range want {
		g, ok := got[name]
		switch {
		case !ok:
			d.t.Errorf("entry export %s: %q missing", domain, name)
		case !bytes.Equal(g, v):
			d.t.Errorf("entry export %s: %q is %x…, want %x…", domain, name, prefix(g), prefix(v))
		default:
			continue
		}
		if bad++; bad > 10 {
			d.t.Fatalf("entry export %s: too many differences", domain)
		}
	}
}

// keyFiles lists the files of <data-dir>/keys/DOMAIN.
func (d *daemon) keyFiles(domain string) []string {
	d.t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.dataDir, "keys", domain))
	if err != nil {
		d.t.Fatalf("key dir of %s: %v", domain, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// countEvents counts the events named name of domain.
func countEvents(evs []event, name, domain string) int {
	n := 0
	for _, e := range evs {
		if e.Name == name && e.Domain == domain {
			n++
		}
	}
	return n
}

// eventsOffline reads the events kmd keeps in its data dir, for when kmd
// is stopped: <data-dir>/events.jsonl, one JSON event a line.
func (d *daemon) eventsOffline() []event {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dataDir, "events.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		d.t.Fatal(err)
	}
	var evs []event
	for _, l := range lines(string(b)) {
		var e event
		if json.Unmarshal([]byte(l), &e) == nil {
			evs = append(evs, e)
		}
	}
	return evs
}

// decodeQuiet decodes JSON for polling: it reports whether it could.
func decodeQuiet(s string, v any) bool { return json.Unmarshal([]byte(s), v) == nil }

// stepper returns a function that logs how long each step of a long test
// took, for -v.
func stepper(t *testing.T) func(what string) {
	last := time.Now()
	return func(what string) {
		t.Helper()
		t.Logf("%s (%.1fs)", what, time.Since(last).Seconds())
		last = time.Now()
	}
}
