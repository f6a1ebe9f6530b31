package domains_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// TestRekey_ResumesAtStart (invariant 7): a rekey interrupted by Close in
// the middle of REWRAP resumes by itself at the next Open.
func TestRekey_ResumesAtStart(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	v := vault(t, r, "S3")
	want := fill(t, v, "s3", 2000)
	old := keyIDs(t, r)["S3"]

	var batches atomic.Int32
	reached, release := make(chan struct{}), make(chan struct{})
	e.trace.Set(func(d, step string) {
		if d != "S3" || step != "rewrap:batch" {
			return
		}
		switch n := batches.Add(1); {
		case n == 3:
			close(reached)
			<-release
		case n > 3:
			// Slow enough that Close lands long before the last batch.
			time.Sleep(5 * time.Millisecond)
		}
	})
	if _, err := r.StartRekey(logs.ScopeCluster, []string{"S3"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(waitLimit):
		t.Fatal("third batch never reached")
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	time.Sleep(20 * time.Millisecond) // let Close cancel the engine
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not return")
	}
	e.trace.Set(nil)

	// Interrupted, not failed: the state is persisted mid-REWRAP.
	var st rekey.State
	raw := rekeyState(t, r.StorePath("S3"))
	if raw == "" {
		t.Fatalf("no rekey state after Close: the rekey ran to its end before Close (%d batches)", batches.Load())
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	if st.Phase != rekey.PhaseRewrap || st.From != old || st.Error != "" {
		t.Fatalf("state after Close = %+v, want REWRAP from %s with no error", st, old)
	}
	if n := len(e.events.Events("", "")); n != 0 {
		t.Fatalf("an interrupted rekey raised %d events: %+v", n, e.events.Events("", ""))
	}
	if files := e.keyFiles("S3"); !slices.Equal(files, sorted(old, st.To)) {
		t.Fatalf("S3 key files %v while interrupted, want old and new", files)
	}

	// Open again, starting nothing.
	r2 := e.open()
	first := status(t, r2, "S3")
	if first.Status != domains.StatusInProgress && first.Status != domains.StatusActive {
		t.Errorf("S3 right after reopen: %+v, want IN_PROGRESS (or already ACTIVE)", first)
	}
	waitActive(t, r2, "S3")
	final := status(t, r2, "S3")
	if final.KeyID != st.To || final.KeyID == old {
		t.Errorf("S3 key after resume %s, want the interrupted rekey's %s", final.KeyID, st.To)
	}
	checkEntries(t, vault(t, r2, "S3"), want)
	if files := e.keyFiles("S3"); !slices.Equal(files, []string{st.To}) {
		t.Errorf("S3 key files %v after resume, want [%s]", files, st.To)
	}
	if n, err := vault(t, r2, "S3").Store().CountByKey(t.Context(), old); err != nil || n != 0 {
		t.Errorf("%d entries under the old key, %v", n, err)
	}
	if evs := e.events.Events("", ""); len(evs) != 1 || evs[0].Name != logs.EventRekeyCompleted || evs[0].KeyID != st.To {
		t.Errorf("events %+v, want one completion under %s", evs, st.To)
	}
}

// TestRekey_ConcurrentWriters (invariant 6): writes that land while a
// rekey rewraps the same rows are neither lost nor reverted.
func TestRekey_ConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	r := e.open()
	v := vault(t, r, "S3")
	const prefilled = 1500
	want := fill(t, v, "s3", prefilled)
	old := keyIDs(t, r)["S3"]

	// Slow every batch down while the writers run, so they overlap.
	var writing atomic.Bool
	writing.Store(true)
	rewrapping := make(chan struct{})
	var once sync.Once
	e.trace.Set(func(d, step string) {
		if d != "S3" || step != "rewrap:batch" {
			return
		}
		once.Do(func() { close(rewrapping) })
		if writing.Load() {
			time.Sleep(2 * time.Millisecond)
		}
	})
	if _, err := r.StartRekey(logs.ScopeCluster, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rewrapping:
	case <-time.After(waitLimit):
		t.Fatal("S3 never reached REWRAP")
	}

	const writers, puts = 4, 300
	last := make([]map[string][]byte, writers)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		last[w] = map[string][]byte{}
		wg.Go(func() {
			for i := range puts {
				var name string
				switch i % 3 {
				case 0: // a prefilled row, spread over the table, owned by this writer
					name = fmt.Sprintf("s3-%05d", (i*37)%(prefilled/writers)*writers+w)
				case 1: // a new name, rewritten several times
					name = fmt.Sprintf("w%d-new-%02d", w, i%20)
				default: // a new name, written once
					name = fmt.Sprintf("w%d-once-%03d", w, i)
				}
				val := fmt.Appendf(nil, "writer %d put %d \x00\xff", w, i)
				if _, err := v.Put(t.Context(), name, val, provider.Cond{}); err != nil {
					errs <- fmt.Errorf("writer %d put %d %s: %w", w, i, name, err)
					return
				}
				last[w][name] = val
			}
		})
	}
	wg.Wait()
	writing.Store(false)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rewrapped := status(t, r, "S3")
	waitActive(t, r, domains.ClusterDomains...)
	if rewrapped.Status != domains.StatusInProgress {
		t.Logf("note: S3's rekey ended before the writers did (%+v)", rewrapped)
	}

	for w := range writers {
		for name, val := range last[w] {
			want[name] = val
		}
	}
	checkEntries(t, v, want)
	if n, err := v.Store().CountByKey(t.Context(), old); err != nil || n != 0 {
		t.Errorf("%d entries still under the old key %s, %v", n, old, err)
	}
	st := status(t, r, "S3")
	if st.Entries != int64(len(want)) || st.KeyID == old {
		t.Errorf("S3 %+v, want %d entries under a new key", st, len(want))
	}
	if files := e.keyFiles("S3"); !slices.Equal(files, []string{st.KeyID}) {
		t.Errorf("S3 key files %v, want [%s]", files, st.KeyID)
	}
	if s := waitSchedule(t, r, logs.ScopeCluster); s.LastResult != rekey.ResultSucceeded {
		t.Errorf("cluster schedule %+v", s)
	}
}
