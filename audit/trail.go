// Package audit keeps kmd's audit trail: who changed what, from where, when,
// and how it ended. Each record is one JSON line of <data-dir>/audit.log,
// appended and fsynced before Record returns, and kept: the trail is never
// compacted or rewritten.
//
// A record names keys by ID and entries by domain and name; it never holds
// an entry's value or key material. Callers must keep it so: Detail and
// Error are shown to operators as they are.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/internal/fsx"
	"github.com/kmd-project/kmd/internal/jsonl"
	"github.com/kmd-project/kmd/logs"
)

const (
	// File is the trail's file name inside the data dir.
	File = "audit.log"

	fileMode = 0o600
	// blockRecords is how many records one entry of the in-memory index
	// covers; List reads the file a block at a time.
	blockRecords = 1024
	// timeLayout is RFC 3339 with every nanosecond digit, so that the
	// file's times line up and sort as text.
	timeLayout = "2006-01-02T15:04:05.000000000Z07:00"
)

// Outcomes of a recorded action.
const (
	// OK: the action was done.
	OK = "ok"
	// Refused: kmd did not do it: the caller lacks the role, or asked for
	// something wrong (bad input, not found, a conflict). Nothing changed.
	Refused = "refused"
	// Failed: kmd tried and could not (an internal error, a store or a KMIP
	// server unavailable).
	Failed = "failed"
)

// OutcomeOf is the outcome of an HTTP answer's status: 4xx refused, 5xx
// failed, anything else ok.
func OutcomeOf(status int) string {
	switch {
	case status >= 500:
		return Failed
	case status >= 400:
		return Refused
	}
	return OK
}

// Record is one audited action.
type Record struct {
	Time    time.Time // UTC; Record sets it to now when zero
	Who     string    // access.Caller.Who(): "uid 0", a certificate subject, …
	Via     string    // access.Via: socket, tls, session; "" when unknown
	From    string    // where the request came from: "unix:/path", an address
	Action  string    // e.g. rekey.start, entry.put, ui.signin
	Target  string    // e.g. cluster, cluster:S3,SSO, S3/name, a KMIP server
	Detail  string    // optional: a rotation value, a KMIP host; never a value or key
	Outcome string    // OK, Refused or Failed
	Status  int       // the HTTP status answered; 0 when there was none
	Error   string    // the error line when the outcome is not OK
	Seq     int64     // assigned by the trail: 1, 2, 3, … in file order
}

// wireRecord is a Record as a line of the file, fields in this order.
type wireRecord struct {
	Time    string `json:"time"`
	Who     string `json:"who"`
	Via     string `json:"via"`
	From    string `json:"from"`
	Action  string `json:"action"`
	Target  string `json:"target"`
	Detail  string `json:"detail,omitempty"`
	Outcome string `json:"outcome"`
	Status  int    `json:"status"`
	Error   string `json:"error,omitempty"`
	Seq     int64  `json:"seq"`
}

// MarshalJSON encodes r as a line of the file: time in UTC with
// nanoseconds.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireRecord{Time: r.Time.UTC().Format(timeLayout), Who: r.Who, Via: r.Via, From: r.From,
		Action: r.Action, Target: r.Target, Detail: r.Detail, Outcome: r.Outcome, Status: r.Status, Error: r.Error, Seq: r.Seq})
}

// UnmarshalJSON decodes a line of the file.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w wireRecord
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return fmt.Errorf("audit record time: %w", err)
	}
	*r = Record{Time: t.UTC(), Who: w.Who, Via: w.Via, From: w.From, Action: w.Action, Target: w.Target,
		Detail: w.Detail, Outcome: w.Outcome, Status: w.Status, Error: w.Error, Seq: w.Seq}
	return nil
}

// Options configure Open.
type Options struct {
	// Dir is the data dir; the trail is the file <Dir>/audit.log.
	Dir string
	// Logger logs the trail's own trouble; nil logs nothing.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// syncFile makes the file durable; nil means (*os.File).Sync. Tests
	// count and hold fsyncs with it.
	syncFile func(*os.File) error
	// blockSize is the records per index block; 0 means blockRecords.
	blockSize int
}

// Trail is the audit trail. It is safe for concurrent use: writers that
// append while an fsync runs are made durable together by the next one
// (group commit), so concurrent requests do not wait for an fsync each.
type Trail struct {
	path     string
	log      *zap.Logger
	now      func() time.Time
	syncFile func(*os.File) error
	block    int // records per index block

	mu      sync.Mutex
	cond    *sync.Cond // signalled when an fsync ends
	f       *os.File   // nil once closed
	size    int64      // length of the file's good lines
	durable int64      // length known to be fsynced; List reads no further
	seq     int64      // last Seq assigned
	blocks  []block    // the index, in file order
	open    *batch     // records appended since the last fsync started
	syncing bool       // an fsync runs
	syncs   int64      // fsyncs done since Open
}

// block indexes up to t.block consecutive records of the file.
type block struct {
	off, end int64     // the bytes of its lines
	n        int       // its records
	max      time.Time // the latest time of any record up to its end
}

// batch is the records one fsync makes durable.
type batch struct {
	n    int
	done bool
	err  error
}

// Open opens (creating it if need be) the trail in o.Dir. A torn last line,
// left by a crash during an append, is dropped and cut from the file; a
// damaged line elsewhere is kept in the file, skipped and logged. Seq
// continues from the last record.
func Open(o Options) (*Trail, error) {
	if o.Dir == "" {
		return nil, errors.New("open audit trail: no data dir")
	}
	t := &Trail{
		path:     filepath.Join(o.Dir, File),
		log:      o.Logger,
		now:      o.Now,
		syncFile: o.syncFile,
		block:    o.blockSize,
		open:     &batch{},
	}
	if t.block <= 0 {
		t.block = blockRecords
	}
	t.cond = sync.NewCond(&t.mu)
	if t.log == nil {
		t.log = zap.NewNop()
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.syncFile == nil {
		t.syncFile = (*os.File).Sync
	}
	f, err := os.OpenFile(t.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open audit trail: %w", err)
	}
	if err := t.load(f); err != nil {
		f.Close()
		return nil, err
	}
	// Make the file's creation durable.
	if err := fsx.SyncDir(o.Dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit trail: %w", err)
	}
	t.f = f
	return t, nil
}

// load indexes the records of f and cuts a torn tail.
func (t *Trail) load(f *os.File) error {
	// The file holds who did what: nobody else may read it, whatever mode
	// it was left with.
	if err := f.Chmod(fileMode); err != nil {
		return fmt.Errorf("open audit trail: %w", err)
	}
	st, err := jsonl.Scan(f, func(off int64, line []byte) bool {
		r, ok := parseLine(line)
		if ok {
			t.index(r.Time, off, int64(len(line)))
			t.seq = max(t.seq, r.Seq)
		}
		return ok
	})
	if err != nil {
		return fmt.Errorf("read audit trail: %w", err)
	}
	if st.Skipped > 0 {
		t.log.Warn("skip damaged audit trail lines", zap.String(logs.Path, t.path), zap.Int(logs.Total, st.Skipped))
	}
	if st.Torn() {
		t.log.Warn("drop torn audit trail tail", zap.String(logs.Path, t.path))
		if err := jsonl.Truncate(f, st.End); err != nil {
			return fmt.Errorf("audit trail: %w", err)
		}
	}
	t.size, t.durable = st.End, st.End
	return nil
}

// parseLine decodes a line of the file; ok is false for a line that is not
// a whole record.
func parseLine(line []byte) (Record, bool) {
	var r Record
	if json.Unmarshal(line, &r) != nil || r.Seq <= 0 || r.Action == "" {
		return Record{}, false
	}
	return r, true
}

// index adds the record at off, n bytes long, to the index. Called with
// t.mu held (or before t is shared).
func (t *Trail) index(tm time.Time, off, n int64) {
	if len(t.blocks) == 0 || t.blocks[len(t.blocks)-1].n == t.block {
		var prev time.Time
		if len(t.blocks) > 0 {
			prev = t.blocks[len(t.blocks)-1].max
		}
		t.blocks = append(t.blocks, block{off: off, max: prev})
	}
	b := &t.blocks[len(t.blocks)-1]
	b.n++
	b.end = off + n
	if tm.After(b.max) {
		b.max = tm
	}
}

// Record appends r to the trail and returns once it is durable (fsynced).
// It sets r.Seq, and r.Time when zero. When r.Who is empty, Who, Via and
// (if empty) From are those of the caller ctx carries (access.FromContext;
// Who is "unknown" without one). r.Action is required and r.Outcome must be
// OK, Refused or Failed.
func (t *Trail) Record(ctx context.Context, r Record) error {
	if r.Action == "" {
		return errors.New("audit record: no action")
	}
	switch r.Outcome {
	case OK, Refused, Failed:
	default:
		return fmt.Errorf("audit record %s: outcome %q; want %s, %s or %s", r.Action, r.Outcome, OK, Refused, Failed)
	}
	if r.Who == "" {
		c := access.FromContext(ctx)
		r.Who = c.Who()
		if c != nil {
			r.Via = string(c.Via)
			if r.From == "" {
				r.From = c.Remote
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return fmt.Errorf("audit %s: %w", r.Action, os.ErrClosed)
	}
	if r.Time.IsZero() {
		r.Time = t.now()
	}
	r.Time = r.Time.UTC()
	r.Seq = t.seq + 1
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode audit record %s: %w", r.Action, err)
	}
	line = append(line, '\n')
	n, err := jsonl.Append(t.f, t.size, line)
	if err != nil {
		return fmt.Errorf("append audit record %s: %w", r.Action, err)
	}
	t.seq = r.Seq
	t.index(r.Time, t.size, int64(n))
	t.size += int64(n)
	b := t.open
	b.n++
	for !b.done {
		if t.syncing {
			t.cond.Wait()
			continue
		}
		// No fsync runs, so b is still the open batch: sync it, with
		// everything appended before this point.
		t.syncOpen()
	}
	if b.err != nil {
		return fmt.Errorf("audit record %s: %w", r.Action, b.err)
	}
	return nil
}

// syncOpen fsyncs the file for the open batch, letting appends go on
// meanwhile into the next one. Called with t.mu held and no fsync running;
// it releases t.mu during the fsync.
func (t *Trail) syncOpen() {
	b, f, end := t.open, t.f, t.size
	t.open = &batch{}
	t.syncing = true
	t.mu.Unlock()
	err := t.syncFile(f)
	t.mu.Lock()
	t.syncs++
	t.syncing = false
	if err != nil {
		b.err = fmt.Errorf("sync audit trail: %w", err)
		t.log.Error("sync audit trail", zap.String(logs.Path, t.path), zap.Int(logs.Total, b.n), zap.Error(err))
	} else {
		t.durable = max(t.durable, end)
	}
	b.done = true
	t.cond.Broadcast()
}

// List returns the records whose Time is at or after since (every record
// for the zero time), at most limit of them (no limit when limit <= 0): the
// newest, in file order (oldest first). Only records known to be durable
// are listed.
func (t *Trail) List(since time.Time, limit int) ([]Record, error) {
	t.mu.Lock()
	if t.f == nil {
		t.mu.Unlock()
		return nil, fmt.Errorf("list audit trail: %w", os.ErrClosed)
	}
	blocks, durable := slices.Clone(t.blocks), t.durable
	t.mu.Unlock()

	f, err := os.Open(t.path)
	if err != nil {
		return nil, fmt.Errorf("list audit trail: %w", err)
	}
	defer f.Close()
	var newestFirst []Record
	full := func() bool { return limit > 0 && len(newestFirst) >= limit }
	// Newest block first. A block whose max is before since ends the
	// search: max covers every record before it too, so none of them can
	// be at or after since, whatever a clock jump did to the order.
	for i := len(blocks) - 1; i >= 0 && !full(); i-- {
		b := blocks[i]
		if !since.IsZero() && b.max.Before(since) {
			break
		}
		if b.off >= durable {
			continue
		}
		recs, err := t.readBlock(f, b.off, min(b.end, durable))
		if err != nil {
			return nil, err
		}
		for j := len(recs) - 1; j >= 0 && !full(); j-- {
			if since.IsZero() || !recs[j].Time.Before(since) {
				newestFirst = append(newestFirst, recs[j])
			}
		}
	}
	slices.Reverse(newestFirst)
	return newestFirst, nil
}

// readBlock returns the records of the file between off and end, skipping
// damaged lines.
func (t *Trail) readBlock(f *os.File, off, end int64) ([]Record, error) {
	buf := make([]byte, end-off)
	if n, err := f.ReadAt(buf, off); n < len(buf) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read audit trail at %d: %w", off, err)
	}
	var out []Record
	for len(buf) > 0 {
		line, rest, _ := bytes.Cut(buf, []byte{'\n'})
		buf = rest
		if r, ok := parseLine(line); ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// Recorder returns a function that records an action of the caller ctx
// carries, as Record does, and logs a failure to record instead of
// returning it: for code that takes a func(ctx, action, target, outcome
// string) to report what it did.
func (t *Trail) Recorder() func(ctx context.Context, action, target, outcome string) {
	return func(ctx context.Context, action, target, outcome string) {
		if err := t.Record(ctx, Record{Action: action, Target: target, Outcome: outcome}); err != nil {
			t.log.Error("audit", zap.String("action", action), zap.String("target", target), zap.Error(err))
		}
	}
}

// Close waits for the fsyncs in progress and closes the file. Record and
// List fail after it.
func (t *Trail) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.syncing || t.open.n > 0 {
		// The writers of the open batch sync it as soon as no fsync runs.
		t.cond.Wait()
	}
	if t.f == nil {
		return nil
	}
	f := t.f
	t.f = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("close audit trail: %w", err)
	}
	return nil
}
