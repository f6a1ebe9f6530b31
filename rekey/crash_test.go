package rekey

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmd-project/kmd/provider"
)

// The crash test runs a rekey in a child process (this test binary, re-run
// with crashChildEnv set) that SIGKILLs itself at a chosen step of the state
// machine, after a seeded delay so that the kill may land inside a
// transaction or an fsync. Meanwhile a writer in the child rewrites entries
// and prints each acknowledged write. The parent then reopens the domain and
// checks that every entry opens to its last acknowledged value (or to the
// one write that was in flight), resumes the rekey, and checks it completes
// leaving exactly one MK.
const (
	crashChildEnv  = "KMD_CRASH_CHILD"
	crashEntries   = 300
	crashBatch     = 10
	crashWriterSet = 20 // entries the child's writer rewrites
)

func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("crash child only")
	}
	var dir string
	var killAt, genBase int
	var delay time.Duration
	if _, err := fmt.Sscanf(spec, "%s %d %d %d", &dir, &killAt, &delay, &genBase); err != nil {
		t.Fatal(err)
	}
	e := openEnv(t, dir, envOpts{batch: crashBatch})
	e.trace = killAtStep(killAt, delay)
	stop := startCrashWriter(t, e, genBase)
	if !e.eng.Resume() {
		if err := e.eng.Start(provider.LocationLocal); err != nil {
			t.Fatal(err)
		}
	}
	err := e.wait()
	stop()
	if err != nil {
		t.Fatal(err)
	}
	// Not killed during the rekey: die now, as a crash after the fact.
	killSelf()
}

func killSelf() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }

// killAtStep returns a trace hook that SIGKILLs the process delay after
// the killAt-th step.
func killAtStep(killAt int, delay time.Duration) func(string) {
	step := 0
	var once sync.Once
	return func(string) {
		step++
		if step == killAt {
			once.Do(func() {
				if delay == 0 {
					killSelf()
				}
				time.AfterFunc(delay, killSelf)
			})
		}
	}
}

// startCrashWriter starts the child's writer: it rewrites entries and
// prints each acknowledged write. The returned function stops it.
func startCrashWriter(t *testing.T, e *env, genBase int) (stop func()) {
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx := context.Background()
		// Generations increase across children, so a later write always
		// carries a higher one.
		for gen := genBase + 1; ; gen++ {
			select {
			case <-done:
				return
			default:
			}
			name := fmt.Sprintf("svc/entry-%05d", gen%crashWriterSet)
			if _, err := e.vault.Put(ctx, name, value(name, gen), provider.Cond{}); err != nil {
				fmt.Fprintf(os.Stderr, "put: %v\n", err)
				return
			}
			outMu.Lock()
			fmt.Fprintf(out, "ack %s %d\n", name, gen)
			out.Flush()
			outMu.Unlock()
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// stepsOfOneRekey counts the trace steps of one rekey of a fresh domain.
func stepsOfOneRekey(t *testing.T, template string) int {
	dir := t.TempDir()
	copyDir(t, template, dir)
	steps := 0
	e := openEnv(t, dir, envOpts{batch: crashBatch})
	e.trace = func(string) { steps++ }
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	return steps
}

func TestEngine_ResumeAfterCrash(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	points := 56
	if testing.Short() {
		points = 16
	}
	template := t.TempDir()
	base := openEnv(t, template, envOpts{})
	want := base.fill(crashEntries)
	base.close()

	total := stepsOfOneRekey(t, template)
	t.Logf("one rekey of %d entries in batches of %d has %d steps; killing at %d points", crashEntries, crashBatch, total, points)
	for _, kp := range killPoints(total, points, 0x6b6d64) {
		t.Run(kp.name(), func(t *testing.T) {
			e, exp := kp.crash(t, template, want, runCrashChild)
			if e.eng.Resume() {
				if err := e.wait(); err != nil {
					t.Fatal(err)
				}
			}
			e.checkAll(exp)
			e.checkOneKey()
		})
	}
}

// killPoint is where one crash test run kills its child: after step
// killAt, delay later; then, if second > 0, the resumed run at that step.
type killPoint struct {
	seed   uint64
	killAt int
	delay  time.Duration
	second int
}

func (kp killPoint) name() string { return fmt.Sprintf("seed%02d-step%02d", kp.seed, kp.killAt) }

// killPoints spreads points kill points evenly over total steps, each
// waiting a seeded 0–3 ms after its step (none for every fourth) so the
// kill may land mid-operation; every third crashes the resumed run again.
func killPoints(total, points int, stream uint64) []killPoint {
	var kps []killPoint
	for i := range points {
		kp := killPoint{seed: uint64(i), killAt: 1 + i*total/points}
		rng := rand.New(rand.NewPCG(kp.seed, stream))
		kp.delay = time.Duration(rng.IntN(3000)) * time.Microsecond
		if i%4 == 0 {
			kp.delay = 0
		}
		if i%3 == 2 {
			kp.second = 1 + rng.IntN(total)
		}
		kps = append(kps, kp)
	}
	return kps
}

// crash runs a copy of template through kp's kills with child, reopens it
// and checks every entry against what the children's writers acknowledged;
// it returns the domain and every entry's expected value.
func (kp killPoint) crash(t *testing.T, template string, want map[string][]byte,
	child func(t *testing.T, dir string, killAt int, delay time.Duration, genBase int, acked map[string]int)) (*env, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	copyDir(t, template, dir)
	acked := map[string]int{}
	child(t, dir, kp.killAt, kp.delay, 0, acked)
	if kp.second > 0 {
		child(t, dir, kp.second, 0, 1_000_000, acked)
	}
	e := openEnv(t, dir, envOpts{batch: crashBatch})
	exp := e.afterCrash(want, acked)
	e.checkAll(exp)
	return e, exp
}

// afterCrash checks what a crash child's writer left: an entry equals its
// last acknowledged write, or a later write whose acknowledgement the kill
// cut off, never an earlier one. It returns every entry's expected value.
func (e *env) afterCrash(want map[string][]byte, acked map[string]int) map[string][]byte {
	t := e.t
	t.Helper()
	exp := map[string][]byte{}
	for k, v := range want {
		exp[k] = v
	}
	ctx := context.Background()
	for name, gen := range acked {
		got, _, err := e.vault.Get(ctx, name)
		if err != nil {
			t.Fatalf("entry %s: %v", name, err)
		}
		g, ok := generation(name, got)
		if !ok || g < gen || (g > gen && string(got) != string(value(name, g))) {
			t.Fatalf("entry %s = %q: generation %d, want %d (acknowledged) or later", name, got, g, gen)
		}
		exp[name] = got
	}
	for name := range want {
		if _, ok := acked[name]; ok {
			continue
		}
		if got, _, err := e.vault.Get(ctx, name); err == nil && string(got) != string(want[name]) {
			exp[name] = got // written, acknowledgement lost: must be the writer's value
			if !strings.HasPrefix(string(got), name+"#") {
				t.Fatalf("entry %s = %q", name, got)
			}
		}
	}
	return exp
}

// generation parses the writer's generation out of a value it wrote.
func generation(name string, v []byte) (int, bool) {
	rest, ok := strings.CutPrefix(string(v), name+"#")
	if !ok {
		return 0, false
	}
	n, _, ok := strings.Cut(rest, "|")
	if !ok {
		return 0, false
	}
	g, err := strconv.Atoi(n)
	return g, err == nil
}

func runCrashChild(t *testing.T, dir string, killAt int, delay time.Duration, genBase int, acked map[string]int) {
	t.Helper()
	runChild(t, "TestCrashChild", fmt.Sprintf("%s=%s %d %d %d", crashChildEnv, dir, killAt, delay, genBase), acked)
}

// runChild runs the test child of this binary with env set, records the
// writes its writer acknowledged, and checks that it died by SIGKILL.
func runChild(t *testing.T, test, env string, acked map[string]int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "ack" {
			if g, err := strconv.Atoi(f[2]); err == nil {
				acked[f[1]] = g
			}
		}
	}
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, stderr.String())
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, fi.Mode().Perm())
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
