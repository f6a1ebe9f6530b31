package rekey

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"
)

// Results of a scope's last scheduled or whole-scope rekey.
const (
	ResultNone       = "none"
	ResultInProgress = "in progress"
	ResultSucceeded  = "succeeded"
	ResultFailed     = "failed"
)

// ScopeSchedule is one scope's persisted rotation schedule.
//
// Next rekey = RekeyTime + Rotation. RekeyTime is reset by a successful
// whole-scope rekey and by a change of rotation. While Pending is not empty
// a whole-scope rekey is under way (or being retried) and the schedule does
// not fire again: a failing domain cannot cause a storm of rekeys, and a
// clock that jumps forward fires at most one.
type ScopeSchedule struct {
	Rotation   Rotation  `json:"rotation"`
	RekeyTime  time.Time `json:"rekey_time"`
	LastResult string    `json:"last_result"`
	Pending    []string  `json:"pending,omitempty"`
	// PendingFrom is the MK each pending domain had when the whole-scope
	// rekey began. A domain whose MK is another, with no rekey under way,
	// had its rekey end before kmd stopped and before that end was
	// recorded here: it is not rekeyed again.
	PendingFrom map[string]string `json:"pending_from,omitempty"`
}

// Next returns when the scope's next rekey is due; zero for Never.
func (s ScopeSchedule) Next() time.Time {
	if s.Rotation.IsNever() {
		return time.Time{}
	}
	return s.Rotation.After(s.RekeyTime)
}

// Due reports whether a whole-scope rekey should start at now.
func (s ScopeSchedule) Due(now time.Time) bool {
	next := s.Next()
	return !next.IsZero() && len(s.Pending) == 0 && !now.Before(next)
}

// Finish records the end of domain's rekey; it reports whether that ended
// the whole-scope rekey successfully (and so reset the rotation clock).
func (s *ScopeSchedule) Finish(domain string, err error, now time.Time) bool {
	i := -1
	for j, d := range s.Pending {
		if d == domain {
			i = j
		}
	}
	if i < 0 {
		return false
	}
	if err != nil {
		s.LastResult = ResultFailed
		return false
	}
	s.Pending = append(s.Pending[:i:i], s.Pending[i+1:]...)
	delete(s.PendingFrom, domain)
	if len(s.Pending) > 0 {
		return false
	}
	s.Pending, s.PendingFrom = nil, nil
	s.LastResult = ResultSucceeded
	s.RekeyTime = now
	return true
}

// Scheduler calls a tick function when something may be due, on
// robfig/cron: tick runs at start, whenever the time it returned comes, and
// at least every maxSleep. The cap means a wall clock that jumps forward is
// noticed within maxSleep (timers run on the monotonic clock), and tick
// itself decides what is due against its own clock, so a jump backward
// fires nothing.
type Scheduler struct {
	cron     *cron.Cron
	maxSleep time.Duration
	tick     func() time.Time

	mu   sync.Mutex // guards next; never held while calling into cron,
	next time.Time  // whose run loop calls wake.Next, which takes it
	// what tick last said; zero: nothing due

	entryMu sync.Mutex // serialises re-arming the cron entry
	id      cron.EntryID

	wakers  sync.WaitGroup // Wakes started by run
	stopped atomic.Bool    // after Stop: no more re-arming, no more logging
}

// NewScheduler returns a stopped scheduler.
func NewScheduler(lg *zap.Logger, maxSleep time.Duration, tick func() time.Time) *Scheduler {
	s := &Scheduler{maxSleep: maxSleep, tick: tick}
	cl := cronLogger{lg: lg, quiet: &s.stopped}
	s.cron = cron.New(cron.WithLogger(cl), cron.WithChain(cron.Recover(cl), cron.SkipIfStillRunning(cl)))
	s.id = s.cron.Schedule(wake{s}, cron.FuncJob(s.run))
	return s
}

func (s *Scheduler) run() {
	next := s.tick()
	s.mu.Lock()
	s.next = next
	s.mu.Unlock()
	// cron chose this entry's next run before the tick ran; if the tick
	// found something due sooner, re-arm so it is not slept through.
	s.entryMu.Lock()
	defer s.entryMu.Unlock()
	if e := s.cron.Entry(s.id); !next.IsZero() && e.Valid() && next.Before(e.Next) && !s.stopped.Load() {
		s.wakers.Go(s.Wake) // under entryMu, so never after Stop's Wait began
	}
}

// Start runs one tick now, then schedules the next ones.
func (s *Scheduler) Start() {
	s.run()
	s.cron.Start()
}

// Wake re-arms the scheduler at once: call it when a schedule changed or a
// retry was set, so that a nearer due time is not slept through.
func (s *Scheduler) Wake() {
	if s.stopped.Load() {
		return
	}
	s.mu.Lock()
	s.next = time.Now()
	s.mu.Unlock()
	s.entryMu.Lock()
	defer s.entryMu.Unlock()
	s.cron.Remove(s.id)
	s.id = s.cron.Schedule(wake{s}, cron.FuncJob(s.run))
}

// Stop stops scheduling and waits for a running tick. Nothing of the
// scheduler's runs or logs after it returns.
func (s *Scheduler) Stop() {
	s.entryMu.Lock()
	s.stopped.Store(true)
	s.entryMu.Unlock()
	<-s.cron.Stop().Done()
	s.wakers.Wait()
}

// wake is the cron.Schedule: the earlier of what tick asked for and maxSleep.
type wake struct{ s *Scheduler }

func (w wake) Next(t time.Time) time.Time {
	w.s.mu.Lock()
	next := w.s.next
	w.s.mu.Unlock()
	limit := t.Add(w.s.maxSleep)
	if next.IsZero() || next.After(limit) {
		return limit
	}
	if !next.After(t) {
		return t.Add(time.Millisecond)
	}
	return next
}

// cronLogger sends robfig/cron's logging through zap. It falls silent once
// the scheduler is stopped: cron's loop logs its own end after Stop returns.
type cronLogger struct {
	lg    *zap.Logger
	quiet *atomic.Bool
}

func (c cronLogger) Info(msg string, kv ...any) {
	if !c.quiet.Load() {
		c.lg.Debug("cron "+msg, zap.String("detail", fmt.Sprint(kv...)))
	}
}

func (c cronLogger) Error(err error, msg string, kv ...any) {
	if !c.quiet.Load() {
		c.lg.Error("cron "+msg, zap.Error(err), zap.String("detail", fmt.Sprint(kv...)))
	}
}
