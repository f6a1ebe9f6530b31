package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/internal/fsx"
	"github.com/kmd-project/kmd/internal/jsonl"
)

// Log field names of the journal, beside those of fields.go.
const (
	// ExitStatus is a command's exit status.
	ExitStatus = "exit_status"
	// Seq is an event's sequence number.
	Seq = "seq"
)

const (
	// JournalFile is the journal's file name inside the data dir.
	JournalFile = "events.jsonl"
	// DefaultMaxEvents is how many events a journal keeps by default.
	DefaultMaxEvents = 10000
	// HookTimeout bounds one run of the event hook.
	HookTimeout = 30 * time.Second

	journalFileMode = 0o600
	// maxPendingHooks bounds the hook runs waiting for the one in progress;
	// events beyond it are not given to the hook (and say so in the log).
	maxPendingHooks = 1000
	// hookWaitDelay bounds how long a hook's I/O may outlive its process.
	hookWaitDelay = 5 * time.Second
)

// JournalOptions configure OpenJournal.
type JournalOptions struct {
	// Dir is the data dir; the journal is the file <Dir>/events.jsonl.
	Dir string
	// Hook is a shell command given each event as one JSON line on its
	// stdin; "" means none.
	Hook string
	// Logger logs the events and the journal's own trouble; nil logs nothing.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxEvents is how many events the journal keeps, the newest; 0 means
	// DefaultMaxEvents. The file is compacted when it holds 10% more.
	MaxEvents int
}

// Journal is the persisted list of events: each event is one JSON line of
// <Dir>/events.jsonl, appended and fsynced before Emit returns. It is safe for
// concurrent use.
type Journal struct {
	path        string
	hook        string
	log         *zap.Logger
	now         func() time.Time
	max         int
	hookTimeout time.Duration

	mu     sync.Mutex
	f      *os.File // nil once closed
	size   int64    // length of the file's good lines
	events []Event  // oldest first
	seq    int64    // last Seq assigned

	hooks *hookQueue // nil without a hook
}

// OpenJournal opens (creating it if need be) the journal in o.Dir and reads
// the events it holds. A torn last line, left by a crash during an append, is
// dropped and cut from the file. Seq continues from the last event read.
func OpenJournal(o JournalOptions) (*Journal, error) {
	if o.Dir == "" {
		return nil, errors.New("open event journal: no data dir")
	}
	j := &Journal{
		path:        filepath.Join(o.Dir, JournalFile),
		hook:        o.Hook,
		log:         o.Logger,
		now:         o.Now,
		max:         o.MaxEvents,
		hookTimeout: HookTimeout,
	}
	if j.log == nil {
		j.log = zap.NewNop()
	}
	if j.now == nil {
		j.now = time.Now
	}
	if j.max <= 0 {
		j.max = DefaultMaxEvents
	}
	f, err := openJournalFile(j.path)
	if err != nil {
		return nil, fmt.Errorf("open event journal: %w", err)
	}
	j.f = f
	if err := j.load(); err != nil {
		f.Close()
		return nil, err
	}
	// Make the file's creation durable.
	if err := fsx.SyncDir(o.Dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("open event journal: %w", err)
	}
	if j.overLimit() {
		j.compact()
	}
	if j.hook != "" {
		j.hooks = newHookQueue()
		go j.runHooks()
	}
	return j, nil
}

func openJournalFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, journalFileMode)
}

// load reads the events of j.f. Lines that do not parse are skipped with a
// warning; if they (or a line without its newline) end the file they are a
// torn append, and the file is cut after the last good line so that the next
// append starts a line of its own.
func (j *Journal) load() error {
	st, err := jsonl.Scan(j.f, func(_ int64, line []byte) bool {
		var e Event
		if json.Unmarshal(line, &e) != nil {
			return false
		}
		j.events = append(j.events, e)
		j.seq = max(j.seq, e.Seq)
		return true
	})
	if err != nil {
		return fmt.Errorf("read event journal: %w", err)
	}
	if st.Skipped > 0 {
		j.log.Warn("skip corrupt event journal lines",
			zap.String(Path, j.path), zap.Int(Total, st.Skipped))
	}
	j.size = st.End
	if !st.Torn() {
		return nil
	}
	j.log.Warn("drop torn event journal tail", zap.String(Path, j.path))
	if err := jsonl.Truncate(j.f, st.End); err != nil {
		return fmt.Errorf("event journal: %w", err)
	}
	return nil
}

// Emit records e: it assigns e.Seq and, if it is zero, e.Time (UTC now),
// appends e to the journal file and fsyncs it, logs e (at Warn for a *Failed
// event, Info otherwise), and hands e to the hook, whose run it does not wait
// for. Emit never fails: a journal write failure is logged and the event
// still goes to the log and the hook.
func (j *Journal) Emit(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	e.Seq = j.seq
	if e.Time.IsZero() {
		e.Time = j.now()
	}
	e.Time = e.Time.UTC()
	line, err := json.Marshal(e)
	if err == nil {
		line = append(line, '\n')
		err = j.append(line)
	} else {
		line = nil
		err = fmt.Errorf("encode event: %w", err)
	}
	if err != nil {
		j.log.Error("write event journal",
			zap.String(EventName, e.Name), zap.String(Path, j.path), zap.Error(err))
	}
	j.events = append(j.events, e)
	if strings.HasSuffix(e.Name, "Failed") {
		j.log.Warn("event", eventFields(e)...)
	} else {
		j.log.Info("event", eventFields(e)...)
	}
	if line != nil && j.f != nil {
		j.enqueueHook(e, line)
	}
	if j.overLimit() {
		j.compact()
	}
}

// Has reports whether the journal holds an event of that name, domain and
// key ID (among those kept since the last compaction).
func (j *Journal) Has(name, domain, keyID string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := len(j.events) - 1; i >= 0; i-- {
		if e := j.events[i]; e.Name == name && e.Domain == domain && e.KeyID == keyID {
			return true
		}
	}
	return false
}

// eventFields are the log fields of e; like e's JSON they leave out empty
// optional values.
func eventFields(e Event) []zap.Field {
	fs := []zap.Field{
		zap.String(EventName, e.Name),
		zap.String(Domain, e.Domain),
		zap.String(Scope, e.Scope),
	}
	if e.Node != 0 {
		fs = append(fs, zap.Int(Node, e.Node))
	}
	if e.KeyID != "" {
		fs = append(fs, zap.String(KeyID, e.KeyID))
	}
	if e.Attempt != 0 {
		fs = append(fs, zap.Int(Attempt, e.Attempt))
	}
	if e.Error != "" {
		fs = append(fs, zap.String(Error, e.Error))
	}
	return fs
}

// append writes line at the end of the journal and fsyncs it. Called with
// j.mu held.
func (j *Journal) append(line []byte) error {
	if j.f == nil {
		return fmt.Errorf("append event: %w", os.ErrClosed)
	}
	n, err := jsonl.Append(j.f, j.size, line)
	if err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	j.size += int64(n)
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("sync event journal: %w", err)
	}
	return nil
}

// overLimit reports whether the journal holds 10% more than its maximum.
// Called with j.mu held.
func (j *Journal) overLimit() bool {
	return len(j.events)*10 > j.max*11
}

// compact keeps the newest j.max events and rewrites the file to hold just
// them. A failure is logged; the journal keeps appending to the file it had.
// Called with j.mu held.
func (j *Journal) compact() {
	j.events = append([]Event(nil), j.events[len(j.events)-j.max:]...)
	if j.f == nil {
		return
	}
	if err := j.rewrite(); err != nil {
		j.log.Error("compact event journal", zap.String(Path, j.path), zap.Error(err))
		return
	}
	j.log.Info("event journal compacted", zap.String(Path, j.path), zap.Int(Total, len(j.events)))
}

// rewrite replaces the file with one holding j.events, crash-safely: it
// writes a temporary file, fsyncs it, renames it over the journal and fsyncs
// the directory. The journal then appends to the new file. Called with j.mu
// held.
func (j *Journal) rewrite() (err error) {
	var buf bytes.Buffer
	for _, e := range j.events {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", e.Seq, err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	dir := filepath.Dir(j.path)
	tmp, err := os.CreateTemp(dir, "."+JournalFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temp journal: %w", err)
	}
	tmpPath := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmpPath)
		}
	}()
	if err = tmp.Chmod(journalFileMode); err != nil {
		return fmt.Errorf("chmod temp journal: %w", err)
	}
	if _, err = tmp.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write temp journal: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("sync temp journal: %w", err)
	}
	// Reopen for appending before the rename, so that once the new file is
	// in place there is no failure that would leave the journal appending
	// to the replaced one.
	nf, err := openJournalFile(tmpPath)
	if err != nil {
		return fmt.Errorf("open temp journal: %w", err)
	}
	if err = os.Rename(tmpPath, j.path); err != nil {
		nf.Close()
		return fmt.Errorf("rename temp journal: %w", err)
	}
	tmp.Close()
	old := j.f
	j.f, j.size = nf, int64(buf.Len())
	old.Close()
	if err := fsx.SyncDir(dir); err != nil {
		return fmt.Errorf("compact event journal: %w", err)
	}
	return nil
}

// List returns copies of the events whose Time is at or after since (all
// for the zero time), oldest first.
func (j *Journal) List(since time.Time) []Event {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]Event, 0, len(j.events))
	for _, e := range j.events {
		if since.IsZero() || !e.Time.Before(since) {
			out = append(out, e)
		}
	}
	return out
}

// Close closes the journal file and waits for the hook runs pending: the one
// in progress until its timeout, the queued ones within one timeout from
// now; those it could not start by then are dropped and logged. Events
// emitted after Close are logged only.
func (j *Journal) Close() error {
	j.mu.Lock()
	f := j.f
	j.f = nil
	j.mu.Unlock()
	if f == nil {
		return nil
	}
	if q := j.hooks; q != nil {
		q.mu.Lock()
		q.closing = true
		q.cond.Broadcast()
		q.mu.Unlock()
		t := time.AfterFunc(j.hookTimeout, q.cancel)
		<-q.done
		t.Stop()
		q.cancel()
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close event journal: %w", err)
	}
	return nil
}

// hookQueue holds the hook runs not yet started, in Seq order.
type hookQueue struct {
	ctx    context.Context // cancelled when Close stops waiting
	cancel context.CancelFunc
	done   chan struct{} // closed when the runner returns

	mu      sync.Mutex
	cond    *sync.Cond
	jobs    []hookJob
	closing bool
}

type hookJob struct {
	name string
	seq  int64
	line []byte
}

func newHookQueue() *hookQueue {
	q := &hookQueue{done: make(chan struct{})}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	q.cond = sync.NewCond(&q.mu)
	return q
}

// enqueueHook queues a hook run for e without waiting. Called with j.mu held,
// so that runs are queued in Seq order.
func (j *Journal) enqueueHook(e Event, line []byte) {
	q := j.hooks
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.jobs) >= maxPendingHooks {
		j.log.Error("drop event hook run: too many pending",
			zap.String(EventName, e.Name), zap.Int(Total, len(q.jobs)))
		return
	}
	q.jobs = append(q.jobs, hookJob{name: e.Name, seq: e.Seq, line: line})
	q.cond.Signal()
}

// runHooks runs the queued hook runs one at a time until Close.
func (j *Journal) runHooks() {
	q := j.hooks
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.jobs) == 0 && !q.closing {
			q.cond.Wait()
		}
		if len(q.jobs) == 0 {
			q.mu.Unlock()
			return
		}
		if q.ctx.Err() != nil {
			n := len(q.jobs)
			q.jobs = nil
			q.mu.Unlock()
			j.log.Error("drop event hook runs: journal closed", zap.Int(Total, n))
			continue
		}
		job := q.jobs[0]
		q.jobs[0] = hookJob{}
		q.jobs = q.jobs[1:]
		q.mu.Unlock()
		j.runHook(q.ctx, job)
	}
}

// runHook runs the hook with job's line on its stdin and logs its failure.
func (j *Journal) runHook(ctx context.Context, job hookJob) {
	ctx, cancel := context.WithTimeout(ctx, j.hookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", j.hook)
	cmd.Stdin = bytes.NewReader(job.line)
	// Run the hook in a process group of its own so that a timeout kills
	// whatever it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = hookWaitDelay
	err := cmd.Run()
	if err == nil {
		return
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	fields := []zap.Field{zap.String(EventName, job.name), zap.Int64(Seq, job.seq), zap.Error(err)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		fields = append(fields, zap.Int(ExitStatus, ee.ExitCode()))
	}
	j.log.Error("run event hook", fields...)
}
