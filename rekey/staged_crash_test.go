package rekey

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/kmd-project/kmd/provider"
)

// The staged crash test is the crash test (crash_test.go) for the three
// runs of a staged rekey: the rekey up to STAGED, its continue and its
// cancel. A child SIGKILLs itself at a chosen step of one of them while
// its writer rewrites entries; the parent reopens the domain, checks every
// entry against what was acknowledged, under an MK still on disk, resumes,
// and checks where the domain ends: STAGED with both MKs, or one MK, the
// new one after a continue, the old one after a cancel.
const stagedCrashChildEnv = "KMD_STAGED_CRASH_CHILD"

// Runs of a staged rekey the crash test kills.
const (
	crashStage    = "stage"
	crashContinue = "continue"
	crashCancel   = "cancel"
)

func TestStagedCrashChild(t *testing.T) {
	spec := os.Getenv(stagedCrashChildEnv)
	if spec == "" {
		t.Skip("crash child only")
	}
	var dir, run string
	var killAt, genBase int
	var delay time.Duration
	if _, err := fmt.Sscanf(spec, "%s %s %d %d %d", &dir, &run, &killAt, &delay, &genBase); err != nil {
		t.Fatal(err)
	}
	e := openEnv(t, dir, envOpts{batch: crashBatch})
	e.trace = killAtStep(killAt, delay)
	stop := startCrashWriter(t, e, genBase)
	if !e.eng.Resume() {
		startCrashRun(t, e, run)
	}
	err := e.wait()
	stop()
	if err != nil {
		t.Fatal(err)
	}
	killSelf()
}

// startCrashRun starts run on e, if there is anything left to start.
func startCrashRun(t *testing.T, e *env, run string) {
	st := e.eng.Status()
	var err error
	switch {
	case run == crashStage && !st.Pending():
		err = e.eng.StartWith(provider.LocationLocal, StartOptions{Stage: sevenDays})
	case run == crashContinue && st.Staged():
		err = e.eng.Continue(ContinuedByOperator)
	case run == crashCancel && st.Staged():
		err = e.eng.Cancel()
	default:
		killSelf() // done already: nothing to kill but the process
	}
	if err != nil {
		t.Fatal(err)
	}
}

// stepsOfRun counts the trace steps of run on a copy of template.
func stepsOfRun(t *testing.T, template, run string) int {
	dir := t.TempDir()
	copyDir(t, template, dir)
	steps := 0
	e := openEnv(t, dir, envOpts{batch: crashBatch})
	e.trace = func(string) { steps++ }
	startCrashRun(t, e, run)
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	return steps
}

func TestStaged_ResumeAfterCrash(t *testing.T) {
	if os.Getenv(stagedCrashChildEnv) != "" || os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	// The template: a domain of crashEntries entries, and the same domain
	// STAGED.
	active := t.TempDir()
	base := openEnv(t, active, envOpts{})
	want := base.fill(crashEntries)
	oldID := base.vault.Current()
	base.close()
	staged := t.TempDir()
	copyDir(t, active, staged)
	s := openEnv(t, staged, envOpts{batch: crashBatch})
	_, newID := s.stage(sevenDays)
	s.close()

	// Sizes: -short, make test, make test-reliability (KMD_RELIABILITY=full).
	size := func(short, normal, full int) int {
		switch {
		case os.Getenv("KMD_RELIABILITY") == "full":
			return full
		case testing.Short():
			return short
		}
		return normal
	}
	for _, tc := range []struct {
		run      string
		template string
		points   int
	}{
		// The rekey up to STAGED is the crash test's rekey but for its end.
		{crashStage, active, size(4, 8, 24)},
		{crashContinue, staged, size(3, 1000, 1000)}, // every step (there are few)
		{crashCancel, staged, size(6, 16, 48)},
	} {
		t.Run(tc.run, func(t *testing.T) {
			total := stepsOfRun(t, tc.template, tc.run)
			points := min(tc.points, total)
			defer func() { t.Logf("RELIABILITY kills %d", points) }()
			t.Logf("%s of %d entries in batches of %d has %d steps; killing at %d points", tc.run, crashEntries, crashBatch, total, points)
			child := func(t *testing.T, dir string, killAt int, delay time.Duration, genBase int, acked map[string]int) {
				t.Helper()
				runStagedChild(t, dir, tc.run, killAt, delay, genBase, acked)
			}
			for _, kp := range killPoints(total, points, 0x73746764) {
				t.Run(kp.name(), func(t *testing.T) {
					e, exp := kp.crash(t, tc.template, want, child)
					if e.eng.Resume() {
						if err := e.wait(); err != nil {
							t.Fatal(err)
						}
					}
					e.checkAll(exp)
					switch tc.run {
					case crashStage:
						st := e.eng.Status()
						if !st.Staged() || st.From != oldID {
							t.Fatalf("after the staged rekey resumed: %+v, want STAGED from %s", st, oldID)
						}
						e.checkStaged(oldID, st.To, len(exp))
					case crashContinue:
						if got := e.checkOneKey(); got != newID {
							t.Fatalf("key %s after the continue, want %s", got, newID)
						}
					case crashCancel:
						if got := e.checkOneKey(); got != oldID {
							t.Fatalf("key %s after the cancel, want the retired %s", got, oldID)
						}
						if slices.Contains(e.keyFiles(), newID) {
							t.Fatalf("the cancelled rekey's key %s is still on disk", newID)
						}
					}
					if _, err := e.vault.Put(context.Background(), "after/crash", []byte("w"), provider.Cond{}); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

func runStagedChild(t *testing.T, dir, run string, killAt int, delay time.Duration, genBase int, acked map[string]int) {
	t.Helper()
	runChild(t, "TestStagedCrashChild", fmt.Sprintf("%s=%s %s %d %d %d", stagedCrashChildEnv, dir, run, killAt, delay, genBase), acked)
}
