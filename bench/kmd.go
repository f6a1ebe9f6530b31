package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kmd-project/kmd/api"
)

const (
	startTimeout = 2 * time.Minute  // kmd answering after a start (opening a 1M store)
	stopTimeout  = 2 * time.Minute  // kmd exiting after SIGTERM
	cmdTimeout   = 60 * time.Minute // one kmctl command (an import or rekey of 1M entries)
	pollEvery    = 50 * time.Millisecond
	valueSize    = 256
)

// binaries are kmd and kmctl built from this checkout, without -race.
type binaries struct{ dir, kmd, kmctl string }

// buildBinaries runs `go build -o` for kmd and kmctl into a temporary
// directory.
func buildBinaries(root string) (*binaries, error) {
	dir, err := os.MkdirTemp("", "kmdbench-bin")
	if err != nil {
		return nil, err
	}
	b := &binaries{dir: dir, kmd: filepath.Join(dir, "kmd"), kmctl: filepath.Join(dir, "kmctl")}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"kmd", "kmctl"} {
		wg.Go(func() {
			cmd := exec.Command(goBin(), "build", "-ldflags", "-X main.version=bench", "-o", filepath.Join(dir, name), "./cmd/"+name)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// cleanEnv is this process's environment without KMD_* variables, so a
// developer's settings never change what is measured.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KMD_") {
			env = append(env, kv)
		}
	}
	return env
}

// daemon is one kmd in its own temporary directory.
type daemon struct {
	bin                       *binaries
	root, dataDir, sock, logs string
	cmd                       *exec.Cmd
	done                      chan struct{}
	client                    *api.Client
}

func newDaemon(bin *binaries) (*daemon, error) {
	// Short path: unix socket paths are limited to 108 bytes.
	root, err := os.MkdirTemp("", "kmdbench")
	if err != nil {
		return nil, err
	}
	d := &daemon{bin: bin, root: root, dataDir: filepath.Join(root, "data"),
		sock: filepath.Join(root, "kmd.sock"), logs: filepath.Join(root, "kmd.out")}
	d.client = api.NewClient(d.sock)
	return d, nil
}

// start launches kmd and waits until it answers.
func (d *daemon) start() error {
	out, err := os.OpenFile(d.logs, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(d.bin.kmd, "--data-dir", d.dataDir, "--socket", d.sock,
		"--log-file", filepath.Join(d.root, "kmd.log"), "--log-format", "json")
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kmd: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	d.cmd, d.done = cmd, done
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("kmd exited while starting (%v): %s", cmd.ProcessState, tail(d.logs, 10))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := d.client.ClusterStatus(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kmd did not answer within %v: %v", startTimeout, err)
		}
		time.Sleep(pollEvery)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop() error {
	if d.cmd == nil {
		return nil
	}
	defer func() { d.cmd = nil }()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("kmd did not exit within %v of SIGTERM; killed", stopTimeout)
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("kmd exited with status %d: %s", code, tail(d.logs, 10))
	}
	return nil
}

// close stops kmd (if running) and removes its directory.
func (d *daemon) close() {
	if d.cmd != nil {
		d.stop()
	}
	os.RemoveAll(d.root)
}

// kmctl runs kmctl against this daemon.
func (d *daemon) kmctl(stdin *os.File, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin.kmctl, append([]string{"--socket", d.sock}, args...)...)
	cmd.Env = cleanEnv()
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kmctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// domainRow returns one domain's status row.
func (d *daemon) domainRow(domain string) (api.DomainStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := d.client.ClusterStatus(ctx)
	if err != nil {
		return api.DomainStatus{}, err
	}
	for _, r := range st.Domains {
		if r.Domain == domain {
			return r, nil
		}
	}
	return api.DomainStatus{}, fmt.Errorf("domain %s not in cluster status", domain)
}

// waitActive polls until domain is ACTIVE (a resumed rekey may run after
// a restart).
func (d *daemon) waitActive(domain string) (api.DomainStatus, error) {
	deadline := time.Now().Add(cmdTimeout)
	for {
		r, err := d.domainRow(domain)
		if err == nil && r.Status == "ACTIVE" && r.Rekey == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s not ACTIVE within %v (status %q, err %v)", domain, cmdTimeout, r.Status, err)
		}
		time.Sleep(pollEvery)
	}
}

// writeImportFile writes n JSON lines {"name","value"} with random
// 256-byte values; the names are entryName(0..n-1).
func writeImportFile(path string, n int, seed uint64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	val := make([]byte, valueSize)
	enc := make([]byte, base64.StdEncoding.EncodedLen(valueSize))
	for i := range n {
		rng.Read(val)
		base64.StdEncoding.Encode(enc, val)
		fmt.Fprintf(w, `{"name":%q,"value":"%s"}`+"\n", entryName(i), enc)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func entryName(i int) string { return fmt.Sprintf("svc/entry-%07d", i) }

// importEntries times `kmctl entry import domain < file`.
func (d *daemon) importEntries(domain, file string, n int) (time.Duration, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	begin := time.Now()
	out, err := d.kmctl(f, "entry", "import", domain)
	took := time.Since(begin)
	if err != nil {
		return 0, err
	}
	if want := fmt.Sprintf("Imported %d entries", n); !strings.Contains(out, want) {
		return 0, fmt.Errorf("kmctl entry import said %q, want %q", strings.TrimSpace(out), want)
	}
	return took, nil
}

// rekeyResult is one timed rekey.
type rekeyResult struct {
	seconds float64
	rssMiB  float64 // kmd's peak RSS during the rekey; 0 if unknown
}

// rekey times `kmctl cluster rekey start --domain D --yes --wait` and
// reads kmd's peak RSS over it. The peak is reset just before the start
// (clear_refs 5), so it is this rekey's own, not the import's.
func (d *daemon) rekey(domain string, n int) (rekeyResult, error) {
	before, err := d.waitActive(domain)
	if err != nil {
		return rekeyResult{}, err
	}
	pid := d.cmd.Process.Pid
	resetPeak := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	begin := time.Now()
	_, err = d.kmctl(nil, "cluster", "rekey", "start", "--domain", domain, "--yes", "--wait")
	took := time.Since(begin)
	if err != nil {
		return rekeyResult{}, err
	}
	res := rekeyResult{seconds: took.Seconds()}
	if resetPeak == nil {
		if kib, err := procStatusKiB(pid, "VmHWM"); err == nil {
			res.rssMiB = float64(kib) / 1024
		}
	}
	after, err := d.domainRow(domain)
	if err != nil {
		return res, err
	}
	if after.Status != "ACTIVE" || after.KeyID == before.KeyID || after.Entries < int64(n) {
		return res, fmt.Errorf("after the rekey %s is %s with %d entries, key changed: %v; want ACTIVE, >= %d entries, a new key",
			domain, after.Status, after.Entries, after.KeyID != before.KeyID, n)
	}
	return res, nil
}

// procStatusKiB reads a "Name: N kB" line of /proc/pid/status.
func procStatusKiB(pid int, field string) (int64, error) {
	return procStatusKiBFile(fmt.Sprintf("/proc/%d/status", pid), field)
}

func tail(path string, lines int) string {
	b, _ := os.ReadFile(path)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// loadgen is a running load generator: this program re-executed with
// the loadgen subcommand, a separate process.
type loadgen struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	out   *bufio.Reader
	errb  bytes.Buffer
}

func startLoadgen(sock, domain string, n int, o loadOptions) (*loadgen, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "loadgen", "-socket", sock, "-domain", domain, "-n", strconv.Itoa(n),
		"-get-rate", strconv.Itoa(o.getRate), "-put-rate", strconv.Itoa(o.putRate), "-workers", strconv.Itoa(o.workers), "-warmup", o.warmup.String())
	cmd.Env = cleanEnv()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	lg := &loadgen{cmd: cmd, stdin: in, out: bufio.NewReader(outp)}
	cmd.Stderr = &lg.errb
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := lg.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		in.Close()
		cmd.Wait()
		return nil, fmt.Errorf("loadgen did not start (%q, %v): %s", line, err, strings.TrimSpace(lg.errb.String()))
	}
	return lg, nil
}

// stop ends the load (stdin closed) and returns its results.
func (lg *loadgen) stop() (loadResult, error) {
	lg.stdin.Close()
	var res loadResult
	derr := json.NewDecoder(lg.out).Decode(&res)
	werr := lg.cmd.Wait()
	if err := errors.Join(derr, werr); err != nil {
		return res, fmt.Errorf("loadgen: %v: %s", err, strings.TrimSpace(lg.errb.String()))
	}
	return res, nil
}
