package rekey

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

var sevenDays = Rotation{N: 7, Unit: 'D'}

// stage runs a staged rekey of e to STAGED and returns the old and new MK.
func (e *env) stage(period Rotation) (oldID, newID string) {
	e.t.Helper()
	oldID = e.vault.Current()
	if err := e.eng.StartWith(provider.LocationLocal, StartOptions{Stage: period}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		e.t.Fatal(err)
	}
	st := e.eng.Status()
	if !st.Staged() || st.From != oldID || st.To != e.vault.Current() {
		e.t.Fatalf("after a staged rekey: status %+v, want STAGED from %s to the current key", st, oldID)
	}
	return oldID, st.To
}

// checkStaged asserts the state of a STAGED domain: the old MK RETIRED, on
// disk and loaded; the new one CURRENT; every entry under the new one.
func (e *env) checkStaged(oldID, newID string, entries int) {
	e.t.Helper()
	ctx := context.Background()
	infos, err := e.sqlite.Keys(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	states := map[string]provider.KeyState{}
	for _, k := range infos {
		states[k.ID] = k.State
	}
	if len(states) != 2 || states[oldID] != provider.KeyRetired || states[newID] != provider.KeyCurrent {
		e.t.Fatalf("keys %v, want %s RETIRED and %s CURRENT", states, oldID, newID)
	}
	if files := e.keyFiles(); !slices.Contains(files, oldID) || !slices.Contains(files, newID) {
		e.t.Fatalf("key files %v, want both %s and %s", files, oldID, newID)
	}
	if e.vault.Key(oldID) == nil {
		e.t.Fatalf("retired key %s is not loaded: a cancel could not use it", oldID)
	}
	usage, err := e.sqlite.KeyUsage(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(usage) > 1 || usage[newID] != int64(entries) {
		e.t.Fatalf("usage %v, want %d entries, all under %s", usage, entries, newID)
	}
}

func TestStaged_KeepsRetiredKeyUntilContinued(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, envOpts{batch: 7})
	want := e.fill(60)
	start := e.clock.Now()
	oldID, newID := e.stage(sevenDays)
	e.checkStaged(oldID, newID, 60)
	e.checkAll(want)
	st := e.eng.Status()
	if !st.StagedUntil.Equal(start.AddDate(0, 0, 7)) || st.StagePeriod != sevenDays {
		t.Fatalf("staged until %v (period %v), want %v", st.StagedUntil, st.StagePeriod, start.AddDate(0, 0, 7))
	}
	ev := e.events.named(logs.EventRekeyStaged)
	if len(ev) != 1 || ev[0].KeyID != newID || !strings.Contains(ev[0].Message, oldID) {
		t.Fatalf("staged events %+v", ev)
	}
	if n := len(e.events.named(logs.EventRekeyCompleted)); n != 0 {
		t.Fatalf("%d completion events for a rekey that is only staged", n)
	}
	// New writes go under the new MK; nothing resumes or retries a STAGED
	// rekey, and a new rekey is refused, saying until when.
	if _, err := e.vault.Put(context.Background(), "while/staged", []byte("w"), provider.Cond{}); err != nil {
		t.Fatal(err)
	}
	want["while/staged"] = []byte("w")
	if e.eng.Resume() || e.eng.RetryIfDue(e.clock.Now().Add(time.Hour)) {
		t.Fatal("a STAGED rekey was resumed")
	}
	var se *StagedError
	if err := e.eng.Start(provider.LocationLocal); !errors.As(err, &se) || !errors.Is(err, ErrStaged) || !se.Until.Equal(st.StagedUntil) {
		t.Fatalf("Start while STAGED: %v, want a StagedError until %v", err, st.StagedUntil)
	}

	// A restart keeps it STAGED, with the retired MK loaded.
	e.close()
	e = openEnv(t, dir, envOpts{batch: 7, clock: e.clock})
	if st := e.eng.Status(); !st.Staged() || !st.StagedUntil.Equal(start.AddDate(0, 0, 7)) {
		t.Fatalf("after a restart: %+v, want STAGED as before", st)
	}
	if e.eng.Resume() {
		t.Fatal("a STAGED rekey was resumed at start")
	}
	e.checkStaged(oldID, newID, 61)

	if err := e.eng.Continue(ContinuedByOperator); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if got := e.checkOneKey(); got != newID {
		t.Fatalf("key %s after continue, want %s", got, newID)
	}
	e.checkAll(want)
	if e.vault.Key(oldID) != nil {
		t.Fatal("destroyed key still in the keyring")
	}
	ev = e.events.named(logs.EventRekeyContinued)
	if len(ev) != 1 || ev[0].KeyID != newID || !strings.Contains(ev[0].Message, "by the operator") {
		t.Fatalf("continued events %+v", ev)
	}
	if st := e.eng.Status(); st.Pending() || st.Run != RunContinue {
		t.Fatalf("status after continue %+v", st)
	}
	if n := len(e.events.named(logs.EventRekeyCompleted)); n != 0 {
		t.Fatalf("%d completion events; a continued rekey raises Continued", n)
	}
}

func TestStaged_CancelGoesBackToRetiredKey(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 9})
	want := e.fill(120)
	oldID, newID := e.stage(sevenDays)
	ctx := context.Background()
	// Written while STAGED: under the new MK, and must come back too.
	for i := range 5 {
		name := fmt.Sprintf("staged/%d", i)
		if _, err := e.vault.Put(ctx, name, value(name, 1), provider.Cond{}); err != nil {
			t.Fatal(err)
		}
		want[name] = value(name, 1)
	}
	// Writers keep going throughout the cancel (invariant 6).
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("svc/entry-%05d", (i*3+w)%120)
				v := value(name, i+2)
				if _, err := e.vault.Put(ctx, name, v, provider.Cond{}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[name] = v
				mu.Unlock()
			}
		})
	}
	if err := e.eng.Cancel(); err != nil {
		t.Fatal(err)
	}
	if st := e.eng.Status(); st.Op != OpCancel || st.From != newID || st.To != oldID {
		t.Fatalf("cancel recorded as %+v", st)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if got := e.checkOneKey(); got != oldID {
		t.Fatalf("key %s after cancel, want the retired one back: %s", got, oldID)
	}
	e.checkAll(want)
	ev := e.events.named(logs.EventRekeyCancelled)
	if len(ev) != 1 || ev[0].KeyID != newID || !strings.Contains(ev[0].Message, oldID) {
		t.Fatalf("cancelled events %+v", ev)
	}
	if st := e.eng.Status(); st.Pending() || st.Run != OpCancel {
		t.Fatalf("status after cancel %+v", st)
	}
	// And the domain rekeys as usual afterwards.
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkAll(want)
	e.checkOneKey()
}

func TestStaged_AutoContinueAtEndOfPeriod(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(30)
	_, newID := e.stage(Rotation{N: 2, Unit: 'h'})
	until := e.eng.Status().StagedUntil
	if e.eng.ContinueIfDue(until.Add(-time.Second)) {
		t.Fatal("continued before the end of the stage period")
	}
	if !e.eng.Status().Staged() {
		t.Fatal("no longer STAGED")
	}
	if !e.eng.ContinueIfDue(until) {
		t.Fatal("not continued at the end of the stage period")
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if got := e.checkOneKey(); got != newID {
		t.Fatalf("key %s, want %s", got, newID)
	}
	e.checkAll(want)
	ev := e.events.named(logs.EventRekeyContinued)
	if len(ev) != 1 || !strings.Contains(ev[0].Message, "automatically") {
		t.Fatalf("continued events %+v", ev)
	}
	if e.eng.ContinueIfDue(until.Add(time.Hour)) {
		t.Fatal("continued twice")
	}
}

// A clock set back to before the rekey was staged restarts the stage
// period from now, persisted: the retired MK is kept one period at most
// after the jump, not for as long again as the clock went back.
func TestStaged_ClockBackRestartsPeriodFromNow(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, envOpts{batch: 8})
	e.fill(10)
	e.stage(sevenDays)
	back := e.clock.Now().AddDate(-1, 0, 0)
	if e.eng.ContinueIfDue(back) {
		t.Fatal("continued when the clock went back")
	}
	st := e.eng.Status()
	if !st.StagedAt.Equal(back) || !st.StagedUntil.Equal(back.AddDate(0, 0, 7)) {
		t.Fatalf("after the clock went back: staged %v until %v, want %v until %v", st.StagedAt, st.StagedUntil, back, back.AddDate(0, 0, 7))
	}
	e.close()
	e = openEnv(t, dir, envOpts{batch: 8, clock: e.clock})
	if got := e.eng.Status().StagedUntil; !got.Equal(back.AddDate(0, 0, 7)) {
		t.Fatalf("re-anchored stage end not persisted: %v", got)
	}
	if !e.eng.ContinueIfDue(back.AddDate(0, 0, 7)) {
		t.Fatal("not continued one period after the jump")
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkOneKey()
}

// Invariant 5 for staged rekeys: continue, cancel and start exclude each
// other, and neither continue nor cancel applies to a domain not STAGED.
func TestStaged_OneAtATimeAndOnlyWhenStaged(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 5})
	e.fill(30)
	for name, f := range map[string]func() error{
		"continue": func() error { return e.eng.Continue(ContinuedByOperator) },
		"cancel":   e.eng.Cancel,
	} {
		if err := f(); !errors.Is(err, ErrNotStaged) {
			t.Fatalf("%s of an ACTIVE domain: %v, want ErrNotStaged", name, err)
		}
	}
	e.stage(sevenDays)
	release := make(chan struct{})
	reached := make(chan struct{})
	var once sync.Once
	e.trace = func(step string) {
		if step == "phase:REWRAP" {
			once.Do(func() { close(reached) })
			<-release
		}
	}
	if err := e.eng.Cancel(); err != nil {
		t.Fatal(err)
	}
	<-reached
	var busy atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			var err error
			switch i % 3 {
			case 0:
				err = e.eng.Continue(ContinuedByOperator)
			case 1:
				err = e.eng.Cancel()
			default:
				err = e.eng.Start(provider.LocationLocal)
			}
			if errors.Is(err, ErrInProgress) {
				busy.Add(1)
			} else {
				t.Errorf("during a cancel: %v, want ErrInProgress", err)
			}
		})
	}
	wg.Wait()
	if e.eng.ContinueIfDue(e.clock.Now().AddDate(1, 0, 0)) || e.eng.Resume() {
		t.Fatal("a second run launched during the cancel")
	}
	close(release)
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if busy.Load() != 12 {
		t.Fatalf("%d refused, want 12", busy.Load())
	}
	e.checkOneKey()
}

// Invariant 4 for the end of a staged rekey: a failed cancel or continue
// destroys nothing, leaves every entry readable and writable, is FAILED
// with an event, and is retried after the retry interval, resuming.
func TestStaged_FailedEndDestroysNothingAndRetries(t *testing.T) {
	for _, tc := range []struct {
		name, inError, failedIn string
		cancel                  bool
		arm, disarm             func(e *env)
		endEvent                string
	}{
		{name: "cancel rewrap", cancel: true, inError: "rewrap S3", endEvent: logs.EventRekeyCancelled,
			arm:    func(e *env) { e.store.set(func(f *faultyStore) { f.rewrapErr = errInjected }) },
			disarm: func(e *env) { e.store.set(func(f *faultyStore) { f.rewrapErr = nil }) }},
		{name: "cancel destroy", cancel: true, inError: "destroy S3 key", endEvent: logs.EventRekeyCancelled,
			arm: func(e *env) { e.src.setFail("destroy", errInjected) }, disarm: func(e *env) { e.src.setFail("destroy", nil) }},
		{name: "continue destroy", inError: "destroy S3 key", endEvent: logs.EventRekeyContinued,
			arm: func(e *env) { e.src.setFail("destroy", errInjected) }, disarm: func(e *env) { e.src.setFail("destroy", nil) }},
		{name: "continue record", inError: "disk full", endEvent: logs.EventRekeyContinued,
			arm:    func(e *env) { e.store.set(func(f *faultyStore) { f.metaErr = errors.New("disk full") }) },
			disarm: func(e *env) { e.store.set(func(f *faultyStore) { f.metaErr = nil }) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openEnv(t, t.TempDir(), envOpts{batch: 8})
			want := e.fill(40)
			oldID, newID := e.stage(sevenDays)
			tc.arm(e)
			switch {
			case tc.cancel:
				if err := e.eng.Cancel(); err != nil {
					t.Fatal(err)
				}
				if err := e.wait(); err == nil || !strings.Contains(err.Error(), tc.inError) {
					t.Fatalf("cancel: %v, want an error with %q", err, tc.inError)
				}
			case tc.name == "continue record":
				// The automatic continue cannot even be recorded.
				if e.eng.ContinueIfDue(e.clock.Now().AddDate(0, 0, 7)) {
					t.Fatal("continue recorded on a full disk")
				}
			default:
				if err := e.eng.Continue(ContinuedByOperator); err != nil {
					t.Fatal(err)
				}
				if err := e.wait(); err == nil || !strings.Contains(err.Error(), tc.inError) {
					t.Fatalf("continue: %v, want an error with %q", err, tc.inError)
				}
			}
			st := e.eng.Status()
			if !st.Failed() || !strings.Contains(st.Error, tc.inError) {
				t.Fatalf("status %+v, want FAILED with %q", st, tc.inError)
			}
			if files := e.keyFiles(); !slices.Contains(files, oldID) || !slices.Contains(files, newID) {
				t.Fatalf("key files %v after a failed end, want both", files)
			}
			e.checkAll(want)
			if _, err := e.vault.Put(context.Background(), "during/failure", []byte("w"), provider.Cond{}); err != nil {
				t.Fatal(err)
			}
			want["during/failure"] = []byte("w")
			ev := e.events.named(logs.EventRekeyFailed)
			what := "continue of the staged rekey"
			if tc.cancel {
				what = "cancel of the staged rekey"
			}
			if len(ev) != 1 || !strings.Contains(ev[0].Error, tc.inError) || !strings.Contains(ev[0].Message, what) {
				t.Fatalf("failed events %+v", ev)
			}
			retry := e.clock.Now().Add(15 * time.Minute)
			if e.eng.RetryIfDue(retry.Add(-time.Minute)) || e.eng.ContinueIfDue(retry.Add(-time.Minute)) {
				t.Fatal("retried before the retry interval")
			}
			tc.disarm(e)
			e.clock.Add(15 * time.Minute)
			if !e.eng.RetryIfDue(e.clock.Now()) && !e.eng.ContinueIfDue(e.clock.Now()) {
				t.Fatal("not retried")
			}
			if err := e.wait(); err != nil {
				t.Fatal(err)
			}
			wantKey := newID
			if tc.cancel {
				wantKey = oldID
			}
			if got := e.checkOneKey(); got != wantKey {
				t.Fatalf("key %s, want %s", got, wantKey)
			}
			e.checkAll(want)
			if n := len(e.events.named(tc.endEvent)); n != 1 {
				t.Fatalf("%d %s events, want 1", n, tc.endEvent)
			}
		})
	}
}

// A cancel whose retired MK cannot be loaded changes nothing: the domain
// stays STAGED under its new MK.
func TestStaged_CancelWithoutRetiredKeyChangesNothing(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(20)
	oldID, newID := e.stage(sevenDays)
	e.vault.DropKey(oldID) // as after a start that could not load it
	e.src.setFail("load", errInjected)
	if err := e.eng.Cancel(); err == nil || !errors.Is(err, errInjected) {
		t.Fatalf("cancel: %v, want the load error", err)
	}
	if st := e.eng.Status(); !st.Staged() || st.Running {
		t.Fatalf("status %+v, want still STAGED", st)
	}
	e.src.setFail("load", nil)
	if e.vault.Current() != newID {
		t.Fatal("current key changed")
	}
	e.checkAll(want)
	if err := e.eng.Cancel(); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if got := e.checkOneKey(); got != oldID {
		t.Fatalf("key %s, want %s", got, oldID)
	}
}

// Invariant 3 for continue and cancel: the MK each destroys is destroyed
// only once a count after the last batch finds no entry under it. A row
// sealed under it after VERIFY's count (as a late writer would leave it)
// sends the run back to REWRAP.
func TestStaged_DestroyOnlyWhenNoEntryReferencesMK(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancel), func(t *testing.T) {
			e := openEnv(t, t.TempDir(), envOpts{batch: 10})
			want := e.fill(30)
			oldID, newID := e.stage(sevenDays)
			doomed := oldID
			if cancel {
				doomed = newID
			}
			doomedKey := e.vault.Key(doomed)
			destroyed := 0
			e.src.onDestroy = func(ref provider.KeyRef) {
				n, err := e.sqlite.CountByKey(context.Background(), ref.ID)
				if err != nil || n != 0 {
					t.Errorf("destroying key %s while %d entries reference it (%v)", ref.ID, n, err)
				}
				destroyed++
			}
			injected := 0
			e.trace = func(step string) {
				if step == "verify:synced" && injected == 0 {
					injected++
					name := "late/writer"
					sealed, _ := doomedKey.Seal(nil, testDomain, name, value(name, 1))
					if _, err := e.sqlite.Put(context.Background(), provider.Entry{Name: name, KeyID: doomed, Sealed: sealed}, provider.Cond{}); err != nil {
						t.Error(err)
					}
					want[name] = value(name, 1)
				}
			}
			if cancel {
				if err := e.eng.Cancel(); err != nil {
					t.Fatal(err)
				}
			} else if err := e.eng.Continue(ContinuedByOperator); err != nil {
				t.Fatal(err)
			}
			if err := e.wait(); err != nil {
				t.Fatal(err)
			}
			if injected != 1 || destroyed != 1 {
				t.Fatalf("injected %d, destroyed %d", injected, destroyed)
			}
			e.checkAll(want)
			if got := e.checkOneKey(); got == doomed {
				t.Fatalf("kept %s, the key to destroy", got)
			}
		})
	}
}

// Invariant 7: a restart resumes an interrupted cancel or continue at once.
func TestStaged_RestartResumesInterruptedEnd(t *testing.T) {
	for _, tc := range []struct {
		cancel bool
		at     string
	}{
		{true, "switch:done"}, {true, "rewrap:batch"}, {true, "verify:synced"}, {true, "destroy:source"},
		{false, "phase:VERIFY"}, {false, "verify:synced"}, {false, "destroy:source"},
	} {
		t.Run(fmt.Sprintf("cancel=%v/%s", tc.cancel, tc.at), func(t *testing.T) {
			dir := t.TempDir()
			e := openEnv(t, dir, envOpts{batch: 6})
			want := e.fill(40)
			oldID, newID := e.stage(sevenDays)
			stopped := make(chan struct{})
			var once sync.Once
			e.trace = func(step string) {
				if step == tc.at {
					once.Do(func() { close(stopped) })
					for e.eng.ctx.Err() == nil {
						time.Sleep(time.Millisecond)
					}
				}
			}
			if tc.cancel {
				if err := e.eng.Cancel(); err != nil {
					t.Fatal(err)
				}
			} else if err := e.eng.Continue(ContinuedByOperator); err != nil {
				t.Fatal(err)
			}
			<-stopped
			e.eng.Close()
			st := e.eng.Status()
			e.sqlite.Close()
			if !st.Pending() || st.Staged() {
				t.Fatalf("ended despite the stop at %s: %+v", tc.at, st)
			}
			e2 := openEnv(t, dir, envOpts{batch: 6})
			if got := e2.eng.Status(); got.Phase != st.Phase || got.Op != st.Op || got.Continued != st.Continued {
				t.Fatalf("persisted %+v, want %+v", got, st)
			}
			e2.checkAll(want)
			if !e2.eng.Resume() {
				t.Fatal("nothing to resume")
			}
			if err := e2.wait(); err != nil {
				t.Fatal(err)
			}
			e2.checkAll(want)
			wantKey := newID
			if tc.cancel {
				wantKey = oldID
			}
			if got := e2.checkOneKey(); got != wantKey {
				t.Fatalf("key %s, want %s", got, wantKey)
			}
		})
	}
}

// A retry asked for as staged stages the failed rekey.
func TestStaged_RetryAskedAsStagedStages(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(20)
	e.src.setFail("create", errInjected)
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err == nil {
		t.Fatal("rekey did not fail")
	}
	e.src.setFail("create", nil)
	old := e.vault.Current()
	if _, newID := e.stage(sevenDays); newID == old {
		t.Fatal("not rekeyed")
	}
	e.checkAll(want)
}

func TestStaged_SEDEventNames(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8, scope: logs.ScopeSED})
	e.fill(5)
	e.stage(sevenDays)
	if err := e.eng.Cancel(); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.stage(sevenDays)
	if err := e.eng.Continue(ContinuedByOperator); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{logs.EventSedsRekeyStaged, logs.EventSedsRekeyCancelled, logs.EventSedsRekeyContinued} {
		ev := e.events.named(name)
		if len(ev) == 0 || ev[0].Scope != logs.ScopeSED || ev[0].Node != 1 {
			t.Errorf("%s events %+v, want some of scope sed, node 1", name, ev)
		}
	}
	for _, name := range []string{logs.EventRekeyStaged, logs.EventRekeyCancelled, logs.EventRekeyContinued} {
		if ev := e.events.named(name); len(ev) != 0 {
			t.Errorf("cluster event %s raised for the sed scope: %+v", name, ev)
		}
	}
}

// The staged event is kept with the STAGED state, so a crash between the
// two loses nothing: the next start emits it.
func TestStaged_EventSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	e := openEnv(t, dir, envOpts{batch: 8})
	e.fill(5)
	// The journal write never happens: the process dies first.
	e.events = nil
	e.eng.cfg.Events = nil
	_, newID := e.stage(sevenDays)
	if b, err := e.sqlite.State(context.Background(), completedKey); err != nil || b != nil {
		t.Fatalf("pending event %q (%v): want none once handed over", b, err)
	}
	// As the crash leaves it: the event recorded with STAGED, not emitted.
	b := fmt.Appendf(nil, `{"event":%q,"key_id":%q,"message":"rekey of S3 staged"}`, logs.EventRekeyStaged, newID)
	if err := e.sqlite.UpdateMeta(context.Background(), provider.MetaUpdate{Set: map[string][]byte{completedKey: b}}); err != nil {
		t.Fatal(err)
	}
	e.close()
	e2 := openEnv(t, dir, envOpts{batch: 8})
	if ev := e2.events.named(logs.EventRekeyStaged); len(ev) != 1 || ev[0].KeyID != newID {
		t.Fatalf("staged events after the restart %+v", ev)
	}
}

func TestStaged_DeleteRetired(t *testing.T) {
	ctx := context.Background()
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(10)
	// A RETIRED MK that no rekey holds (left by damage or an older kmd).
	orphan := func(id string) *provider.Key {
		ref, m, err := e.src.Create(ctx, testDomain, id)
		if err != nil {
			t.Fatal(err)
		}
		k, err := provider.NewKey(id, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.sqlite.UpdateMeta(ctx, provider.MetaUpdate{PutKeys: []provider.KeyInfo{{KeyRef: ref, State: provider.KeyRetired,
			Fingerprint: k.Fingerprint(), Created: e.clock.Now()}}}); err != nil {
			t.Fatal(err)
		}
		e.vault.AddKey(k)
		return k
	}
	k := orphan("0rphan0000000001")
	// Referenced by an entry: refused, nothing destroyed (invariant 3).
	sealed, _ := k.Seal(nil, testDomain, "under/orphan", []byte("x"))
	if _, err := e.sqlite.Put(ctx, provider.Entry{Name: "under/orphan", KeyID: k.ID(), Sealed: sealed}, provider.Cond{}); err != nil {
		t.Fatal(err)
	}
	want["under/orphan"] = []byte("x")
	if err := e.eng.DeleteRetired(ctx, k.ID()); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("delete of a referenced key: %v, want ErrKeyInUse", err)
	}
	if !slices.Contains(e.keyFiles(), k.ID()) {
		t.Fatal("referenced key destroyed")
	}
	e.checkAll(want)
	if err := e.vault.Delete(ctx, "under/orphan", 0); err != nil {
		t.Fatal(err)
	}
	delete(want, "under/orphan")
	if err := e.eng.DeleteRetired(ctx, e.vault.Current()); err == nil || !strings.Contains(err.Error(), "not RETIRED") {
		t.Fatalf("delete of the current key: %v", err)
	}
	if err := e.eng.DeleteRetired(ctx, k.ID()); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(e.keyFiles(), k.ID()) || e.vault.Key(k.ID()) != nil {
		t.Fatal("deleted key still on disk or loaded")
	}
	e.checkOneKey()
	e.checkAll(want)
	// A STAGED rekey holds its retired MK: deleted through Continue only.
	oldID, _ := e.stage(sevenDays)
	if err := e.eng.DeleteRetired(ctx, oldID); !errors.Is(err, ErrOtherPending) {
		t.Fatalf("delete of a STAGED rekey's key: %v, want ErrOtherPending", err)
	}
}
