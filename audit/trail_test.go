package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmd-project/kmd/internal/testclock"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kmd-project/kmd/access"
)

var t0 = time.Date(2026, 11, 22, 9, 19, 16, 123456789, time.UTC)

// stepClock starts at t0 and moves a second per call.
func stepClock() func() time.Time { return testclock.Step(t0, time.Second) }

func openTestTrail(t *testing.T, o Options) (*Trail, *observer.ObservedLogs) {
	t.Helper()
	core, obs := observer.New(zapcore.DebugLevel)
	o.Logger = zap.New(core)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Now == nil {
		o.Now = stepClock()
	}
	tr, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, obs
}

func mustRecord(t *testing.T, tr *Trail, ctx context.Context, r Record) {
	t.Helper()
	if err := tr.Record(ctx, r); err != nil {
		t.Fatalf("Record(%+v): %v", r, err)
	}
}

func mustList(t *testing.T, tr *Trail, since time.Time, limit int) []Record {
	t.Helper()
	rs, err := tr.List(since, limit)
	if err != nil {
		t.Fatalf("List(%v, %d): %v", since, limit, err)
	}
	return rs
}

// fileLines returns the lines of the trail file, each checked to be a JSON
// object with exactly the documented fields.
func fileLines(t *testing.T, dir string) []map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, File))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %d %q: %v", len(out)+1, sc.Text(), err)
		}
		for k := range m {
			if !strings.Contains(" time who via from action target detail outcome status error seq ", " "+k+" ") {
				t.Errorf("audit line %d has an undocumented field %q", len(out)+1, k)
			}
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func seqs(rs []Record) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

var adminCtx = access.WithCaller(context.Background(),
	&access.Caller{Via: access.ViaSocket, UID: 0, PID: 42, Remote: "unix:/var/lib/kmd/kmd.sock", Roles: []access.Role{access.Admin}})

func TestTrail_AppendAndList(t *testing.T) {
	dir := t.TempDir()
	tr, _ := openTestTrail(t, Options{Dir: dir})
	mustRecord(t, tr, adminCtx, Record{Action: "rekey.modify", Target: "cluster", Detail: "key_rotation=6W", Outcome: OK, Status: 200})
	mustRecord(t, tr, adminCtx, Record{Action: "entry.delete", Target: "S3/gw/token", Outcome: Refused, Status: 404,
		Error: `entry not found: "gw/token"`})
	got := mustList(t, tr, time.Time{}, 0)
	want := []Record{
		{Time: t0, Who: "uid 0", Via: "socket", From: "unix:/var/lib/kmd/kmd.sock", Action: "rekey.modify", Target: "cluster",
			Detail: "key_rotation=6W", Outcome: OK, Status: 200, Seq: 1},
		{Time: t0.Add(time.Second), Who: "uid 0", Via: "socket", From: "unix:/var/lib/kmd/kmd.sock", Action: "entry.delete",
			Target: "S3/gw/token", Outcome: Refused, Status: 404, Error: `entry not found: "gw/token"`, Seq: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n%+v\nwant:\n%+v", got, want)
	}

	lines := fileLines(t, dir)
	if len(lines) != 2 {
		t.Fatalf("%d lines in the file, want 2", len(lines))
	}
	if lines[0]["time"] != "2026-11-22T09:19:16.123456789Z" || lines[0]["seq"] != 1.0 || lines[0]["status"] != 200.0 {
		t.Errorf("first line %v: want time 2026-11-22T09:19:16.123456789Z, seq 1, status 200", lines[0])
	}
	if _, ok := lines[0]["error"]; ok {
		t.Errorf("an ok record has an error field: %v", lines[0])
	}
	if _, ok := lines[1]["detail"]; ok {
		t.Errorf("a record without detail has a detail field: %v", lines[1])
	}
	b, _ := os.ReadFile(filepath.Join(dir, File))
	if !strings.HasPrefix(string(b), `{"time":"2026-11-22T09:19:16.123456789Z","who":"uid 0","via":"socket","from":"unix:/var/lib/kmd/kmd.sock","action":"rekey.modify",`) {
		t.Errorf("fields out of the documented order:\n%s", b)
	}
	fi, err := os.Stat(filepath.Join(dir, File))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("audit.log mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestTrail_TimesKeepEveryNanosecondDigit(t *testing.T) {
	dir := t.TempDir()
	clock := []time.Time{time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)), time.Date(2026, 1, 2, 3, 4, 5, 100, time.UTC)}
	n := 0
	tr, _ := openTestTrail(t, Options{Dir: dir, Now: func() time.Time { n++; return clock[n-1] }})
	mustRecord(t, tr, adminCtx, Record{Action: "a", Outcome: OK})
	mustRecord(t, tr, adminCtx, Record{Action: "b", Outcome: OK})
	lines := fileLines(t, dir)
	for i, want := range []string{"2026-01-02T02:04:05.000000000Z", "2026-01-02T03:04:05.000000100Z"} {
		if lines[i]["time"] != want {
			t.Errorf("line %d time %v, want %s (UTC, nine digits)", i+1, lines[i]["time"], want)
		}
	}
	rs := mustList(t, tr, time.Time{}, 0)
	if !rs[0].Time.Equal(clock[0]) || rs[0].Time.Location() != time.UTC || !rs[1].Time.Equal(clock[1]) {
		t.Errorf("times read back %v, %v; want %v, %v in UTC", rs[0].Time, rs[1].Time, clock[0], clock[1])
	}
}

func TestTrail_RecordCaller(t *testing.T) {
	tr, _ := openTestTrail(t, Options{})
	tlsCtx := access.WithCaller(context.Background(), &access.Caller{Via: access.ViaTLS, Subject: "CN=ops,O=Example", Remote: "192.0.2.7:50123"})
	mustRecord(t, tr, tlsCtx, Record{Action: "entry.put", Target: "S3/a", Outcome: OK})
	mustRecord(t, tr, context.Background(), Record{Action: "entry.put", Target: "S3/b", Outcome: OK})
	mustRecord(t, tr, tlsCtx, Record{Action: "entry.put", Target: "S3/c", Outcome: OK, From: "elsewhere"})
	mustRecord(t, tr, tlsCtx, Record{Who: "web session of CN=ops", Via: "session", From: "127.0.0.1:4000", Action: "ui.signin", Outcome: OK})
	got := mustList(t, tr, time.Time{}, 0)
	for i, want := range [][3]string{
		{"CN=ops,O=Example", "tls", "192.0.2.7:50123"},
		{"unknown", "", ""},
		{"CN=ops,O=Example", "tls", "elsewhere"},
		{"web session of CN=ops", "session", "127.0.0.1:4000"},
	} {
		if r := got[i]; [3]string{r.Who, r.Via, r.From} != want {
			t.Errorf("record %d: who %q, via %q, from %q; want %q", i+1, r.Who, r.Via, r.From, want)
		}
	}
}

func TestTrail_RecordRefusesIncompleteRecords(t *testing.T) {
	dir := t.TempDir()
	tr, _ := openTestTrail(t, Options{Dir: dir})
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{Target: "S3/a", Outcome: OK}, "no action"},
		{Record{Action: "entry.put", Outcome: "done"}, `outcome "done"; want ok, refused or failed`},
		{Record{Action: "entry.put"}, `outcome ""`},
	} {
		if err := tr.Record(adminCtx, tc.r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Record(%+v) = %v; want an error saying %q", tc.r, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, File)); len(b) != 0 {
		t.Errorf("refused records were written: %q", b)
	}
}

func TestTrail_PersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	tr, _ := openTestTrail(t, Options{Dir: dir})
	for i := range 3 {
		mustRecord(t, tr, adminCtx, Record{Action: "entry.put", Target: fmt.Sprintf("S3/e%d", i), Outcome: OK, Status: 204})
	}
	before := mustList(t, tr, time.Time{}, 0)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr2, _ := openTestTrail(t, Options{Dir: dir, Now: func() time.Time { return t0.Add(time.Hour) }})
	if got := mustList(t, tr2, time.Time{}, 0); !reflect.DeepEqual(got, before) {
		t.Errorf("after reopen:\n%+v\nwant:\n%+v", got, before)
	}
	mustRecord(t, tr2, adminCtx, Record{Action: "entry.delete", Target: "S3/e0", Outcome: OK, Status: 204})
	if got := seqs(mustList(t, tr2, time.Time{}, 0)); !reflect.DeepEqual(got, []int64{1, 2, 3, 4}) {
		t.Errorf("seqs after reopen and append %v, want 1-4", got)
	}
}

func TestTrail_TornLastLine(t *testing.T) {
	for _, tail := range []string{
		`{"time":"2026-11-22T09:19:20.000000000Z","who":"uid 0","via":"socket","fr`, // cut mid-write
		`{"time":"2026-11-22T09:19:20.000000000Z"}` + "\n",                          // a line, but no record
		"\x00\x00\x00\x00", // zeros of an unwritten page
	} {
		t.Run(fmt.Sprintf("%.20q", tail), func(t *testing.T) {
			dir := t.TempDir()
			tr, _ := openTestTrail(t, Options{Dir: dir})
			for range 2 {
				mustRecord(t, tr, adminCtx, Record{Action: "entry.put", Target: "S3/a", Outcome: OK, Status: 204})
			}
			tr.Close()
			path := filepath.Join(dir, File)
			good, _ := os.ReadFile(path)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tail)
			f.Close()

			tr2, obs := openTestTrail(t, Options{Dir: dir})
			if obs.FilterMessage("drop torn audit trail tail").Len() != 1 {
				t.Errorf("the dropped tail was not logged: %v", obs.All())
			}
			if b, _ := os.ReadFile(path); string(b) != string(good) {
				t.Errorf("file after open:\n%q\nwant the torn line cut:\n%q", b, good)
			}
			mustRecord(t, tr2, adminCtx, Record{Action: "entry.delete", Target: "S3/a", Outcome: OK, Status: 204})
			if got := seqs(mustList(t, tr2, time.Time{}, 0)); !reflect.DeepEqual(got, []int64{1, 2, 3}) {
				t.Errorf("seqs %v, want 1 2 3", got)
			}
			if n := len(fileLines(t, dir)); n != 3 {
				t.Errorf("%d lines, want 3", n)
			}
		})
	}
}

func TestTrail_DamagedMiddleLineIsKeptAndSkipped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, File)
	tr, _ := openTestTrail(t, Options{Dir: dir})
	for _, a := range []string{"a", "b", "c"} {
		mustRecord(t, tr, adminCtx, Record{Action: a, Outcome: OK})
	}
	tr.Close()
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	lines[1] = "not json\n"
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}

	tr, obs := openTestTrail(t, Options{Dir: dir})
	if obs.FilterMessage("skip damaged audit trail lines").Len() != 1 || obs.FilterMessage("drop torn audit trail tail").Len() != 0 {
		t.Errorf("want the damaged line logged as skipped, not dropped: %v", obs.All())
	}
	mustRecord(t, tr, adminCtx, Record{Action: "d", Outcome: OK})
	if got := seqs(mustList(t, tr, time.Time{}, 0)); !reflect.DeepEqual(got, []int64{1, 3, 4}) {
		t.Errorf("seqs %v, want 1 3 4", got)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "\nnot json\n") {
		t.Errorf("the damaged line was removed; an audit trail is never rewritten:\n%s", b)
	}
}

func TestTrail_ModeTightenedAtOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, File)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644) // whatever the umask
	openTestTrail(t, Options{Dir: dir})
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestOpen_Errors(t *testing.T) {
	if _, err := Open(Options{}); err == nil || !strings.Contains(err.Error(), "no data dir") {
		t.Errorf("Open without a dir: %v", err)
	}
	if _, err := Open(Options{Dir: filepath.Join(t.TempDir(), "absent")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open in a missing dir: %v, want ErrNotExist", err)
	}
}

func TestTrail_AfterClose(t *testing.T) {
	tr, _ := openTestTrail(t, Options{})
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := tr.Record(adminCtx, Record{Action: "a", Outcome: OK}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Record after Close: %v, want ErrClosed", err)
	}
	if _, err := tr.List(time.Time{}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
}

func TestTrail_WriteFailureRecordsNothing(t *testing.T) {
	dir := t.TempDir()
	tr, _ := openTestTrail(t, Options{Dir: dir})
	mustRecord(t, tr, adminCtx, Record{Action: "a", Outcome: OK})
	// Writes to a descriptor opened read-only fail, as on a full or
	// read-only disk.
	ro, err := os.Open(filepath.Join(dir, File))
	if err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	rw := tr.f
	tr.f = ro
	tr.mu.Unlock()
	if err := tr.Record(adminCtx, Record{Action: "b", Outcome: OK}); err == nil || !strings.Contains(err.Error(), "append audit record b") {
		t.Errorf("Record on a failing file: %v", err)
	}
	tr.mu.Lock()
	tr.f = rw
	tr.mu.Unlock()
	ro.Close()
	mustRecord(t, tr, adminCtx, Record{Action: "c", Outcome: OK})
	got := mustList(t, tr, time.Time{}, 0)
	if len(got) != 2 || got[1].Action != "c" || got[1].Seq != 2 {
		t.Errorf("after a failed write: %+v; want a then c with seq 2", got)
	}
}

func TestTrail_SyncFailure(t *testing.T) {
	fail := true
	tr, obs := openTestTrail(t, Options{syncFile: func(f *os.File) error {
		if fail {
			return errors.New("input/output error")
		}
		return f.Sync()
	}})
	err := tr.Record(adminCtx, Record{Action: "a", Outcome: OK})
	if err == nil || !strings.Contains(err.Error(), "sync audit trail: input/output error") {
		t.Errorf("Record with a failing fsync: %v", err)
	}
	if obs.FilterMessage("sync audit trail").Len() != 1 {
		t.Errorf("the failed fsync was not logged")
	}
	if got := mustList(t, tr, time.Time{}, 0); len(got) != 0 {
		t.Errorf("a record not known durable is listed: %+v", got)
	}
	fail = false
	mustRecord(t, tr, adminCtx, Record{Action: "b", Outcome: OK})
	// The fsync that made b durable made a durable too.
	if got := seqs(mustList(t, tr, time.Time{}, 0)); !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Errorf("seqs %v, want 1 2", got)
	}
}

func TestTrail_ConcurrentRecords(t *testing.T) {
	dir := t.TempDir()
	tr, _ := openTestTrail(t, Options{Dir: dir, Now: time.Now})
	const writers, each = 16, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			ctx := access.WithCaller(context.Background(), &access.Caller{Via: access.ViaSocket, UID: 1000 + w})
			for i := range each {
				if err := tr.Record(ctx, Record{Action: "entry.put", Target: fmt.Sprintf("S3/w%d-%d", w, i), Outcome: OK, Status: 204}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Readers list while the writers write.
	for range 2 {
		wg.Go(func() {
			for range 20 {
				rs, err := tr.List(time.Time{}, 0)
				if err != nil {
					t.Error(err)
					return
				}
				for i, r := range rs {
					if r.Seq != int64(i+1) {
						t.Errorf("List while writing: record %d has seq %d", i, r.Seq)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	check := func(rs []Record) {
		t.Helper()
		if got, want := seqs(rs), seqRange(1, writers*each); !reflect.DeepEqual(got, want) {
			t.Fatalf("seqs %v, want 1-%d in order", got, writers*each)
		}
		targets := map[string]bool{}
		for _, r := range rs {
			targets[r.Target] = true
		}
		if len(targets) != writers*each {
			t.Errorf("%d distinct targets, want %d", len(targets), writers*each)
		}
	}
	check(mustList(t, tr, time.Time{}, 0))
	if n := len(fileLines(t, dir)); n != writers*each {
		t.Errorf("%d lines, want %d", n, writers*each)
	}
	tr.Close()
	tr2, _ := openTestTrail(t, Options{Dir: dir})
	check(mustList(t, tr2, time.Time{}, 0))
}

// holdSyncs is a syncFile whose first fsync waits until released.
type holdSyncs struct {
	started chan struct{} // closed when the first fsync begins
	release chan struct{} // close to let it finish
	mu      sync.Mutex
	calls   int
}

func newHoldSyncs() *holdSyncs {
	return &holdSyncs{started: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdSyncs) sync(f *os.File) error {
	h.mu.Lock()
	h.calls++
	first := h.calls == 1
	h.mu.Unlock()
	if first {
		close(h.started)
		<-h.release
	}
	return f.Sync()
}

func TestTrail_GroupCommitSharesFsyncs(t *testing.T) {
	h := newHoldSyncs()
	tr, _ := openTestTrail(t, Options{syncFile: h.sync})

	// One writer alone: one fsync per record.
	firstDone := make(chan error, 1)
	go func() { firstDone <- tr.Record(adminCtx, Record{Action: "first", Outcome: OK}) }()
	<-h.started

	// While that fsync runs, more writers append and wait.
	const waiting = 20
	var wg sync.WaitGroup
	for i := range waiting {
		wg.Go(func() {
			if err := tr.Record(adminCtx, Record{Action: "during", Target: fmt.Sprint(i), Outcome: OK}); err != nil {
				t.Error(err)
			}
		})
	}
	// Wait (without a deadline) until all of them appended their line.
	for {
		tr.mu.Lock()
		appended := tr.seq
		tr.mu.Unlock()
		if appended == waiting+1 {
			break
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	tr.mu.Lock()
	if tr.syncs != 0 {
		t.Errorf("%d fsyncs done while the first one is held", tr.syncs)
	}
	tr.mu.Unlock()
	close(h.release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	tr.mu.Lock()
	syncs := tr.syncs
	tr.mu.Unlock()
	if syncs != 2 {
		t.Errorf("%d fsyncs for 1 record and %d appended during its fsync; want 2 (the %d share one)", syncs, waiting, waiting)
	}
	if rs := mustList(t, tr, time.Time{}, 0); len(rs) != waiting+1 {
		t.Errorf("%d records listed, want %d", len(rs), waiting+1)
	}

	// Sequential writers get an fsync each: nothing is left unsynced.
	for range 3 {
		mustRecord(t, tr, adminCtx, Record{Action: "after", Outcome: OK})
	}
	tr.mu.Lock()
	if tr.syncs != 5 {
		t.Errorf("%d fsyncs after 3 more sequential records, want 5", tr.syncs)
	}
	tr.mu.Unlock()
}

func TestTrail_CloseWaitsForFsync(t *testing.T) {
	h := newHoldSyncs()
	tr, _ := openTestTrail(t, Options{syncFile: h.sync})
	done := make(chan error, 1)
	go func() { done <- tr.Record(adminCtx, Record{Action: "a", Outcome: OK}) }()
	<-h.started
	closed := make(chan error, 1)
	go func() { closed <- tr.Close() }()
	close(h.release)
	if err := <-done; err != nil {
		t.Errorf("Record during Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestTrail_ListSinceAndLimit checks List against a plain filter over a
// trail of several index blocks whose clock jumps back and forth.
func TestTrail_ListSinceAndLimit(t *testing.T) {
	dir := t.TempDir()
	const block = 16
	const n = 2*block + 11
	// Minutes from t0: rising, then a jump back of 10 minutes at record
	// 25 (in the second block), then rising again.
	minute := func(i int) int {
		if i >= 25 {
			return i - 10
		}
		return i
	}
	i := 0
	// No fsync per record: this test is about the index, not durability.
	noSync := func(*os.File) error { return nil }
	tr, _ := openTestTrail(t, Options{Dir: dir, syncFile: noSync, blockSize: block, Now: func() time.Time {
		m := minute(i)
		i++
		return t0.Add(time.Duration(m) * time.Minute)
	}})
	for k := range n {
		mustRecord(t, tr, adminCtx, Record{Action: "entry.put", Target: fmt.Sprint(k), Outcome: OK})
	}
	all := mustList(t, tr, time.Time{}, 0)
	if len(all) != n {
		t.Fatalf("%d records, want %d", len(all), n)
	}
	reference := func(since time.Time, limit int) []int64 {
		var out []int64
		for _, r := range all {
			if since.IsZero() || !r.Time.Before(since) {
				out = append(out, r.Seq)
			}
		}
		if limit > 0 && len(out) > limit {
			out = out[len(out)-limit:]
		}
		return out
	}
	check := func(tr *Trail) {
		t.Helper()
		for _, since := range []int{-1, 0, 5, 14, 15, 16, 20, 24, 25, 30, n, n + 5} {
			for _, limit := range []int{0, 1, 7, block, 30, n} {
				var s time.Time
				if since >= 0 {
					s = t0.Add(time.Duration(since) * time.Minute)
				}
				got := seqs(mustList(t, tr, s, limit))
				if want := reference(s, limit); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("List(t0+%dm, %d): %d records %v…, want %d %v…", since, limit, len(got), head(got), len(want), head(want))
				}
			}
		}
	}
	check(tr)
	tr.Close()
	tr2, _ := openTestTrail(t, Options{Dir: dir, blockSize: block})
	if len(tr2.blocks) != 3 {
		t.Errorf("%d index blocks for %d records of %d, want 3", len(tr2.blocks), n, block)
	}
	check(tr2)
}

func head(s []int64) []int64 { return s[:min(len(s), 5)] }

func TestTrail_Recorder(t *testing.T) {
	tr, obs := openTestTrail(t, Options{})
	rec := tr.Recorder()
	rec(adminCtx, "ui.link", "uid 0", OK)
	rec(adminCtx, "ui.signin", "web session", "maybe")
	got := mustList(t, tr, time.Time{}, 0)
	if len(got) != 1 || got[0].Action != "ui.link" || got[0].Who != "uid 0" || got[0].Outcome != OK {
		t.Errorf("records %+v; want the ui.link one", got)
	}
	if obs.FilterMessage("audit").Len() != 1 {
		t.Errorf("the refused record was not logged: %v", obs.All())
	}
}

func TestOutcomeOf(t *testing.T) {
	for status, want := range map[int]string{200: OK, 201: OK, 202: OK, 204: OK, 304: OK, 400: Refused, 403: Refused,
		404: Refused, 409: Refused, 412: Refused, 413: Refused, 500: Failed, 503: Failed} {
		if got := OutcomeOf(status); got != want {
			t.Errorf("OutcomeOf(%d) = %s, want %s", status, got, want)
		}
	}
}
