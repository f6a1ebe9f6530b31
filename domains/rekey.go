package domains

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// StartRekey starts a rekey of the named domains of scope (all of them when
// names is empty), each with its new MK at its current MK's location. If
// any of them is already rekeying, it starts none and says which. A domain
// whose last rekey failed is retried now. A rekey of the whole scope resets
// the scope's rotation clock when every domain has completed.
func (r *Registry) StartRekey(scope string, names []string) ([]string, error) {
	return r.StartRekeyWith(scope, names, rekey.StartOptions{})
}

// StartRekeyWith is StartRekey with options: o.Stage makes every rekey it
// starts a staged one. A domain that is STAGED refuses it (and so the
// whole start), as does, for a staged rekey, one that is migrating.
func (r *Registry) StartRekeyWith(scope string, names []string, o rekey.StartOptions) ([]string, error) {
	// No Tick in between: it would start the domains this marks pending,
	// as plain rekeys, before this starts them as asked.
	r.tickMu.Lock()
	defer r.tickMu.Unlock()
	all, err := ScopeDomains(scope)
	if err != nil {
		return nil, err
	}
	ds, err := r.scopeDomains(scope, names)
	if err != nil {
		return nil, err
	}
	var migrating []*Domain
	for _, d := range ds {
		queue, err := r.rekeyCheck(d, d.engine.Settled(wrapUp), !o.Stage.IsNever())
		if err != nil {
			return nil, err
		}
		if queue {
			migrating = append(migrating, d) // the rekey waits for the migration
		}
	}
	whole := len(ds) == len(all)
	if whole {
		if err := r.markPending(scope, all); err != nil {
			return nil, err
		}
	}
	var started []string
	for _, d := range ds {
		if slices.Contains(migrating, d) {
			if err := r.queue(d.Name); err != nil {
				return started, err
			}
			r.lg.Info("rekey queued behind migration", zap.String(logs.Domain, d.Name))
		} else if err := d.engine.StartWith(r.currentLocation(d), o); err != nil {
			return started, r.withHint(d, err)
		}
		started = append(started, d.Name)
	}
	return started, nil
}

// wrapUp bounds how long a start waits for a run that has done its work
// to record its end (rekey.Engine.Settled).
const wrapUp = 5 * time.Second

func (r *Registry) currentLocation(d *Domain) string {
	if st := r.keyStatus(context.Background(), d); st.Location != "" {
		return st.Location
	}
	return provider.LocationLocal
}

// finished is every engine's OnFinish.
func (r *Registry) finished(domain string, err error) {
	if d := r.byName[domain]; d != nil && d.engine != nil {
		switch d.engine.Status().Run {
		case rekey.RunContinue, rekey.OpCancel:
			// The end of a staged rekey, not a rekey: the schedule counts
			// none. A scheduled rekey that came due while the domain was
			// STAGED can start now; a failure's retry is slept towards.
			if r.sched != nil {
				r.sched.Wake()
			}
			return
		}
	}
	r.queueMu.Lock()
	queued := r.queued[domain]
	r.queueMu.Unlock()
	r.mu.Lock()
	s := r.schedule(scopeOf(domain))
	// A migration that ends with a rekey queued behind it is not that
	// rekey: the queued one's own end counts for the schedule.
	handOver := queued && err == nil
	reset := !handOver && s.Finish(domain, err, r.cfg.Clock.Now().UTC())
	if reset {
		r.lg.Info("scope rekey completed, rotation clock reset", zap.String(logs.Scope, scopeOf(domain)))
	}
	if serr := r.saveSchedulesLocked(); serr != nil {
		r.lg.Error("save schedule", zap.Error(serr))
	}
	r.mu.Unlock()
	if (err != nil || reset) && r.sched != nil {
		r.sched.Wake() // so the retry or the next rotation is slept towards, not a full TickMax
	}
	if err == nil {
		go r.runQueued(domain) // after this run has ended
	}
}

// Tick does what is due at now: loading MKs that could not be loaded,
// retrying failed rekeys, resuming interrupted ones, and starting scheduled
// whole-scope rekeys. It returns the next time something will be due (zero
// if nothing is).
func (r *Registry) Tick(now time.Time) time.Time {
	r.tickMu.Lock()
	defer r.tickMu.Unlock()
	now = now.UTC()
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, d := range r.order {
		if d.openErr != nil {
			continue
		}
		if d.Vault.Unavailable() != nil {
			if err := d.Vault.LoadKeys(context.Background(), r.Sources); err == nil {
				r.lg.Info("keys loaded", zap.String(logs.Domain, d.Name))
			}
		}
		d.engine.RetryIfDue(now)
		d.engine.ContinueIfDue(now)
		// A failure's retry time counts from the moment it is recorded, even
		// while its run is still ending (a Wake from OnFinish lands there).
		st := d.engine.Status()
		if st.Error != "" && !st.NextRetry.IsZero() {
			earliest(st.NextRetry)
		}
		if st.Staged() && st.Error == "" && st.StagedUntil.After(now) {
			earliest(st.StagedUntil)
		}
	}
	for _, scope := range Scopes {
		r.mu.Lock()
		s := *r.schedule(scope)
		r.mu.Unlock()
		if s.RekeyTime.After(now) && !s.Rotation.IsNever() {
			s = r.reanchor(scope, now)
		}
		if s.Due(now) {
			r.lg.Info("scheduled rekey due", zap.String(logs.Scope, scope), zap.Time("due", s.Next()))
			r.startScheduled(scope)
			continue
		}
		if len(s.Pending) == 0 {
			earliest(s.Next())
		} else {
			r.startPending(scope)
		}
	}
	return next
}

// reanchor restarts scope's rotation clock at now: the clock has gone back
// past the last rekey, and counting from a time still to come would put
// the next rekey off by however far it went back. Re-anchored, the next
// rekey is at most one rotation period later than it would have been.
func (r *Registry) reanchor(scope string, now time.Time) rekey.ScopeSchedule {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.schedule(scope)
	r.lg.Warn("clock is before the last rekey time; rotation counts from now",
		zap.String(logs.Scope, scope), zap.Time("last", s.RekeyTime), zap.Time("now", now))
	s.RekeyTime = now
	if err := r.saveSchedulesLocked(); err != nil {
		// Kept in memory: a restart reads the old time and re-anchors again.
		r.lg.Error("save schedule", zap.Error(err))
	}
	return *s
}

// startScheduled starts every idle domain of scope and counts the busy ones
// in as well: the scope's rekey completes when each has completed one.
func (r *Registry) startScheduled(scope string) {
	all, _ := ScopeDomains(scope)
	if err := r.markPending(scope, all); err != nil {
		r.lg.Error("save schedule", zap.Error(err))
		return
	}
	r.startPending(scope)
}

// markPending records that a whole-scope rekey of domains is under way.
// If that cannot be saved, nothing changes.
func (r *Registry) markPending(scope string, domains []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.schedule(scope)
	old := *s
	s.Pending = slices.Clone(domains)
	s.PendingFrom = map[string]string{}
	for _, name := range domains {
		if d := r.byName[name]; d != nil && d.openErr == nil {
			s.PendingFrom[name] = d.Vault.Current()
		}
	}
	s.LastResult = rekey.ResultInProgress
	if err := r.saveSchedulesLocked(); err != nil {
		*s = old
		return err
	}
	return nil
}

// startPending starts a rekey of every domain of the scope's whole-scope
// rekey that has none: one that could not be opened when it began, or
// whose start a crash cut off. A domain whose rekey ended before a crash
// cut off the recording of its end is counted, not rekeyed again.
func (r *Registry) startPending(scope string) {
	r.mu.Lock()
	s := r.schedule(scope)
	pending, from := slices.Clone(s.Pending), maps.Clone(s.PendingFrom)
	r.mu.Unlock()
	for _, name := range pending {
		d, ok := r.byName[name]
		if !ok || d.openErr != nil || d.Vault.Current() == "" {
			continue
		}
		if st := d.engine.Status(); st.Running || st.Pending() {
			continue
		}
		// A migration changes the MK too: a domain with a rekey queued
		// behind its migration still has that rekey to run.
		r.queueMu.Lock()
		queued := r.queued[name]
		r.queueMu.Unlock()
		if mk := from[name]; mk != "" && d.Vault.Current() != mk && !queued {
			r.endedBeforeStop(scope, name)
			continue
		}
		if err := d.engine.Start(r.currentLocation(d)); err != nil && !errors.Is(err, rekey.ErrInProgress) {
			r.lg.Error("start scheduled rekey", zap.String(logs.Domain, name), zap.Error(err))
		}
	}
}

// endedBeforeStop records the end of domain's rekey in scope's schedule:
// the rekey ended, but kmd stopped before its end was recorded there.
func (r *Registry) endedBeforeStop(scope, domain string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lg.Info("rekey ended before kmd stopped; counted for the scope", zap.String(logs.Domain, domain))
	if r.schedule(scope).Finish(domain, nil, r.cfg.Clock.Now().UTC()) {
		r.lg.Info("scope rekey completed, rotation clock reset", zap.String(logs.Scope, scope))
	}
	if err := r.saveSchedulesLocked(); err != nil {
		r.lg.Error("save schedule", zap.Error(err))
	}
}

// SetRotation sets a scope's key rotation and resets its rotation clock.
func (r *Registry) SetRotation(scope string, rot rekey.Rotation) (rekey.ScopeSchedule, error) {
	if _, err := ScopeDomains(scope); err != nil {
		return rekey.ScopeSchedule{}, err
	}
	r.mu.Lock()
	s := r.schedule(scope)
	old := *s
	s.Rotation = rot
	s.RekeyTime = r.cfg.Clock.Now().UTC().Truncate(time.Second)
	if err := r.saveSchedulesLocked(); err != nil {
		*s = old
		r.mu.Unlock()
		return rekey.ScopeSchedule{}, err
	}
	out := *s
	r.mu.Unlock()
	if r.sched != nil {
		r.sched.Wake()
	}
	return out, nil
}

// Schedule returns a scope's schedule.
func (r *Registry) Schedule(scope string) (rekey.ScopeSchedule, error) {
	if _, err := ScopeDomains(scope); err != nil {
		return rekey.ScopeSchedule{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := *r.schedule(scope)
	s.Pending, s.PendingFrom = slices.Clone(s.Pending), maps.Clone(s.PendingFrom)
	return s, nil
}

func (r *Registry) schedule(scope string) *rekey.ScopeSchedule {
	s, ok := r.schedules[scope]
	if !ok {
		s = &rekey.ScopeSchedule{RekeyTime: time.Unix(0, 0).UTC(), LastResult: rekey.ResultNone}
		r.schedules[scope] = s
	}
	return s
}

func (r *Registry) schedulePath() string { return filepath.Join(r.cfg.DataDir, "schedule.json") }

func (r *Registry) loadSchedules() error {
	r.schedules = map[string]*rekey.ScopeSchedule{}
	return readJSON(r.schedulePath(), "schedule", &r.schedules)
}

func (r *Registry) saveSchedulesLocked() error {
	if err := writeJSON(r.schedulePath(), r.schedules); err != nil {
		return fmt.Errorf("save schedule: %w", err)
	}
	return nil
}
