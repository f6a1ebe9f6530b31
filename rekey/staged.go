package rekey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

// A staged rekey runs as any rekey up to VERIFY, then stops in STAGED with
// its old MK RETIRED but kept (loaded, and in its key source) until
// StagedUntil. From there:
//
//   - Continue (the operator, or ContinueIfDue at the end of the period)
//     records STAGED → VERIFY and runs VERIFY (a full count once more, then
//     Sync) and DESTROY, which destroys the retired MK.
//   - Cancel records a new run, Op cancel, with From and To swapped, at
//     SWITCH: the retired MK becomes current again and the rekey's new one
//     RETIRING; REWRAP moves every entry back; VERIFY proves that none is
//     left under the new MK; DESTROY destroys it.
//
// Every transition is one save of the state with the key metadata, so a
// crash at any point resumes where it stood, and the invariants of any
// rekey hold: the MKs entries need are never destroyed, only the one a
// full count found unused.

// staging reports whether VERIFY is to stop in STAGED rather than go on
// to DESTROY.
func (st State) staging() bool {
	return !st.StagePeriod.IsNever() && st.Continued == "" && st.Op != OpCancel
}

// eventName is the cluster event's name, or its sed counterpart.
func (e *Engine) eventName(cluster, sed string) string {
	if e.cfg.Scope == logs.ScopeSED {
		return sed
	}
	return cluster
}

// stage ends VERIFY of a staged rekey: the old MK RETIRED (put), the state
// STAGED until the end of the period, and the Staged event, in one save.
func (e *Engine) stage(ctx context.Context, st State, put []provider.KeyInfo) error {
	now := e.now()
	st.Phase, st.StagedAt, st.StagedUntil = PhaseStaged, now, st.StagePeriod.After(now)
	ev, err := json.Marshal(logs.Event{Name: e.eventName(logs.EventRekeyStaged, logs.EventSedsRekeyStaged), KeyID: st.To,
		Message: fmt.Sprintf("rekey of %s staged: every entry (%d) re-encrypted under key %s; retired key %s kept until %s, "+
			"then destroyed (continue destroys it now, cancel goes back to it)",
			e.cfg.Domain, st.Total, st.To, st.From, st.StagedUntil.Format(time.RFC3339))})
	if err != nil {
		return err
	}
	if err := e.save(ctx, st, provider.MetaUpdate{PutKeys: put, Set: map[string][]byte{completedKey: ev}}); err != nil {
		return err
	}
	e.trace("verify:staged")
	e.lg.Info("rekey staged", zap.String(logs.OldKeyID, st.From), zap.String(logs.NewKeyID, st.To), zap.Time(logs.Until, st.StagedUntil))
	e.emitCompleted(ctx)
	return nil
}

// endEvent is the event recorded with the end of a run's DESTROY.
func (e *Engine) endEvent(st State) logs.Event {
	switch {
	case st.Op == OpCancel:
		// KeyID is the destroyed MK: unique, unlike the restored one,
		// which a later staged rekey may be cancelled back to again.
		return logs.Event{Name: e.eventName(logs.EventRekeyCancelled, logs.EventSedsRekeyCancelled), KeyID: st.From,
			Message: fmt.Sprintf("staged rekey of %s cancelled: key %s is current again and every entry (%d) re-encrypted back under it; key %s destroyed",
				e.cfg.Domain, st.To, e.done.Load(), st.From)}
	case st.Continued != "":
		by := "by the operator"
		if st.Continued == ContinuedAuto {
			by = "automatically at the end of its stage period"
		}
		return logs.Event{Name: e.eventName(logs.EventRekeyContinued, logs.EventSedsRekeyContinued), KeyID: st.To,
			Message: fmt.Sprintf("staged rekey of %s continued %s: retired key %s destroyed; key %s stays current",
				e.cfg.Domain, by, st.From, st.To)}
	}
	return logs.Event{Name: logs.EventRekeyCompleted, KeyID: st.To,
		Message: fmt.Sprintf("rekey of %s completed: key %s replaced key %s, which is destroyed; entries re-encrypted: %d",
			e.cfg.Domain, st.To, st.From, e.done.Load())}
}

// stagedLocked checks that the domain is STAGED and idle. e.mu is held.
func (e *Engine) stagedLocked(what string) error {
	switch {
	case e.closed:
		return ErrClosed
	case e.running:
		return fmt.Errorf("%w for %s", ErrInProgress, e.cfg.Domain)
	case e.state.Phase != PhaseStaged:
		return fmt.Errorf("%w: %s has no staged rekey to %s", ErrNotStaged, e.cfg.Domain, what)
	}
	return nil
}

// Continue continues the domain's STAGED rekey: it records that by
// (ContinuedByOperator or ContinuedAuto) continued it and runs VERIFY and
// DESTROY in the background, which destroy the retired MK. It fails with
// ErrNotStaged if the domain is not STAGED.
func (e *Engine) Continue(by string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.stagedLocked("continue"); err != nil {
		return err
	}
	st := e.state
	st.Phase, st.Continued, st.Started, st.Attempts = PhaseVerify, by, e.now(), 0
	st.Error, st.FailedAt, st.NextRetry = "", time.Time{}, time.Time{}
	if err := e.recordLocked(st, "continue staged rekey of"); err != nil {
		return err
	}
	e.lg.Info("staged rekey continued", zap.String(logs.By, by), zap.String(logs.OldKeyID, st.From))
	e.launchLocked()
	return nil
}

// Cancel cancels the domain's STAGED rekey: it records a cancel run, which
// makes the retired MK current again, re-encrypts every entry back under
// it and destroys the rekey's new MK, and starts it in the background. It
// fails with ErrNotStaged if the domain is not STAGED, and changes nothing
// if the retired MK cannot be loaded.
func (e *Engine) Cancel() error {
	e.mu.Lock()
	st := e.state
	err := e.stagedLocked("cancel")
	e.mu.Unlock()
	if err != nil {
		return err
	}
	infos, err := e.store.Keys(e.ctx)
	if err != nil {
		return fmt.Errorf("cancel staged rekey of %s: %w", e.cfg.Domain, err)
	}
	old, ok := provider.KeyByID(infos, st.From)
	if !ok {
		return fmt.Errorf("cancel staged rekey of %s: retired key %s has no metadata", e.cfg.Domain, st.From)
	}
	// The entries go back under the retired MK: it must be at hand. Loaded
	// here, outside the lock (a KMIP Get may take a while).
	if e.cfg.Vault.Key(st.From) == nil {
		k, err := provider.LoadKey(e.ctx, e.cfg.Sources, old)
		if err != nil {
			return fmt.Errorf("cancel staged rekey of %s: %w", e.cfg.Domain, err)
		}
		e.cfg.Vault.AddKey(k)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.stagedLocked("cancel"); err != nil {
		return err
	}
	if e.state.To != st.To {
		return fmt.Errorf("%w for %s: its staged rekey changed meanwhile", ErrInProgress, e.cfg.Domain)
	}
	next := State{Phase: PhaseSwitch, Op: OpCancel, From: st.To, To: st.From, Target: old.Location, Started: e.now()}
	if err := e.recordLocked(next, "cancel staged rekey of"); err != nil {
		return err
	}
	e.lg.Info("staged rekey cancelled", zap.String(logs.KeyID, st.From), zap.String(logs.OldKeyID, st.To))
	e.launchLocked()
	return nil
}

// ContinueIfDue continues a STAGED rekey whose stage period has ended at
// now; it reports whether it did. If the continue cannot even be recorded
// (a full disk, say), that is a failure like any other: status FAILED, an
// event, and another try after the retry interval.
//
// A clock set back to before the moment the rekey was staged would hold the
// retired MK for as long again as it went back: the stage then counts from
// now instead, so it ends at most one stage period after the jump (and
// never later than it would have by the clock as it was).
func (e *Engine) ContinueIfDue(now time.Time) bool {
	now = now.UTC()
	e.mu.Lock()
	st := e.state
	if e.closed || e.running || st.Phase != PhaseStaged {
		e.mu.Unlock()
		return false
	}
	if st.Error != "" {
		// The last try failed: as RetryIfDue, due at its retry time, or
		// at once if that is further away than an interval (clock back).
		if wait := st.NextRetry.Sub(now); wait > 0 && wait <= e.cfg.RetryInterval {
			e.mu.Unlock()
			return false
		}
	} else if now.Before(st.StagedUntil) {
		if now.Before(st.StagedAt) {
			e.reanchorLocked(now)
		}
		e.mu.Unlock()
		return false
	}
	e.mu.Unlock()
	err := e.Continue(ContinuedAuto)
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrClosed), errors.Is(err, ErrInProgress), errors.Is(err, ErrNotStaged):
		return false // someone else got there first
	}
	e.fail(err)
	return false
}

// reanchorLocked restarts the stage period at now (see ContinueIfDue).
// e.mu is held.
func (e *Engine) reanchorLocked(now time.Time) {
	st := e.state
	e.lg.Warn("clock is before the moment the rekey was staged; the stage period counts from now",
		zap.Time("staged_at", st.StagedAt), zap.Time("now", now), zap.Stringer(logs.StagePeriod, st.StagePeriod))
	st.StagedAt, st.StagedUntil = now, st.StagePeriod.After(now)
	if err := e.recordLocked(st, "record stage period of"); err != nil {
		// Kept in memory: a restart re-anchors again, from its own now.
		e.lg.Error("record stage period", zap.Error(err))
		e.state = st
	}
}

// DeleteRetired destroys a RETIRED MK that no pending rekey holds (a STAGED
// rekey's retired MK goes through Continue instead): only if a count of
// every entry finds none under it, the count made durable first; then from
// its key source, then from the metadata. It fails with ErrKeyInUse if an
// entry references the MK, and with ErrOtherPending if a rekey is pending.
func (e *Engine) DeleteRetired(ctx context.Context, id string) error {
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return ErrClosed
	case e.running:
		e.mu.Unlock()
		return fmt.Errorf("%w for %s", ErrInProgress, e.cfg.Domain)
	case e.state.Phase != PhaseNone:
		st := e.state
		e.mu.Unlock()
		return fmt.Errorf("%w for %s: its %s is in %s; let it end first", ErrOtherPending, e.cfg.Domain, st.run(), st.Phase)
	}
	// Held as a run would be: no rekey starts meanwhile, Close waits.
	e.setRunningLocked(true)
	e.wg.Add(1)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.setRunningLocked(false)
		e.mu.Unlock()
		e.wg.Done()
	}()
	infos, err := e.store.Keys(ctx)
	if err != nil {
		return err
	}
	k, ok := provider.KeyByID(infos, id)
	if !ok {
		return fmt.Errorf("delete key %s of %s: %w", id, e.cfg.Domain, provider.ErrKeyNotFound)
	}
	if k.State != provider.KeyRetired {
		return fmt.Errorf("delete key %s of %s: it is %s, not RETIRED", id, e.cfg.Domain, k.State)
	}
	n, err := e.store.CountByKey(ctx, id)
	if err != nil {
		return fmt.Errorf("delete key %s of %s: %w", id, e.cfg.Domain, err)
	}
	if n > 0 {
		return fmt.Errorf("%w: key %s of %s still seals %d entries", ErrKeyInUse, id, e.cfg.Domain, n)
	}
	if err := e.store.Sync(ctx); err != nil {
		return fmt.Errorf("delete key %s of %s: %w", id, e.cfg.Domain, err)
	}
	src, err := e.cfg.Sources(k.Location)
	if err != nil {
		return fmt.Errorf("delete key %s of %s: %w", id, e.cfg.Domain, err)
	}
	if err := src.Destroy(ctx, k.KeyRef); err != nil {
		return fmt.Errorf("delete key %s of %s at %s: %w", id, e.cfg.Domain, k.Location, err)
	}
	e.trace("delete:source")
	if err := e.store.UpdateMeta(ctx, provider.MetaUpdate{DeleteKeys: []string{id}}); err != nil {
		return fmt.Errorf("delete key %s of %s: %w", id, e.cfg.Domain, err)
	}
	e.cfg.Vault.DropKey(id)
	e.lg.Info("retired key deleted", zap.String(logs.KeyID, id), zap.String(logs.Location, k.Location))
	return nil
}
