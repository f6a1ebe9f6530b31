package logs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmd-project/kmd/internal/testclock"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// stepClock returns a clock that starts at t0 and moves a minute per call.
func stepClock() func() time.Time { return testclock.Step(t0, time.Minute) }

func openTestJournal(t *testing.T, o JournalOptions) (*Journal, *observer.ObservedLogs) {
	t.Helper()
	core, obs := observer.New(zapcore.DebugLevel)
	o.Logger = zap.New(core)
	if o.Now == nil {
		o.Now = stepClock()
	}
	j, err := OpenJournal(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, obs
}

func failed(attempt int) Event {
	return Event{Name: EventRekeyFailed, Scope: ScopeCluster, Domain: "S3", KeyID: "mk-2",
		Attempt: attempt, Error: "rekey S3: wrap entry bucket-a: kmip: timeout", Message: "rekey of S3 failed"}
}

func sedFailed() Event {
	return Event{Name: EventSedsRekeyFailed, Scope: ScopeSED, Domain: "SED", Node: 3,
		Attempt: 1, Error: "rekey SED: unlock drive sda: locked", Message: "rekey of the SEDs failed"}
}

func completed() Event {
	return Event{Name: EventRekeyCompleted, Scope: ScopeCluster, Domain: "S3", KeyID: "mk-3",
		Message: "rekey of S3 completed"}
}

func seqs(es []Event) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// fileEvents parses the journal file strictly.
func fileEvents(t *testing.T, dir string) []Event {
	t.Helper()
	var out []Event
	for i, line := range readLines(t, filepath.Join(dir, JournalFile)) {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("journal line %d %q: %v", i+1, line, err)
		}
		out = append(out, e)
	}
	return out
}

func TestJournalPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	j, _ := openTestJournal(t, JournalOptions{Dir: dir})
	j.Emit(failed(1))
	j.Emit(sedFailed())
	paris := time.FixedZone("CEST", 2*3600)
	given := completed()
	given.Time = time.Date(2024, 5, 1, 15, 0, 0, 0, paris)
	j.Emit(given)
	before := j.List(time.Time{})
	if got, want := seqs(before), []int64{1, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("seqs %v, want %v", got, want)
	}
	if !before[0].Time.Equal(t0) || before[0].Time.Location() != time.UTC {
		t.Errorf("assigned time %v, want %v UTC", before[0].Time, t0)
	}
	if !before[2].Time.Equal(given.Time) || before[2].Time.Location() != time.UTC {
		t.Errorf("given time kept as %v, want %v in UTC", before[2].Time, given.Time)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("journal mode %v, want 0600", perm)
	}
	if got := fileEvents(t, dir); !reflect.DeepEqual(got, before) {
		t.Errorf("file holds %+v, want %+v", got, before)
	}

	j2, _ := openTestJournal(t, JournalOptions{Dir: dir})
	if got := j2.List(time.Time{}); !reflect.DeepEqual(got, before) {
		t.Fatalf("after reopen List = %+v, want %+v", got, before)
	}
	j2.Emit(completed())
	if got := seqs(j2.List(time.Time{})); !reflect.DeepEqual(got, []int64{1, 2, 3, 4}) {
		t.Errorf("seqs after reopen and Emit %v, want 1..4", got)
	}
}

func TestJournalEmitLogs(t *testing.T) {
	j, obs := openTestJournal(t, JournalOptions{Dir: t.TempDir()})
	j.Emit(failed(2))
	j.Emit(sedFailed())
	j.Emit(completed())
	entries := obs.FilterMessage("event").AllUntimed()
	if len(entries) != 3 {
		t.Fatalf("%d event log entries, want 3: %v", len(entries), obs.AllUntimed())
	}
	want := []struct {
		level  zapcore.Level
		fields map[string]any
	}{
		{zapcore.WarnLevel, map[string]any{EventName: EventRekeyFailed, Domain: "S3", Scope: ScopeCluster,
			KeyID: "mk-2", Attempt: int64(2), Error: "rekey S3: wrap entry bucket-a: kmip: timeout"}},
		{zapcore.WarnLevel, map[string]any{EventName: EventSedsRekeyFailed, Domain: "SED", Scope: ScopeSED,
			Node: int64(3), Attempt: int64(1), Error: "rekey SED: unlock drive sda: locked"}},
		{zapcore.InfoLevel, map[string]any{EventName: EventRekeyCompleted, Domain: "S3", Scope: ScopeCluster,
			KeyID: "mk-3"}},
	}
	for i, e := range entries {
		if e.Level != want[i].level {
			t.Errorf("entry %d level %v, want %v", i, e.Level, want[i].level)
		}
		if got := e.ContextMap(); !reflect.DeepEqual(got, want[i].fields) {
			t.Errorf("entry %d fields %v, want %v", i, got, want[i].fields)
		}
	}
	if n := obs.Len(); n != 3 {
		t.Errorf("%d log entries, want only the 3 events: %v", n, obs.AllUntimed())
	}
}

func TestJournalTornLastLine(t *testing.T) {
	for name, tail := range map[string]string{
		"no newline":      `{"seq":3,"time":"2024-05-01T12:0`,
		"garbage line":    "\x00\x00\x00\x00\n",
		"two bad lines":   "{\"seq\":3,\n\x00\x00",
		"truncated value": `{"seq":3,"event":"KeyManagerRekeyCompleted"` + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, JournalFile)
			j, _ := openTestJournal(t, JournalOptions{Dir: dir})
			j.Emit(failed(1))
			j.Emit(completed())
			want := j.List(time.Time{})
			j.Close()
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tail)
			f.Close()

			j2, obs := openTestJournal(t, JournalOptions{Dir: dir})
			if got := j2.List(time.Time{}); !reflect.DeepEqual(got, want) {
				t.Errorf("List = %+v, want %+v", got, want)
			}
			if b, _ := os.ReadFile(path); !bytes.Equal(b, good) {
				t.Errorf("file not truncated to the last good line:\n%q\nwant\n%q", b, good)
			}
			if n := obs.FilterMessage("drop torn event journal tail").FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
				t.Errorf("%d torn tail warnings, want 1: %v", n, obs.AllUntimed())
			}
			j2.Emit(sedFailed())
			if got := seqs(fileEvents(t, dir)); !reflect.DeepEqual(got, []int64{1, 2, 3}) {
				t.Errorf("file seqs %v after Emit, want 1 2 3", got)
			}
		})
	}
}

func TestJournalSkipsCorruptMiddleLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, JournalFile)
	content := `{"seq":1,"time":"2024-05-01T12:00:00Z","event":"KeyManagerRekeyCompleted","scope":"cluster","domain":"S3","message":""}` + "\n" +
		"not json\n" +
		`{"seq":3,"time":"2024-05-01T12:02:00Z","event":"KeyManagerRekeyCompleted","scope":"cluster","domain":"S3","message":""}` + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	j, obs := openTestJournal(t, JournalOptions{Dir: dir})
	if got := seqs(j.List(time.Time{})); !reflect.DeepEqual(got, []int64{1, 3}) {
		t.Errorf("seqs %v, want 1 3", got)
	}
	skips := obs.FilterMessage("skip corrupt event journal lines").AllUntimed()
	if len(skips) != 1 || skips[0].ContextMap()[Total] != int64(1) {
		t.Errorf("skip warnings %v, want one with total 1", skips)
	}
	if obs.FilterMessage("drop torn event journal tail").Len() != 0 {
		t.Error("a corrupt middle line was taken for a torn tail")
	}
	j.Emit(completed())
	if got := j.List(time.Time{}); got[len(got)-1].Seq != 4 {
		t.Errorf("next seq %d, want 4", got[len(got)-1].Seq)
	}
}

func TestJournalListSince(t *testing.T) {
	j, _ := openTestJournal(t, JournalOptions{Dir: t.TempDir()})
	for range 5 {
		j.Emit(completed()) // at t0, t0+1m, ..., t0+4m
	}
	if got := seqs(j.List(time.Time{})); !reflect.DeepEqual(got, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("List(zero) seqs %v, want all", got)
	}
	if got := seqs(j.List(t0.Add(2 * time.Minute))); !reflect.DeepEqual(got, []int64{3, 4, 5}) {
		t.Errorf("List(t0+2m) seqs %v, want 3 4 5", got)
	}
	if got := seqs(j.List(t0.Add(90 * time.Second).In(time.FixedZone("X", -5*3600)))); !reflect.DeepEqual(got, []int64{3, 4, 5}) {
		t.Errorf("List(t0+90s in another zone) seqs %v, want 3 4 5", got)
	}
	if got := j.List(t0.Add(time.Hour)); got == nil || len(got) != 0 {
		t.Errorf("List(future) = %#v, want empty non-nil", got)
	}
	got := j.List(time.Time{})
	got[0].Error = "changed"
	if j.List(time.Time{})[0].Error == "changed" {
		t.Error("List returned the journal's own events, not copies")
	}
}

func TestJournalCompaction(t *testing.T) {
	dir := t.TempDir()
	j, obs := openTestJournal(t, JournalOptions{Dir: dir, MaxEvents: 10})
	for range 25 {
		j.Emit(completed())
	}
	list := j.List(time.Time{})
	if len(list) < 10 || len(list) > 11 {
		t.Fatalf("%d events kept, want 10 or 11 (max 10 + 10%%)", len(list))
	}
	for i, e := range list {
		if want := int64(25 - len(list) + 1 + i); e.Seq != want {
			t.Fatalf("kept seqs %v, want the newest ending at 25", seqs(list))
		}
	}
	if obs.FilterMessage("event journal compacted").Len() == 0 {
		t.Error("no compaction logged")
	}
	if got := fileEvents(t, dir); !reflect.DeepEqual(got, list) {
		t.Errorf("file holds seqs %v, want %v", seqs(got), seqs(list))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("dir holds %v, want only the journal", ents)
	}
	fi, err := os.Stat(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("compacted journal mode %v, want 0600", perm)
	}
	j.Close()

	j2, _ := openTestJournal(t, JournalOptions{Dir: dir, MaxEvents: 10})
	if got := j2.List(time.Time{}); !reflect.DeepEqual(got, list) {
		t.Fatalf("after reopen seqs %v, want %v", seqs(got), seqs(list))
	}
	j2.Emit(completed())
	if got := j2.List(time.Time{}); got[len(got)-1].Seq != 26 {
		t.Errorf("seq after reopen %d, want 26", got[len(got)-1].Seq)
	}
	j2.Close()

	// A smaller maximum compacts on open.
	j3, _ := openTestJournal(t, JournalOptions{Dir: dir, MaxEvents: 5})
	if got := seqs(j3.List(time.Time{})); !reflect.DeepEqual(got, []int64{22, 23, 24, 25, 26}) {
		t.Errorf("compacted on open to %v, want 22..26", got)
	}
	if got := seqs(fileEvents(t, dir)); !reflect.DeepEqual(got, []int64{22, 23, 24, 25, 26}) {
		t.Errorf("file compacted on open to %v, want 22..26", got)
	}
}

func TestJournalCompactionFailure(t *testing.T) {
	dir := t.TempDir()
	j, obs := openTestJournal(t, JournalOptions{Dir: dir, MaxEvents: 2})
	j.Emit(completed())
	j.Emit(completed())
	// Make the rewrite fail: its temporary file goes to a dir that is gone.
	j.mu.Lock()
	j.path = filepath.Join(dir, "gone", JournalFile)
	j.mu.Unlock()
	j.Emit(completed())
	if obs.FilterMessage("compact event journal").FilterLevelExact(zapcore.ErrorLevel).Len() != 1 {
		t.Fatalf("compaction failure not logged: %v", obs.AllUntimed())
	}
	j.Emit(completed())
	// The journal kept appending to the file it had.
	if got := seqs(fileEvents(t, dir)); !reflect.DeepEqual(got, []int64{1, 2, 3, 4}) {
		t.Errorf("file seqs %v, want 1..4", got)
	}
}

func TestJournalWriteFailure(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "hook.out")
	j, obs := openTestJournal(t, JournalOptions{Dir: dir, Hook: "cat >> " + out})
	j.Emit(completed())
	// Swap the journal's file for a read-only handle, so appends fail.
	ro, err := os.Open(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	rw := j.f
	j.f = ro
	j.mu.Unlock()
	j.Emit(failed(1))
	j.mu.Lock()
	j.f = rw
	j.mu.Unlock()
	ro.Close()
	j.Emit(completed())
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	errs := obs.FilterMessage("write event journal").FilterLevelExact(zapcore.ErrorLevel).AllUntimed()
	if len(errs) != 1 || errs[0].ContextMap()[EventName] != EventRekeyFailed {
		t.Fatalf("write failures logged %v, want one for the failed event", errs)
	}
	if n := obs.FilterMessage("event").Len(); n != 3 {
		t.Errorf("%d events logged, want 3", n)
	}
	if got := seqs(j.List(time.Time{})); !reflect.DeepEqual(got, []int64{1, 2, 3}) {
		t.Errorf("List seqs %v, want 1 2 3", got)
	}
	if got := seqs(fileEvents(t, dir)); !reflect.DeepEqual(got, []int64{1, 3}) {
		t.Errorf("file seqs %v, want 1 3", got)
	}
	if n := len(readLines(t, out)); n != 3 {
		t.Errorf("hook got %d lines, want 3", n)
	}
}

func TestJournalEmitAfterClose(t *testing.T) {
	j, obs := openTestJournal(t, JournalOptions{Dir: t.TempDir(), Hook: "true"})
	j.Close()
	j.Emit(failed(1))
	if obs.FilterMessage("write event journal").Len() != 1 || obs.FilterMessage("event").Len() != 1 {
		t.Errorf("Emit after Close logged %v, want the event and a write failure", obs.AllUntimed())
	}
}

func TestOpenJournalErrors(t *testing.T) {
	if _, err := OpenJournal(JournalOptions{}); err == nil {
		t.Error("OpenJournal with no dir succeeded")
	}
	dir := filepath.Join(t.TempDir(), "missing")
	_, err := OpenJournal(JournalOptions{Dir: dir})
	if err == nil || !strings.HasPrefix(err.Error(), "open event journal: ") {
		t.Errorf("OpenJournal in a missing dir: %v, want open event journal error", err)
	}
	// Defaults.
	j, err := OpenJournal(JournalOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.max != DefaultMaxEvents || j.log == nil || j.now == nil {
		t.Errorf("defaults not applied: max %d", j.max)
	}
	j.Emit(completed())
	if e := j.List(time.Time{})[0]; time.Since(e.Time) > time.Minute || e.Time.Location() != time.UTC {
		t.Errorf("default clock gave %v", e.Time)
	}
}

func TestJournalHook(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "hook.out")
	j, obs := openTestJournal(t, JournalOptions{Dir: dir, Hook: "cat >> '" + out + "'"})
	j.Emit(failed(1))
	j.Emit(sedFailed())
	j.Emit(completed())
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Errorf("hook input %q does not end in a newline", b)
	}
	lines := readLines(t, out)
	want := j.List(time.Time{})
	if len(lines) != len(want) {
		t.Fatalf("hook got %d lines, want %d: %q", len(lines), len(want), lines)
	}
	for i, line := range lines {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("hook line %q: %v", line, err)
		}
		if !reflect.DeepEqual(e, want[i]) {
			t.Errorf("hook line %d = %+v, want %+v", i, e, want[i])
		}
	}
	if n := obs.FilterMessage("run event hook").Len(); n != 0 {
		t.Errorf("%d hook failures logged, want 0", n)
	}
}

func TestJournalFailingHook(t *testing.T) {
	dir := t.TempDir()
	j, obs := openTestJournal(t, JournalOptions{Dir: dir, Hook: "sleep 1; exit 3"})
	start := time.Now()
	j.Emit(failed(1))
	j.Emit(completed())
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Emit took %v with a slow hook: it waited for the hook", d)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	fails := obs.FilterMessage("run event hook").FilterLevelExact(zapcore.ErrorLevel).AllUntimed()
	if len(fails) != 2 {
		t.Fatalf("%d hook failures logged, want 2: %v", len(fails), obs.AllUntimed())
	}
	for i, name := range []string{EventRekeyFailed, EventRekeyCompleted} {
		m := fails[i].ContextMap()
		if m[EventName] != name || m[Seq] != int64(i+1) || m[ExitStatus] != int64(3) ||
			!strings.Contains(fmt.Sprint(m[Error]), "exit status 3") {
			t.Errorf("failure %d logged with %v", i, m)
		}
	}
}

func TestJournalHookTimeoutAndClose(t *testing.T) {
	dir := t.TempDir()
	j, obs := openTestJournal(t, JournalOptions{Dir: dir, Hook: "sleep 30"})
	j.hookTimeout = 300 * time.Millisecond
	for range 3 {
		j.Emit(completed())
	}
	start := time.Now()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v, want it bounded by the hook timeout", d)
	}
	var accounted int64
	for _, e := range obs.FilterMessage("run event hook").AllUntimed() {
		accounted++
		if !strings.Contains(fmt.Sprint(e.ContextMap()[Error]), "context") {
			t.Errorf("hook failure %v does not say it timed out", e.ContextMap())
		}
	}
	for _, e := range obs.FilterMessage("drop event hook runs: journal closed").AllUntimed() {
		accounted += e.ContextMap()[Total].(int64)
	}
	if accounted != 3 {
		t.Errorf("%d of 3 hook runs accounted for in the log: %v", accounted, obs.AllUntimed())
	}
}

func TestJournalConcurrentEmit(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "hook.out")
	j, _ := openTestJournal(t, JournalOptions{Dir: dir, Hook: "cat >> " + out, Now: time.Now})
	const goroutines, each = 8, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for n := range each {
				e := completed()
				e.Node = g
				e.Attempt = n + 1
				j.Emit(e)
				j.List(time.Time{})
			}
		})
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(what string, es []Event) {
		t.Helper()
		if len(es) != goroutines*each {
			t.Fatalf("%s: %d events, want %d", what, len(es), goroutines*each)
		}
		for i, e := range es {
			if e.Seq != int64(i+1) {
				t.Fatalf("%s: event %d has seq %d: seqs not unique and increasing", what, i, e.Seq)
			}
		}
	}
	check("List", j.List(time.Time{}))
	check("file", fileEvents(t, dir))
	var hooked []Event
	for _, line := range readLines(t, out) {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		hooked = append(hooked, e)
	}
	check("hook", hooked)
}

// TestJournal_Has: the journal tells an event it holds, by name, domain and
// key ID, also after a reopen; it is how a completion event recorded with
// a rekey's end is emitted once across a crash.
func TestJournal_Has(t *testing.T) {
	dir := t.TempDir()
	j, _ := openTestJournal(t, JournalOptions{Dir: dir})
	j.Emit(Event{Name: EventRekeyCompleted, Scope: ScopeCluster, Domain: "S3", KeyID: "k2"})
	if !j.Has(EventRekeyCompleted, "S3", "k2") {
		t.Error("Has misses the event just emitted")
	}
	for _, c := range [][3]string{{EventRekeyFailed, "S3", "k2"}, {EventRekeyCompleted, "FTP", "k2"}, {EventRekeyCompleted, "S3", "k3"}} {
		if j.Has(c[0], c[1], c[2]) {
			t.Errorf("Has(%v) is true, but no such event was emitted", c)
		}
	}
	j.Close()
	j2, _ := openTestJournal(t, JournalOptions{Dir: dir})
	if !j2.Has(EventRekeyCompleted, "S3", "k2") {
		t.Error("Has misses the event after a reopen")
	}
}
