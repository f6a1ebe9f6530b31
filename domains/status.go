package domains

import (
	"context"
	"time"

	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// Progress of a running rekey.
type Progress struct {
	Done    int64
	Total   int64
	Started time.Time
}

// Status is one domain's status; the API shapes it for cluster and sed.
type Status struct {
	Domain      string
	Scope       string
	Node        int
	Status      string
	KeyID       string
	KeyCreated  time.Time
	Location    string
	RemoteKeyID string
	Error       string
	Entries     int64
	Rekey       *Progress
	NextRetry   *time.Time
	// Failures counts the runs of the pending rekey that failed, in a row;
	// 0 when none is pending or it has not failed yet.
	Failures int
	// StagedUntil is when a STAGED domain continues by itself; nil unless
	// STAGED.
	StagedUntil *time.Time
}

// keyStatus fills the current MK's columns.
func (r *Registry) keyStatus(ctx context.Context, d *Domain) Status {
	s := Status{Domain: d.Name, Scope: d.Scope}
	if d.store == nil {
		return s
	}
	infos, err := d.store.Keys(ctx)
	if err != nil {
		return s
	}
	for _, k := range infos {
		if k.State == provider.KeyCurrent {
			s.KeyID, s.KeyCreated, s.Location, s.RemoteKeyID = k.ID, k.Created.Truncate(time.Second), k.Location, k.RemoteID
		}
	}
	return s
}

// Status returns the status of every domain of scope, in display order.
func (r *Registry) Status(ctx context.Context, scope string) ([]Status, error) {
	names, err := ScopeDomains(scope)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(names))
	for _, n := range names {
		out = append(out, r.domainStatus(ctx, r.byName[n]))
	}
	return out, nil
}

// DomainStatus returns one domain's status.
func (r *Registry) DomainStatus(ctx context.Context, name string) (Status, error) {
	d, err := r.Domain(name)
	if err != nil {
		return Status{}, err
	}
	return r.domainStatus(ctx, d), nil
}

func (r *Registry) domainStatus(ctx context.Context, d *Domain) Status {
	s := r.keyStatus(ctx, d)
	if d.Scope == "sed" {
		s.Node = r.cfg.NodeID
	}
	if d.openErr != nil {
		s.Status, s.Error = StatusFailed, d.openErr.Error()
		return s
	}
	if n, err := d.store.Count(ctx); err == nil {
		s.Entries = n
	}
	es := d.engine.Status()
	s.Failures = es.Failures
	switch {
	case es.Failed():
		s.Status, s.Error = StatusFailed, es.Error
		t := es.NextRetry
		s.NextRetry = &t
	case es.Pending() && es.Op == rekey.OpMigrate && !es.Staged():
		s.Status = StatusMigrating
	case es.Pending() && !es.Staged(), es.Running: // running: its end is being recorded
		s.Status = StatusInProgress
	case d.Vault.Unavailable() != nil:
		s.Status, s.Error = StatusFailed, d.Vault.Unavailable().Error()
		t := r.cfg.Clock.Now().UTC().Add(r.cfg.TickMax).Truncate(time.Second)
		s.NextRetry = &t
	case es.Staged():
		s.Status = StatusStaged
		t := es.StagedUntil.UTC().Truncate(time.Second)
		s.StagedUntil = &t
	default:
		s.Status = StatusActive
	}
	if es.Pending() && !es.Failed() && !es.Staged() && es.Op != rekey.OpInit {
		s.Rekey = &Progress{Done: es.Done, Total: es.Total, Started: es.Started}
	}
	return s
}
