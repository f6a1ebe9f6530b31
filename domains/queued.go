package domains

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/rekey"
)

// A rekey asked for while its domain migrates is queued behind the
// migration. The queue is kept in <data-dir>/queued.json (a JSON list of
// domains), so that a rekey kmd accepted is not forgotten by a restart or a
// crash before the migration ends.

func (r *Registry) queuedPath() string { return filepath.Join(r.cfg.DataDir, "queued.json") }

// loadQueued reads the queue. Call it at open, before anything runs.
func (r *Registry) loadQueued() error {
	var names []string
	if err := readJSON(r.queuedPath(), "queued rekeys", &names); err != nil {
		return err
	}
	for _, n := range names {
		r.queued[n] = true
	}
	return nil
}

// saveQueuedLocked writes the queue durably. r.queueMu must be held.
func (r *Registry) saveQueuedLocked() error {
	names := make([]string, 0, len(r.queued))
	for n, q := range r.queued {
		if q {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if err := writeJSON(r.queuedPath(), names); err != nil {
		return fmt.Errorf("save queued rekeys: %w", err)
	}
	return nil
}

// queue records a rekey of domain to run once its migration ends; if that
// cannot be saved, nothing is queued.
func (r *Registry) queue(domain string) error {
	r.queueMu.Lock()
	defer r.queueMu.Unlock()
	was := r.queued[domain]
	r.queued[domain] = true
	if err := r.saveQueuedLocked(); err != nil {
		r.queued[domain] = was
		return err
	}
	return nil
}

// dequeueLocked forgets domain's queued rekey. r.queueMu must be held.
func (r *Registry) dequeueLocked(domain string) {
	delete(r.queued, domain)
	if err := r.saveQueuedLocked(); err != nil {
		// Kept queued on disk: the next start runs one rekey too many,
		// never one too few.
		r.lg.Error("save queued rekeys", zap.String(logs.Domain, domain), zap.Error(err))
	}
}

// startQueued, at open before any rekey is resumed, deals with the rekeys
// queued when kmd stopped: one whose migration is still pending stays
// queued; one that already began is no longer queued; one whose migration
// ended before it could start starts now.
func (r *Registry) startQueued() {
	r.queueMu.Lock()
	defer r.queueMu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(r.queued)) {
		d, ok := r.byName[name]
		if !ok {
			r.dequeueLocked(name)
			continue
		}
		if d.engine == nil || d.openErr != nil {
			continue // not open: kept for the next start
		}
		st := d.engine.Status()
		switch {
		case st.Pending() && st.Op == rekey.OpMigrate:
			continue // runs when the migration ends
		case st.Pending():
			r.dequeueLocked(name) // it began
		default:
			if err := d.engine.Start(r.currentLocation(d)); err != nil {
				r.lg.Error("start queued rekey", zap.String(logs.Domain, name), zap.Error(err))
				continue
			}
			r.lg.Info("queued rekey started", zap.String(logs.Domain, name))
			r.dequeueLocked(name)
		}
	}
}
