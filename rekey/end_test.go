package rekey

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// ends records what OnEnd is told.
type ends struct {
	mu  sync.Mutex
	got []End
}

func (e *ends) add(end End) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, end)
}

func (e *ends) all() []End {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]End(nil), e.got...)
}

// TestEngine_OnEndAndFailures: OnEnd hears of each run that fails or
// completes, with the entries that run re-encrypted and, on completion,
// the rekey's whole duration; not of the first MK nor of a run Close
// interrupts. The failures of a pending rekey survive a restart and
// reset when it completes.
func TestEngine_OnEndAndFailures(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	rec := &ends{}
	e := openEnv(t, dir, envOpts{batch: 10, clock: clock, onEnd: rec.add})
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("the first MK was reported as a rekey end: %+v", got)
	}
	want := e.fill(35)

	// The second batch fails.
	batches := 0
	e.trace = func(step string) {
		if step == "rewrap:batch" {
			if batches++; batches == 1 {
				e.store.set(func(f *faultyStore) { f.rewrapErr = errors.New("disk gone") })
			}
		}
	}
	if err := e.eng.Start("Local"); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err == nil {
		t.Fatal("rekey succeeded with a failing batch")
	}
	got := rec.all()
	if len(got) != 1 || got[0].Err == nil || got[0].Rewrapped != 10 || got[0].Elapsed != 0 ||
		got[0].Op != OpRekey || got[0].Domain != testDomain || got[0].Scope != "cluster" {
		t.Fatalf("ends after a failed run: %+v; want one failed, 10 rewrapped, no duration", got)
	}
	if n := e.eng.Status().Failures; n != 1 {
		t.Errorf("failures %d after one failed run, want 1", n)
	}
	e.close()

	// Restarted, 20 minutes later: the count is still there, and the
	// retry completes the rekey.
	rec2 := &ends{}
	e = openEnv(t, dir, envOpts{batch: 10, clock: clock, onEnd: rec2.add})
	if n := e.eng.Status().Failures; n != 1 {
		t.Errorf("failures %d after a restart, want 1", n)
	}
	clock.Add(20 * time.Minute)
	if !e.eng.Resume() {
		t.Fatal("nothing to resume")
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	got = rec2.all()
	if len(got) != 1 || got[0].Err != nil || got[0].Rewrapped != 25 || got[0].Elapsed != 20*time.Minute {
		t.Fatalf("ends after the retry: %+v; want one completed, 25 rewrapped, 20m from the rekey's start", got)
	}
	if n := e.eng.Status().Failures; n != 0 {
		t.Errorf("failures %d after the rekey completed, want 0", n)
	}
	e.checkAll(want)

	// A run that Close interrupts has no end.
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.trace = func(step string) {
		if step == "rewrap:batch" {
			once.Do(func() { close(reached); <-release })
		}
	}
	if err := e.eng.Start("Local"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatal("the rekey never reached its first batch")
	}
	closed := make(chan struct{})
	go func() { e.eng.Close(); close(closed) }()
	for e.eng.ctx.Err() == nil { // released only once Close has cancelled the run
		time.Sleep(time.Millisecond)
	}
	close(release)
	<-closed
	if got := rec2.all(); len(got) != 1 {
		t.Errorf("ends after an interrupted run: %+v; want the one before", got)
	}
}
