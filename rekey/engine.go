package rekey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

// Clock tells the time; tests inject their own.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// Emitter receives events; the logs package's Journal implements it.
type Emitter interface{ Emit(logs.Event) }

// Defaults.
const (
	DefaultRetryInterval = 15 * time.Minute
	DefaultBatchSize     = 1000
)

// Config wires an Engine to one domain.
type Config struct {
	Domain  string
	Scope   string // logs.ScopeCluster or logs.ScopeSED
	Node    int
	Vault   *provider.Vault
	Sources provider.Sources
	Events  Emitter
	Log     *zap.Logger
	Clock   Clock
	// RetryInterval is how long after a failure the rekey is retried.
	RetryInterval time.Duration
	// BatchSize is how many entries one REWRAP transaction rewrites.
	BatchSize int
	// OnFinish, if set, is called when a run completes (err == nil) or fails;
	// not when it is interrupted by Close.
	OnFinish func(domain string, err error)
	// OnEnd, if set, is told of every run that completes or fails, before
	// OnFinish; not of runs interrupted by Close, nor of a domain's first MK.
	OnEnd func(End)
	// Trace, if set, is called at every step of the state machine with the
	// step's name. Tests use it to crash or fail at chosen points.
	Trace func(step string)
}

// Engine runs one domain's rekeys. At most one runs at a time (invariant 5).
type Engine struct {
	cfg   Config
	store provider.Store
	lg    *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	state   State
	running bool
	idle    chan struct{} // closed when running turns false
	closed  bool

	done    atomic.Int64 // entries rewrapped in this rekey
	runRew  atomic.Int64 // entries rewrapped by this run
	passes  int          // REWRAP passes of this run that VERIFY found short
	runKind string       // what the running or last run is for: see Status.Run
}

// maxPasses bounds the REWRAP passes of one run that leave entries under
// the old MK: beyond it the run fails with ErrNoProgress rather than loop.
const maxPasses = 3

// New loads the domain's persisted rekey state. It starts nothing: call Init
// then Resume.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Scope == "" {
		cfg.Scope = logs.ScopeCluster
	}
	e := &Engine{cfg: cfg, store: cfg.Vault.Store(), lg: cfg.Log.With(zap.String(logs.Domain, cfg.Domain))}
	st, err := loadState(ctx, e.store)
	if err != nil {
		return nil, fmt.Errorf("domain %s: %w", cfg.Domain, err)
	}
	e.state = st
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.emitCompleted(ctx) // the last rekey's, if a crash came before it
	return e, nil
}

func newKeyID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (e *Engine) trace(step string) {
	if e.cfg.Trace != nil {
		e.cfg.Trace(step)
	}
}

func (e *Engine) now() time.Time { return e.cfg.Clock.Now().UTC() }

// save persists st together with u in one atomic step, then adopts it.
func (e *Engine) save(ctx context.Context, st State, u provider.MetaUpdate) error {
	su, err := stateUpdate(st)
	if err != nil {
		return err
	}
	for k, v := range su.Set {
		if u.Set == nil {
			u.Set = map[string][]byte{}
		}
		u.Set[k] = v
	}
	u.Unset = append(u.Unset, su.Unset...)
	if err := e.store.UpdateMeta(ctx, u); err != nil {
		return fmt.Errorf("record %s %s: %w", e.cfg.Domain, phaseName(st.Phase), err)
	}
	e.mu.Lock()
	e.state = st
	e.mu.Unlock()
	return nil
}

func phaseName(p Phase) string {
	if p == PhaseNone {
		return "completion"
	}
	return string(p)
}

// Init gives a new domain its first MK, at location target, if it has none.
// It is itself a small persisted state machine, so a crash leaves no orphan
// key and the next Init finishes the job.
func (e *Engine) Init(ctx context.Context, target string) error {
	if e.cfg.Vault.Current() != "" {
		return nil
	}
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	if st.Phase == PhaseNone {
		keys, err := e.store.Keys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.State == provider.KeyCurrent {
				return fmt.Errorf("domain %s: current key %s could not be loaded", e.cfg.Domain, k.ID)
			}
		}
		st = State{Phase: PhasePrepare, Op: OpInit, To: newKeyID(), Target: target, Started: e.now()}
		if err := e.save(ctx, st, provider.MetaUpdate{}); err != nil {
			return err
		}
	}
	if st.Op != OpInit {
		return fmt.Errorf("domain %s: no current key but a %s is pending", e.cfg.Domain, st.Op)
	}
	return e.drive(ctx)
}

// StartOptions are the options of a rekey.
type StartOptions struct {
	// Stage, unless Never, makes the rekey staged: once every entry is
	// re-encrypted, the old MK is kept, RETIRED, for this period (status
	// STAGED) instead of being destroyed. See Continue and Cancel.
	Stage Rotation
}

// Start begins a rekey whose new MK is made at location target, or, if the
// domain's last rekey failed, retries that one now. It returns once the
// rekey is durably recorded; the rekey runs in the background.
func (e *Engine) Start(target string) error { return e.StartWith(target, StartOptions{}) }

// StartWith is Start with options. A retry of a failed rekey keeps its own
// stage period unless o gives one, which then replaces it (a rekey that
// has begun destroying its old MK can no longer be staged).
func (e *Engine) StartWith(target string, o StartOptions) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.running {
		return fmt.Errorf("%w for %s", ErrInProgress, e.cfg.Domain)
	}
	if e.state.Phase == PhaseStaged {
		return &StagedError{Domain: e.cfg.Domain, Until: e.state.StagedUntil}
	}
	if e.state.Phase != PhaseNone && e.state.Target != target {
		return fmt.Errorf("%w for %s: a %s to %s failed (%s); retry it or let it complete first",
			ErrOtherPending, e.cfg.Domain, e.state.Op, e.state.Target, e.state.Error)
	}
	if e.state.Phase != PhaseNone && !o.Stage.IsNever() && o.Stage != e.state.StagePeriod {
		st := e.state
		switch {
		case st.run() != OpRekey && st.run() != OpMigrate:
			return fmt.Errorf("%w for %s: its %s of a staged rekey failed (%s); it is retried by itself, or retry it now without a stage period",
				ErrOtherPending, e.cfg.Domain, st.run(), st.Error)
		case st.Phase == PhaseDestroy:
			return fmt.Errorf("%w for %s: its failed %s is destroying the old key already (%s), too late to stage it; retry it without a stage period",
				ErrOtherPending, e.cfg.Domain, st.Op, st.Error)
		}
		st.StagePeriod = o.Stage
		if err := e.recordLocked(st, "start rekey of"); err != nil {
			return err
		}
	}
	if e.state.Phase == PhaseNone {
		from := e.cfg.Vault.Current()
		if from == "" {
			return fmt.Errorf("rekey %s: %w", e.cfg.Domain, provider.ErrKeyUnavailable)
		}
		op := OpRekey
		if loc, err := e.location(from); err != nil {
			return err
		} else if loc != target {
			op = OpMigrate
		}
		st := State{Phase: PhasePrepare, Op: op, From: from, To: newKeyID(), Target: target, Started: e.now(), StagePeriod: o.Stage}
		if err := e.recordLocked(st, "start rekey of"); err != nil {
			return err
		}
		e.lg.Info("rekey started", zap.String(logs.OldKeyID, from), zap.String(logs.NewKeyID, st.To), zap.String(logs.Location, target),
			zap.Stringer(logs.StagePeriod, st.StagePeriod))
	}
	e.launchLocked()
	return nil
}

// recordLocked persists st alone, durably, then adopts it; what names the
// step in the error. It is for the steps that begin a run (save is for
// those of a run), made with e.mu held so that no second run begins.
func (e *Engine) recordLocked(st State, what string) error {
	su, err := stateUpdate(st)
	if err == nil {
		err = e.store.UpdateMeta(e.ctx, su)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, e.cfg.Domain, err)
	}
	e.state = st
	return nil
}

// location returns where MK id lives.
func (e *Engine) location(id string) (string, error) {
	infos, err := e.store.Keys(e.ctx)
	if err != nil {
		return "", err
	}
	ki, ok := provider.KeyByID(infos, id)
	if !ok {
		return "", fmt.Errorf("rekey %s: key %s has no metadata", e.cfg.Domain, id)
	}
	return ki.Location, nil
}

// Resume runs a pending rekey now if none is running: at start (invariant
// 7) and when a retry is due. It reports whether it launched one.
func (e *Engine) Resume() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A STAGED rekey waits for Continue, Cancel or ContinueIfDue.
	if e.closed || e.running || e.state.Phase == PhaseNone || e.state.Phase == PhaseStaged {
		return false
	}
	e.launchLocked()
	return true
}

// RetryIfDue resumes a pending rekey whose retry time has come, or that was
// interrupted (not failed). A retry time further away than one retry
// interval means the clock went back since the failure; the retry is due
// then rather than after the jump, so a clock set back by a day does not
// hold a failed rekey for a day.
func (e *Engine) RetryIfDue(now time.Time) bool {
	e.mu.Lock()
	wait := e.state.NextRetry.Sub(now)
	due := e.state.Phase != PhaseNone && e.state.Phase != PhaseStaged && !e.running &&
		(e.state.Error == "" || wait <= 0 || wait > e.cfg.RetryInterval)
	e.mu.Unlock()
	return due && e.Resume()
}

// setRunningLocked marks the engine running or not; idle is closed when
// it stops. e.mu is held.
func (e *Engine) setRunningLocked(on bool) {
	switch {
	case on && !e.running:
		e.idle = make(chan struct{})
	case !on && e.running:
		close(e.idle)
	}
	e.running = on
}

// Settled returns the engine's status once a run that has done its work
// has also recorded its end (its events; its OnEnd and OnFinish, which
// track the schedule and start a rekey queued behind it): until then the
// engine still counts as running, and a start asked for in between is no
// more "in progress" than one asked for a moment later. It waits at most
// limit.
func (e *Engine) Settled(limit time.Duration) Status {
	e.mu.Lock()
	ending := e.running && e.state.Phase == PhaseNone
	idle := e.idle
	e.mu.Unlock()
	if ending {
		t := time.NewTimer(limit)
		defer t.Stop()
		select {
		case <-idle:
		case <-t.C:
		}
	}
	return e.Status()
}

func (e *Engine) launchLocked() {
	e.setRunningLocked(true)
	e.runKind = e.state.run()
	e.passes = 0
	e.runRew.Store(0)
	e.state.Attempts++
	e.state.Error, e.state.FailedAt, e.state.NextRetry = "", time.Time{}, time.Time{}
	e.wg.Add(1)
	go e.run()
}

func (e *Engine) run() {
	defer e.wg.Done()
	start := time.Now()
	e.mu.Lock()
	begun := e.state
	e.mu.Unlock()
	err := e.drive(e.ctx)
	interrupted := err != nil && e.ctx.Err() != nil
	if err != nil && !interrupted {
		e.fail(err)
	}
	defer func() {
		e.mu.Lock()
		e.setRunningLocked(false)
		e.mu.Unlock()
	}()
	switch {
	case interrupted:
		e.lg.Info("rekey interrupted", zap.Error(err))
		return
	case err == nil:
		e.lg.Info("rekey finished", zap.Int64(logs.Entries, e.done.Load()), zap.Duration(logs.Elapsed, time.Since(start)))
	}
	// Still marked running: whoever tracks completions records this one
	// before anyone can see the domain idle.
	if e.cfg.OnEnd != nil && begun.Op != OpInit {
		end := End{Domain: e.cfg.Domain, Scope: e.cfg.Scope, Op: begun.Op, Err: err, Rewrapped: e.runRew.Load()}
		if err == nil {
			end.Elapsed = max(e.now().Sub(begun.Started), 0)
		}
		e.cfg.OnEnd(end)
	}
	if e.cfg.OnFinish != nil {
		e.cfg.OnFinish(e.cfg.Domain, err)
	}
}

// fail records err: the state machine stays where it stopped, to be retried.
func (e *Engine) fail(err error) {
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	now := e.now()
	st.Error, st.FailedAt, st.NextRetry = err.Error(), now, now.Add(e.cfg.RetryInterval)
	st.Failures++
	if fault := provider.StorageFault(err); fault != "" {
		st.Error += " (" + fault + ")"
	}
	if serr := e.save(context.WithoutCancel(e.ctx), st, provider.MetaUpdate{}); serr != nil {
		// The disk may be full: keep the failure in memory all the same.
		e.lg.Error("record rekey failure", zap.Error(serr))
		e.mu.Lock()
		e.state = st
		e.mu.Unlock()
	}
	name := logs.EventRekeyFailed
	if e.cfg.Scope == logs.ScopeSED {
		name = logs.EventSedsRekeyFailed
	}
	e.lg.Warn("rekey failed", zap.String(logs.Phase, string(st.Phase)), zap.Int(logs.Attempt, st.Attempts),
		zap.Time(logs.Retry, st.NextRetry), zap.Error(err))
	what := "rekey"
	switch {
	case st.Op == OpCancel:
		what = "cancel of the staged rekey"
	case st.Continued != "", st.Phase == PhaseStaged:
		what = "continue of the staged rekey"
	}
	e.emit(logs.Event{Name: name, KeyID: st.From, Attempt: st.Attempts, Error: st.Error,
		Message: fmt.Sprintf("%s of %s failed in %s (attempt %d); entries remain readable under their keys; retry at %s",
			what, e.cfg.Domain, st.Phase, st.Attempts, st.NextRetry.Format(time.RFC3339))})
}

func (e *Engine) emit(ev logs.Event) {
	if e.cfg.Events == nil {
		return
	}
	ev.Time = e.now()
	ev.Scope, ev.Domain = e.cfg.Scope, e.cfg.Domain
	if e.cfg.Scope == logs.ScopeSED {
		ev.Node = e.cfg.Node
	}
	e.cfg.Events.Emit(ev)
}

// drive runs the state machine from the persisted phase to the end.
func (e *Engine) drive(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.mu.Lock()
		st := e.state
		e.mu.Unlock()
		e.trace("phase:" + string(st.Phase))
		var err error
		switch st.Phase {
		case PhaseNone:
			return nil
		case PhasePrepare:
			err = e.prepare(ctx, st)
		case PhaseSwitch:
			err = e.switchKey(ctx, st)
		case PhaseRewrap:
			err = e.rewrap(ctx, st)
		case PhaseVerify:
			err = e.verify(ctx, st)
		case PhaseDestroy:
			err = e.destroy(ctx, st)
		case PhaseStaged:
			return nil // the run ends here; the old MK waits, RETIRED
		default:
			err = fmt.Errorf("domain %s: unknown rekey phase %q", e.cfg.Domain, st.Phase)
		}
		if err != nil {
			return err
		}
	}
}

// prepare creates the new MK, durably (invariant 2), and records it PENDING.
func (e *Engine) prepare(ctx context.Context, st State) error {
	src, err := e.cfg.Sources(st.Target)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", e.cfg.Domain, err)
	}
	ref, m, err := src.Create(ctx, e.cfg.Domain, st.To)
	e.trace("prepare:create")
	if errors.Is(err, provider.ErrKeyCorrupt) {
		// The new MK is unusable and nothing is sealed under it: replace it.
		e.lg.Warn("new key unusable, replacing it", zap.String(logs.NewKeyID, st.To), zap.Error(err))
		if err := src.Destroy(ctx, provider.KeyRef{Domain: e.cfg.Domain, ID: st.To, Location: st.Target}); err != nil {
			return fmt.Errorf("prepare %s: discard unusable key %s: %w", e.cfg.Domain, st.To, err)
		}
		st.To = newKeyID()
		return e.save(ctx, st, provider.MetaUpdate{})
	}
	if err != nil {
		return fmt.Errorf("prepare %s: create key %s at %s: %w", e.cfg.Domain, st.To, st.Target, err)
	}
	key, err := provider.NewKey(st.To, m)
	clear(m)
	if err != nil {
		return err
	}
	info := provider.KeyInfo{KeyRef: ref, State: provider.KeyPending, Fingerprint: key.Fingerprint(), Created: e.now()}
	st.Phase = PhaseSwitch
	if err := e.save(ctx, st, provider.MetaUpdate{PutKeys: []provider.KeyInfo{info}}); err != nil {
		return err
	}
	e.cfg.Vault.AddKey(key)
	e.trace("prepare:done")
	return nil
}

// switchKey makes the new MK current for writes and the old one RETIRING.
func (e *Engine) switchKey(ctx context.Context, st State) error {
	infos, err := e.store.Keys(ctx)
	if err != nil {
		return err
	}
	to, ok := provider.KeyByID(infos, st.To)
	if !ok {
		if st.Op == OpCancel { // the retired MK the entries go back under is never replaced
			return fmt.Errorf("switch %s: retired key %s has no metadata; the cancel cannot go on", e.cfg.Domain, st.To)
		}
		return e.restartPrepare(ctx, st, "its metadata is missing")
	}
	if e.cfg.Vault.Key(st.To) == nil {
		k, err := provider.LoadKey(ctx, e.cfg.Sources, to)
		if st.Op != OpCancel && (errors.Is(err, provider.ErrKeyNotFound) || errors.Is(err, provider.ErrKeyCorrupt)) {
			// Nothing is sealed under it yet: mint another.
			return e.restartPrepare(ctx, st, err.Error())
		}
		if err != nil {
			return fmt.Errorf("switch %s: %w", e.cfg.Domain, err)
		}
		e.cfg.Vault.AddKey(k)
	}
	to.State = provider.KeyCurrent
	put := []provider.KeyInfo{to}
	next := st
	next.Phase = PhaseRewrap
	if st.From == "" { // OpInit: nothing to rewrap
		next = State{}
	} else if from, ok := provider.KeyByID(infos, st.From); ok {
		from.State = provider.KeyRetiring
		put = append(put, from)
	}
	err = e.cfg.Vault.Switch(st.To, func() error {
		// No write is in flight here, so the count is exact.
		if st.From != "" {
			usage, err := e.store.KeyUsage(ctx)
			if err != nil {
				return err
			}
			next.Total = usage[st.From]
		}
		return e.save(ctx, next, provider.MetaUpdate{PutKeys: put})
	})
	if err != nil {
		return fmt.Errorf("switch %s: %w", e.cfg.Domain, err)
	}
	e.done.Store(0)
	e.trace("switch:done")
	return nil
}

func (e *Engine) restartPrepare(ctx context.Context, st State, why string) error {
	e.lg.Warn("new key unusable before switch, minting another", zap.String(logs.NewKeyID, st.To), zap.String(logs.Error, why))
	old := st.To
	st.Phase, st.To = PhasePrepare, newKeyID()
	return e.save(ctx, st, provider.MetaUpdate{DeleteKeys: []string{old}})
}

// rewrap moves every entry from the old MK to the new one in batches, in
// one pass over the store. Each batch is one statement in one short
// transaction that reads each row, re-seals it and writes it back, so no
// service write can land between a row's read and its rewrite (invariant
// 6); reads go on beside it. Entries written meanwhile are sealed under the
// new MK already (the SWITCH came first), so one pass leaves none under the
// old one; VERIFY checks that it did.
func (e *Engine) rewrap(ctx context.Context, st State) error {
	from, to := e.cfg.Vault.Key(st.From), e.cfg.Vault.Key(st.To)
	if from == nil || to == nil {
		missing := st.From
		if from != nil {
			missing = st.To
		}
		err := e.cfg.Vault.Unavailable()
		if err == nil {
			err = provider.ErrKeyUnavailable
		}
		return fmt.Errorf("rewrap %s: key %s not loaded: %w", e.cfg.Domain, missing, err)
	}
	if usage, err := e.store.KeyUsage(ctx); err == nil {
		e.done.Store(max(st.Total-usage[st.From], 0))
	}
	var plain []byte
	defer func() { clear(plain) }()
	reseal := func(dst []byte, name string, sealed []byte) ([]byte, error) {
		var err error
		if plain, err = from.Open(plain[:0], e.cfg.Domain, name, sealed); err != nil {
			return nil, &provider.EntryError{Domain: e.cfg.Domain, Name: name, KeyID: st.From, Err: err}
		}
		return to.Seal(dst, e.cfg.Domain, name, plain)
	}
	for after := int64(0); ; {
		n, next, err := e.store.RewrapRange(ctx, st.From, st.To, after, e.cfg.BatchSize, reseal)
		if err != nil {
			return fmt.Errorf("rewrap %s: %w", e.cfg.Domain, err)
		}
		e.done.Add(int64(n))
		e.runRew.Add(int64(n))
		e.trace("rewrap:batch")
		if next == after {
			break
		}
		after = next
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	st.Phase = PhaseVerify
	return e.save(ctx, st, provider.MetaUpdate{})
}

// verify checks, after the last batch, that no entry references the old MK,
// and makes every rewrite durable before anything is destroyed (invariant 3).
func (e *Engine) verify(ctx context.Context, st State) error {
	n, err := e.store.CountByKey(ctx, st.From)
	if err != nil {
		return fmt.Errorf("verify %s: %w", e.cfg.Domain, err)
	}
	if n > 0 {
		// Left by a pass cut short, or by a fault; each pass that leaves
		// some counts, so a row that can never be rewritten stops the rekey.
		if e.passes++; e.passes > maxPasses {
			return fmt.Errorf("verify %s: %d entries still under key %s after %d passes: %w", e.cfg.Domain, n, st.From, maxPasses, ErrNoProgress)
		}
		e.lg.Warn("entries left under old key, rewrapping again", zap.Int64(logs.Entries, n))
		st.Phase = PhaseRewrap
		return e.save(ctx, st, provider.MetaUpdate{})
	}
	if err := e.store.Sync(ctx); err != nil {
		return fmt.Errorf("verify %s: %w", e.cfg.Domain, err)
	}
	e.trace("verify:synced")
	infos, err := e.store.Keys(ctx)
	if err != nil {
		return err
	}
	var put []provider.KeyInfo
	if from, ok := provider.KeyByID(infos, st.From); ok {
		from.State = provider.KeyRetired
		put = append(put, from)
	}
	if st.staging() {
		return e.stage(ctx, st, put)
	}
	st.Phase = PhaseDestroy
	return e.save(ctx, st, provider.MetaUpdate{PutKeys: put})
}

// destroy removes the old MK from its key source, then from the metadata.
func (e *Engine) destroy(ctx context.Context, st State) error {
	// Check once more, right before the irreversible step: VERIFY read
	// every row; the kept count tells whether anything changed since.
	usage, err := e.store.KeyUsage(ctx)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", e.cfg.Domain, err)
	}
	if usage[st.From] > 0 {
		st.Phase = PhaseRewrap
		return e.save(ctx, st, provider.MetaUpdate{})
	}
	infos, err := e.store.Keys(ctx)
	if err != nil {
		return err
	}
	if from, ok := provider.KeyByID(infos, st.From); ok {
		src, err := e.cfg.Sources(from.Location)
		if err != nil {
			return fmt.Errorf("destroy %s key %s: %w", e.cfg.Domain, st.From, err)
		}
		if err := src.Destroy(ctx, from.KeyRef); err != nil {
			return fmt.Errorf("destroy %s key %s at %s: %w", e.cfg.Domain, st.From, from.Location, err)
		}
		e.trace("destroy:source")
	}
	// The completion event is recorded with the end itself, and emitted
	// from there: a crash between the two cannot lose it.
	ev, err := json.Marshal(e.endEvent(st))
	if err != nil {
		return err
	}
	if err := e.save(ctx, State{}, provider.MetaUpdate{DeleteKeys: []string{st.From}, Set: map[string][]byte{completedKey: ev}}); err != nil {
		return err
	}
	e.cfg.Vault.DropKey(st.From)
	e.trace("destroy:done")
	e.emitCompleted(ctx)
	return nil
}

// completedKey names the store's state value that holds a completion event
// until it has been emitted.
const completedKey = "rekey.completed"

// Journal is an Emitter that can tell whether it already holds an event.
type Journal interface {
	Emitter
	Has(name, domain, keyID string) bool
}

// emitCompleted emits the completion event recorded with the end of the
// last rekey, if any, then forgets it. If a crash came after the emit but
// before the forgetting, an Emitter that is a Journal already has it and
// it is not emitted twice.
func (e *Engine) emitCompleted(ctx context.Context) {
	b, err := e.store.State(ctx, completedKey)
	if err != nil || b == nil {
		return
	}
	var ev logs.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		e.lg.Error("pending completion event unreadable; dropped", zap.Error(err))
	} else if j, ok := e.cfg.Events.(Journal); !ok || !j.Has(ev.Name, e.cfg.Domain, ev.KeyID) {
		e.emit(ev)
	}
	if err := e.store.UpdateMeta(context.WithoutCancel(ctx), provider.MetaUpdate{Unset: []string{completedKey}}); err != nil {
		e.lg.Error("forget emitted completion event", zap.Error(err))
	}
}

// Close stops the engine: a batch in flight is rolled back, the state
// machine stays where it was, to resume at the next start.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}

// Wait blocks until no rekey of this engine is running.
func (e *Engine) Wait() {
	e.wg.Wait()
}

// Status is a snapshot of an engine.
type Status struct {
	Phase     Phase
	Op        string
	From, To  string
	Target    string // location of the new MK
	Running   bool
	Error     string // why the last run failed; "" if it did not
	Done      int64
	Total     int64
	Started   time.Time
	Attempts  int
	NextRetry time.Time // zero unless Failed
	Failures  int       // runs of this rekey that failed; 0 once it completes

	// StagePeriod is a staged rekey's; Never for others.
	StagePeriod Rotation
	// StagedAt, StagedUntil: when the rekey reached STAGED and when it
	// continues by itself; zero unless Staged.
	StagedAt, StagedUntil time.Time
	// Continued says who continued a staged rekey; "" if none was.
	Continued string
	// Run is what the running run is for, or the last one was: OpRekey,
	// OpMigrate, OpCancel, RunContinue, or "" before the first run.
	Run string
}

// Ending reports whether the pending run ends a staged rekey: its continue
// or its cancel.
func (s Status) Ending() bool { return s.Phase != PhaseNone && (s.Op == OpCancel || s.Continued != "") }

// Staged reports whether a staged rekey waits for its continue or cancel.
func (s Status) Staged() bool { return s.Phase == PhaseStaged }

// Pending reports whether a rekey is under way, running or not.
func (s Status) Pending() bool { return s.Phase != PhaseNone }

// Failed reports whether the last run failed and waits for its retry.
func (s Status) Failed() bool { return !s.Running && s.Phase != PhaseNone && s.Error != "" }

// Status returns a snapshot.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state
	s := Status{Phase: st.Phase, Op: st.Op, From: st.From, To: st.To, Target: st.Target, Running: e.running, Error: st.Error,
		Total: st.Total, Started: st.Started, Attempts: st.Attempts, NextRetry: st.NextRetry,
		Failures: st.Failures, StagePeriod: st.StagePeriod, Continued: st.Continued, Run: e.runKind}
	if st.Phase == PhaseStaged {
		s.StagedAt, s.StagedUntil = st.StagedAt, st.StagedUntil
	}
	if st.Phase != PhaseNone && st.Op != OpInit {
		s.Done = min(e.done.Load(), st.Total)
		if st.Phase == PhaseVerify || st.Phase == PhaseDestroy || st.Phase == PhaseStaged {
			s.Done = st.Total
		}
	}
	return s
}

// End is a rekey run that ended: it completed (Err is nil) or failed.
type End struct {
	Domain, Scope string
	Op            string // OpRekey or OpMigrate
	Err           error
	// Elapsed is, for a run that completed the rekey, the time from the
	// rekey's start to its end on the engine's clock: earlier failed runs,
	// the waits for their retries and restarts in between included.
	Elapsed time.Duration
	// Rewrapped is how many entries this run re-encrypted.
	Rewrapped int64
}
