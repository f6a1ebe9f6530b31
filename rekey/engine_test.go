package rekey

import (
	"cmp"
	"context"
	"encoding/json"
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

func TestEngine_RekeyReplacesKeyAndKeepsEntries(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 7})
	want := e.fill(100)
	old := e.vault.Current()
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkAll(want)
	if now := e.checkOneKey(); now == old {
		t.Fatal("key did not change")
	}
	ev := e.events.named(logs.EventRekeyCompleted)
	if len(ev) != 1 || ev[0].Domain != testDomain || ev[0].KeyID != e.vault.Current() {
		t.Fatalf("completed events %+v", ev)
	}
	if st := e.eng.Status(); st.Pending() || st.Running {
		t.Fatalf("status after rekey %+v", st)
	}
}

func TestEngine_EmptyDomain(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{})
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkOneKey()
}

// Invariant 1: at every instant every entry opens under an MK that still
// exists. Checked at every step of a rekey, against the key files on disk.
func TestInvariant1_EveryEntryOpensUnderAnExistingMK(t *testing.T) {
	var e *env
	var want map[string][]byte
	steps := 0
	e = openEnv(t, t.TempDir(), envOpts{batch: 9, trace: func(step string) {
		if want != nil {
			steps++
			e.checkAll(want)
		}
	}})
	want = e.fill(60)
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if steps < 12 {
		t.Fatalf("checked at %d steps only", steps)
	}
	e.checkAll(want)
}

// Invariant 2: an MK is durable before the first entry is sealed under it.
// Each rewrite batch, and the switch, must find the new MK's key file on
// disk with the fingerprint recorded in the metadata.
func TestInvariant2_MKDurableBeforeFirstSeal(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 5})
	want := e.fill(30)
	checked := 0
	check := func(keyID string) {
		m, err := e.src.LocalKeys.Load(context.Background(), provider.KeyRef{Domain: testDomain, ID: keyID})
		if err != nil {
			t.Errorf("key %s not on disk when sealing under it: %v", keyID, err)
			return
		}
		infos, _ := e.sqlite.Keys(context.Background())
		ki, ok := provider.KeyByID(infos, keyID)
		if !ok || ki.Fingerprint != provider.Fingerprint(m) {
			t.Errorf("key %s on disk does not match metadata %+v", keyID, ki)
		}
		checked++
	}
	e.store.set(func(f *faultyStore) {
		f.beforeRewr = func(_ int64, to string) { check(to) }
	})
	e.trace = func(step string) {
		if step == "switch:done" {
			check(e.vault.Current())
		}
	}
	// A service write right after the switch is sealed under the new MK:
	// it must be durable by then too.
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if checked < 7 {
		t.Fatalf("checked %d times", checked)
	}
	e.checkAll(want)

	// And when creating the MK fails, nothing is sealed under anything new.
	e.src.setFail("create", errInjected)
	before := e.vault.Current()
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); !errors.Is(err, errInjected) {
		t.Fatalf("err %v", err)
	}
	if e.vault.Current() != before {
		t.Fatal("switched to a key that was never created")
	}
	usage, _ := e.sqlite.KeyUsage(context.Background())
	if len(usage) != 1 || usage[before] != int64(len(want)) {
		t.Fatalf("usage %v", usage)
	}
}

// Invariant 3: an MK is destroyed only after a check, after the last batch,
// finds no entry that references it. A row that appears under the old MK
// after VERIFY (as a late writer would make it) sends the engine back to
// REWRAP instead of destroying the key.
func TestInvariant3_DestroyOnlyWhenNoEntryReferencesMK(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 10})
	want := e.fill(40)
	old := e.vault.Current()
	oldKey := e.vault.Key(old)
	destroyed := 0
	e.src.onDestroy = func(ref provider.KeyRef) {
		n, err := e.sqlite.CountByKey(context.Background(), ref.ID)
		if err != nil || n != 0 {
			t.Errorf("destroying key %s while %d entries reference it (%v)", ref.ID, n, err)
		}
		destroyed++
	}
	injected := false
	e.trace = func(step string) {
		if step == "verify:synced" && !injected {
			injected = true
			name := "late/writer"
			sealed, _ := oldKey.Seal(nil, testDomain, name, value(name, 1))
			if _, err := e.sqlite.Put(context.Background(), provider.Entry{Name: name, KeyID: old, Sealed: sealed}, provider.Cond{}); err != nil {
				t.Error(err)
			}
			want[name] = value(name, 1)
		}
	}
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if !injected || destroyed != 1 {
		t.Fatalf("injected %v destroyed %d", injected, destroyed)
	}
	e.checkAll(want)
	e.checkOneKey()
}

// Invariant 4: a failure at any step destroys nothing, leaves every entry
// readable and writable, shows FAILED with the error, raises an event, and
// is retried after the retry interval, resuming the same rekey.
func TestInvariant4_FailureDestroysNothingAndRetryResumes(t *testing.T) {
	type fault struct {
		name    string
		arm     func(e *env)
		disarm  func(e *env)
		inError string
		sameKey bool // the retry must not mint another MK
	}
	corrupt := func(e *env) {
		if _, err := e.sqlite.Put(context.Background(), provider.Entry{Name: "svc/corrupt", KeyID: e.vault.Current(), Sealed: []byte("garbage-ciphertext-xxxxxxxxxxxxxxxxx")}, provider.Cond{}); err != nil {
			e.t.Fatal(err)
		}
		e.skip = "svc/corrupt"
	}
	faults := []fault{
		{name: "create", arm: func(e *env) { e.src.setFail("create", errInjected) }, disarm: func(e *env) { e.src.setFail("create", nil) }, inError: "create key", sameKey: true},
		{name: "destroy", arm: func(e *env) { e.src.setFail("destroy", errInjected) }, disarm: func(e *env) { e.src.setFail("destroy", nil) }, inError: "destroy S3 key", sameKey: true},
		{name: "write", arm: func(e *env) { e.store.set(func(f *faultyStore) { f.rewrapErr = errInjected }) }, disarm: func(e *env) { e.store.set(func(f *faultyStore) { f.rewrapErr = nil }) }, inError: "rewrap S3", sameKey: true},
		{name: "load", arm: func(e *env) {
			// The new MK cannot be loaded after a restart between PREPARE and
			// SWITCH: simulated by dropping it from the keyring and failing loads.
			e.trace = func(step string) {
				if step == "prepare:done" {
					e.vault.DropKey(e.eng.Status().To)
					e.src.setFail("load", errInjected)
				}
			}
		}, disarm: func(e *env) { e.trace = nil; e.src.setFail("load", nil) }, inError: "switch S3", sameKey: true},
		{name: "corrupt-row", arm: corrupt, disarm: func(e *env) {
			if err := e.vault.Delete(context.Background(), "svc/corrupt", 0); err != nil {
				e.t.Fatal(err)
			}
			e.skip = ""
		}, inError: `entry "svc/corrupt"`, sameKey: true},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			e := openEnv(t, t.TempDir(), envOpts{batch: 8})
			want := e.fill(50)
			old := e.vault.Current()
			f.arm(e)
			if err := e.eng.Start(provider.LocationLocal); err != nil {
				t.Fatal(err)
			}
			err := e.wait()
			if err == nil || !strings.Contains(err.Error(), f.inError) {
				t.Fatalf("error %v, want one containing %q", err, f.inError)
			}
			st := e.eng.Status()
			if !st.Failed() || !strings.Contains(st.Error, f.inError) {
				t.Fatalf("status %+v", st)
			}
			if want := e.clock.Now().Add(15 * time.Minute); !st.NextRetry.Equal(want) {
				t.Fatalf("next retry %v, want %v", st.NextRetry, want)
			}
			// Nothing destroyed, everything readable and writable.
			if files := e.keyFiles(); !contains(files, old) {
				t.Fatalf("old key %s destroyed; files %v", old, files)
			}
			e.checkAll(want)
			for name := range want {
				if _, _, err := e.vault.Get(context.Background(), name); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.vault.Put(context.Background(), "during/failure", []byte("w"), provider.Cond{}); err != nil {
				t.Fatal(err)
			}
			want["during/failure"] = []byte("w")
			ev := e.events.named(logs.EventRekeyFailed)
			if len(ev) != 1 || ev[0].Attempt != 1 || !strings.Contains(ev[0].Error, f.inError) || ev[0].Domain != testDomain {
				t.Fatalf("events %+v", ev)
			}
			to := st.To
			// Not retried before its time, retried after.
			if e.eng.RetryIfDue(e.clock.Now().Add(14 * time.Minute)) {
				t.Fatal("retried before the retry interval")
			}
			f.disarm(e)
			e.clock.Add(15 * time.Minute)
			if !e.eng.RetryIfDue(e.clock.Now()) {
				t.Fatal("retry not started")
			}
			if err := e.wait(); err != nil {
				t.Fatal(err)
			}
			e.checkAll(want)
			now := e.checkOneKey()
			if f.sameKey && now != to {
				t.Fatalf("retry minted another key %s, want %s", now, to)
			}
			if ev := e.events.named(logs.EventRekeyCompleted); len(ev) != 1 {
				t.Fatalf("completed events %+v", ev)
			}
		})
	}
}

// startFailingAtRewrap starts a rekey whose progress cannot be recorded
// from its REWRAP phase on ("disk full").
func (e *env) startFailingAtRewrap(t *testing.T) {
	t.Helper()
	e.trace = func(step string) {
		if step == "phase:REWRAP" {
			e.store.set(func(f *faultyStore) { f.metaErr = errors.New("disk full") })
		}
	}
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
}

// A failure to record progress (a full disk) is a failure like any other.
func TestEngine_MetadataWriteFailure(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(20)
	e.startFailingAtRewrap(t)
	if err := e.wait(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
	if st := e.eng.Status(); !st.Failed() {
		t.Fatalf("status %+v", st)
	}
	e.checkAll(want)
	e.trace = nil
	e.store.set(func(f *faultyStore) { f.metaErr = nil })
	e.clock.Add(time.Hour)
	e.eng.RetryIfDue(e.clock.Now())
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkAll(want)
	e.checkOneKey()
}

// TestEngine_RetryAfterClockJumpsBack: a failed rekey is retried one retry
// interval after the failure by the clock as it reads then, however far
// the clock went back meanwhile; a clock that did not move keeps the
// interval.
func TestEngine_RetryAfterClockJumpsBack(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(20)
	e.startFailingAtRewrap(t)
	if err := e.wait(); err == nil {
		t.Fatal("rekey did not fail")
	}
	e.trace = nil
	e.store.set(func(f *faultyStore) { f.metaErr = nil })
	failed := e.clock.Now()
	for _, back := range []time.Duration{0, time.Minute, 14 * time.Minute} {
		if e.eng.RetryIfDue(failed.Add(back)) {
			t.Fatalf("retried %v after the failure, before the 15m interval", back)
		}
	}
	// The clock is set back a day: the retry comes now, not in a day.
	if !e.eng.RetryIfDue(failed.Add(-24 * time.Hour)) {
		t.Fatal("retry held back by a clock set back a day")
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkAll(want)
	e.checkOneKey()
	// Nothing pending: no further retry, whatever the clock says.
	if e.eng.RetryIfDue(failed.Add(-48 * time.Hour)) {
		t.Fatal("a completed rekey was run again")
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// Invariant 5: at most one rekey per domain at a time.
func TestInvariant5_OneRekeyAtATime(t *testing.T) {
	release := make(chan struct{})
	var running atomic.Int32
	e := openEnv(t, t.TempDir(), envOpts{batch: 5})
	e.trace = func(step string) {
		if step == "phase:PREPARE" {
			if running.Add(1) > 1 {
				t.Error("two rekeys running")
			}
			<-release
		}
		if step == "destroy:done" {
			running.Add(-1)
		}
	}
	e.fill(20)
	var ok, busy atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			switch err := e.eng.Start(provider.LocationLocal); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrInProgress) && strings.Contains(err.Error(), "rekey already in progress for S3"):
				busy.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if e.eng.Resume() {
		t.Fatal("Resume launched a second run")
	}
	close(release)
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if ok.Load() != 1 || busy.Load() != 15 {
		t.Fatalf("started %d, refused %d", ok.Load(), busy.Load())
	}
	e.checkOneKey()
}

// Invariant 6: a write that lands during a rekey is never lost or reverted
// by a batch. Deterministically: service writes land on rows of the next
// batch, still under the old MK, right before it runs; and at large, with writers running throughout.
func TestInvariant6_WriteDuringRekeyNeverReverted(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 10})
	want := e.fill(50)
	ctx := context.Background()
	var hits atomic.Int32
	e.store.set(func(f *faultyStore) {
		f.beforeRewr = func(after int64, _ string) {
			// Overwrite one row of the batch about to be rewritten, and
			// delete another.
			var next []provider.Entry
			for name := range want {
				if got, err := e.sqlite.Get(ctx, name); err == nil && got.Ref > after && got.KeyID != e.vault.Current() {
					next = append(next, got)
				}
			}
			if len(next) < 2 {
				return
			}
			slices.SortFunc(next, func(a, b provider.Entry) int { return cmp.Compare(a.Ref, b.Ref) })
			b := next[1]
			if _, err := e.vault.Put(ctx, b.Name, value(b.Name, 99), provider.Cond{}); err != nil {
				t.Error(err)
			}
			want[b.Name] = value(b.Name, 99)
			d := next[0]
			if err := e.vault.Delete(ctx, d.Name, 0); err != nil {
				t.Error(err)
			}
			delete(want, d.Name)
			hits.Add(1)
		}
	})
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if hits.Load() < 3 {
		t.Fatalf("only %d interleavings", hits.Load())
	}
	e.checkAll(want)
	e.checkOneKey()
}

func TestInvariant6_ConcurrentWritersDuringRekey(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 16})
	want := e.fill(400)
	ctx := context.Background()
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("svc/entry-%05d", (i*4+w)%400)
				if i%3 == 0 {
					name = fmt.Sprintf("writer-%d/%d", w, i%50)
				}
				v := value(name, i+1)
				if _, err := e.vault.Put(ctx, name, v, provider.Cond{}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[name] = v // acknowledged: nobody else writes this name concurrently with us
				mu.Unlock()
			}
		})
	}
	for range 3 {
		if err := e.eng.Start(provider.LocationLocal); err != nil {
			t.Fatal(err)
		}
		if err := e.wait(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	e.checkAll(want)
	e.checkOneKey()
}

// Invariant 7: a restart resumes an interrupted rekey at once.
func TestInvariant7_RestartResumesInterruptedRekey(t *testing.T) {
	for _, at := range []string{"phase:PREPARE", "prepare:done", "switch:done", "rewrap:batch", "verify:synced", "destroy:source"} {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			stopped := make(chan struct{})
			var once sync.Once
			e := openEnv(t, dir, envOpts{batch: 6})
			e.trace = func(step string) {
				if step == at {
					once.Do(func() { close(stopped) })
					<-stopped
					// Give Close time to cancel; the engine must stop here.
					for e.eng.ctx.Err() == nil {
						time.Sleep(time.Millisecond)
					}
				}
			}
			want := e.fill(40)
			if err := e.eng.Start(provider.LocationLocal); err != nil {
				t.Fatal(err)
			}
			<-stopped
			e.eng.Close()
			phase := e.eng.Status().Phase
			e.sqlite.Close()
			if phase == PhaseNone {
				t.Fatalf("rekey finished despite the stop at %s", at)
			}
			e2 := openEnv(t, dir, envOpts{batch: 6})
			if st := e2.eng.Status(); st.Phase != phase {
				t.Fatalf("persisted phase %q, want %q", st.Phase, phase)
			}
			if !e2.eng.Resume() {
				t.Fatal("nothing to resume")
			}
			if err := e2.wait(); err != nil {
				t.Fatal(err)
			}
			e2.checkAll(want)
			e2.checkOneKey()
		})
	}
}

func TestEngine_StartWhenFailedRetriesNow(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	e.fill(10)
	e.src.setFail("destroy", errInjected)
	e.eng.Start(provider.LocationLocal)
	e.wait()
	to := e.eng.Status().To
	e.src.setFail("destroy", nil)
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if got := e.checkOneKey(); got != to {
		t.Fatalf("key %s, want the failed rekey's %s", got, to)
	}
	if st := e.eng.Status(); st.Attempts != 0 && st.Pending() {
		t.Fatalf("%+v", st)
	}
}

func TestEngine_UnusableNewKeyIsReplaced(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(10)
	// The new key's file is damaged between PREPARE and SWITCH (a crash
	// and a bad disk): nothing is sealed under it, so another is minted.
	e.trace = func(step string) {
		if step == "prepare:done" {
			to := e.eng.Status().To
			e.vault.DropKey(to)
			e.src.LocalKeys.Destroy(context.Background(), provider.KeyRef{Domain: testDomain, ID: to})
		}
	}
	first := ""
	e.trace = func(step string) {
		if step == "prepare:done" && first == "" {
			first = e.eng.Status().To
			e.vault.DropKey(first)
			e.src.LocalKeys.Destroy(context.Background(), provider.KeyRef{Domain: testDomain, ID: first})
		}
	}
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if got := e.checkOneKey(); got == first {
		t.Fatal("kept the unusable key")
	}
	e.checkAll(want)
}

func TestEngine_CloseWhileIdleAndStartAfterClose(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{})
	e.eng.Close()
	if err := e.eng.Start(provider.LocationLocal); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v", err)
	}
}

// TestEngine_NoProgressStops: entries that a pass can never rewrite (here
// every batch is dropped before it reaches the store) send VERIFY back to
// REWRAP a bounded number of times; then the run fails with ErrNoProgress,
// keeping both MKs and every entry readable, and a retry with the fault
// gone completes.
func TestEngine_NoProgressStops(t *testing.T) {
	e := openEnv(t, t.TempDir(), envOpts{batch: 8})
	want := e.fill(30)
	old := e.checkOneKey()
	passes := 0
	e.store.set(func(f *faultyStore) {
		f.starve = true
	})
	e.trace = func(step string) {
		if step == "phase:REWRAP" {
			passes++
		}
	}
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); !errors.Is(err, ErrNoProgress) {
		t.Fatalf("rekey that can rewrite nothing ended with %v, want ErrNoProgress", err)
	}
	if passes != maxPasses+1 {
		t.Errorf("%d REWRAP passes, want %d", passes, maxPasses+1)
	}
	if files := e.keyFiles(); !contains(files, old) || len(files) != 2 {
		t.Fatalf("key files after the failure: %v, want the old and the new", files)
	}
	e.checkAll(want)
	e.trace = nil
	e.store.set(func(f *faultyStore) { f.starve = false })
	e.clock.Add(time.Hour)
	if !e.eng.RetryIfDue(e.clock.Now()) {
		t.Fatal("retry not started")
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkAll(want)
	if now := e.checkOneKey(); now == old {
		t.Fatal("the old key is still the only one")
	}
}

// TestEngine_CompletionEventSurvivesCrash: the completion event is kept
// with the end of the rekey, so a crash between that commit and the event
// loses nothing: the next start emits it, once, and not at all if the
// journal already holds it (a crash after the emit).
func TestEngine_CompletionEventSurvivesCrash(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := openEnv(t, dir, envOpts{batch: 8})
	e.fill(10)
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(e.events.named(logs.EventRekeyCompleted)); n != 1 {
		t.Fatalf("%d completion events, want 1", n)
	}
	pending := func(s provider.Store) []byte {
		b, err := s.State(ctx, completedKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := pending(e.sqlite); b != nil {
		t.Fatal("the completion event is still pending after it was emitted")
	}
	// The store as a crash right after the final commit leaves it.
	crashAfterCommit := func(s provider.Store) {
		b, err := json.Marshal(logs.Event{Name: logs.EventRekeyCompleted, KeyID: "k2", Message: "rekey of S3 completed"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateMeta(ctx, provider.MetaUpdate{Set: map[string][]byte{completedKey: b}}); err != nil {
			t.Fatal(err)
		}
	}
	crashAfterCommit(e.sqlite)
	e.close()

	e2 := openEnv(t, dir, envOpts{batch: 8})
	got := e2.events.named(logs.EventRekeyCompleted)
	if len(got) != 1 || got[0].KeyID != "k2" || got[0].Domain != testDomain {
		t.Fatalf("events at the start after the crash: %+v, want the pending completion of k2", got)
	}
	if pending(e2.sqlite) != nil {
		t.Fatal("the completion event is still pending after the start emitted it")
	}
	e2.close()
	if e3 := openEnv(t, dir, envOpts{batch: 8}); len(e3.events.named(logs.EventRekeyCompleted)) != 0 {
		t.Fatal("a completion event emitted again at the next start")
	} else {
		crashAfterCommit(e3.sqlite) // and this time the journal got it before the crash
		e3.close()
	}
	journal := &recorder{}
	journal.Emit(got[0])
	e4 := openEnv(t, dir, envOpts{batch: 8, events: journal})
	if n := len(e4.events.named(logs.EventRekeyCompleted)); n != 1 {
		t.Fatalf("%d completion events of k2 in the journal after the start, want 1", n)
	}
	if pending(e4.sqlite) != nil {
		t.Fatal("the completion event is still pending")
	}
}
