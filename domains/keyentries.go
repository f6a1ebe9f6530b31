package domains

import (
	"context"
	"time"
)

// KeyEntries returns, for every MK of domain that its store records, how
// many entries are sealed under it (from the kept counts, not a scan). An
// MK no entry references counts 0. It fails with ErrUnavailable for a
// domain that could not be opened.
func (r *Registry) KeyEntries(ctx context.Context, domain string) (map[string]int64, error) {
	d, err := r.Domain(domain)
	if err != nil {
		return nil, err
	}
	if _, err := r.Vault(domain); err != nil {
		return nil, err
	}
	infos, err := d.store.Keys(ctx)
	if err != nil {
		return nil, err
	}
	usage, err := d.store.KeyUsage(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(infos))
	for _, k := range infos {
		out[k.ID] = usage[k.ID]
	}
	for id, n := range usage { // an MK only counted: never dropped silently
		if _, ok := out[id]; !ok {
			out[id] = n
		}
	}
	return out, nil
}

// Now is the registry's clock: the time its schedules, retries and key
// creation dates are measured on.
func (r *Registry) Now() time.Time { return r.cfg.Clock.Now() }
