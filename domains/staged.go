package domains

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// Errors of keys list and delete.
var (
	// ErrKeyNotFound: no MK of the domain has the fingerprint asked for.
	ErrKeyNotFound = errors.New("no such master key")
	// ErrKeyNotRetired: the MK asked to be deleted is not RETIRED.
	ErrKeyNotRetired = errors.New("master key not retired")
	// ErrBadFingerprint: a fingerprint that is not FingerprintLen hex digits.
	ErrBadFingerprint = errors.New("invalid fingerprint")
)

// The sed scope shows an idle domain's status as where its MK lives (as
// the API's sed status does).
const (
	statusLocal = "LOCAL"
	statusKMIP  = "KMIP"
)

// shownStatus is d's status as the operator sees it in its scope's table.
func (r *Registry) shownStatus(ctx context.Context, d *Domain) string {
	s := r.domainStatus(ctx, d)
	if d.Scope == logs.ScopeSED && s.Status == StatusActive {
		if s.Location == provider.LocationLocal {
			return statusLocal
		}
		return statusKMIP
	}
	return s.Status
}

// kmctlCmd is kmctl's command sub for d: "kmctl cluster sub --domain S3",
// or "kmctl sed sub".
func kmctlCmd(d *Domain, sub string) string {
	if d.Scope == logs.ScopeSED {
		return "kmctl sed " + sub
	}
	return "kmctl cluster " + sub + " --domain " + d.Name
}

// stagedError says that d is STAGED and what to do about it.
func (r *Registry) stagedError(d *Domain, until time.Time) error {
	return &rekey.StagedError{Domain: d.Name, Until: until,
		Hint: fmt.Sprintf("run '%s' or '%s' first", kmctlCmd(d, "rekey continue"), kmctlCmd(d, "rekey cancel"))}
}

// withHint gives an engine's StagedError the commands that resolve it.
func (r *Registry) withHint(d *Domain, err error) error {
	var se *rekey.StagedError
	if errors.As(err, &se) {
		return r.stagedError(d, se.Until)
	}
	return err
}

// rekeyCheck says whether a rekey of d (staged when stage is set) can start
// now: an error if it is refused, queue if it is to wait for d's migration.
func (r *Registry) rekeyCheck(d *Domain, st rekey.Status, stage bool) (queue bool, err error) {
	switch {
	case st.Staged():
		return false, r.stagedError(d, st.StagedUntil)
	case st.Pending() && st.Op == rekey.OpMigrate && !st.Failed():
		if stage {
			return false, fmt.Errorf("%w for %s: it is MIGRATING, and a staged rekey cannot wait behind a migration; ask for it once the migration is done",
				rekey.ErrOtherPending, d.Name)
		}
		return true, nil
	case st.Running:
		return false, fmt.Errorf("%w for %s", rekey.ErrInProgress, d.Name)
	case st.Pending() && st.Target != r.currentLocation(d):
		return false, fmt.Errorf("%w for %s: its %s to %s failed (%s); retry it first (migrate --to-server %s --retry)",
			rekey.ErrOtherPending, d.Name, st.Op, st.Target, st.Error, st.Target)
	}
	return false, nil
}

// ContinueStaged continues the STAGED rekeys of the named domains of scope
// (every STAGED one when none is named): each destroys its retired MK now.
// If a named domain is not STAGED it continues none.
func (r *Registry) ContinueStaged(ctx context.Context, scope string, names []string) ([]string, error) {
	return r.stagedAction(ctx, scope, names, "continue", func(d *Domain) error {
		return d.engine.Continue(rekey.ContinuedByOperator)
	})
}

// CancelStaged cancels the STAGED rekeys of the named domains of scope
// (every STAGED one when none is named): each goes back to its retired MK
// and destroys the rekey's new one. If a named domain is not STAGED it
// cancels none.
func (r *Registry) CancelStaged(ctx context.Context, scope string, names []string) ([]string, error) {
	return r.stagedAction(ctx, scope, names, "cancel", func(d *Domain) error { return d.engine.Cancel() })
}

// namedOrOpen resolves names to domains of scope as scopeDomains does, or,
// when none are named, to every domain of scope that is open.
func (r *Registry) namedOrOpen(scope string, names []string) (ds []*Domain, all []string, err error) {
	if all, err = ScopeDomains(scope); err != nil {
		return nil, nil, err
	}
	if len(names) > 0 {
		ds, err = r.scopeDomains(scope, names)
		return ds, all, err
	}
	for _, n := range all {
		if d := r.byName[n]; d.openErr == nil {
			ds = append(ds, d)
		}
	}
	return ds, all, nil
}

func (r *Registry) stagedAction(ctx context.Context, scope string, names []string, verb string, act func(*Domain) error) ([]string, error) {
	ds, all, err := r.namedOrOpen(scope, names)
	if err != nil {
		return nil, err
	}
	var todo []*Domain
	for _, d := range ds {
		st := d.engine.Status()
		switch {
		case st.Staged() && st.Running:
			return nil, fmt.Errorf("%w for %s", rekey.ErrInProgress, d.Name)
		case st.Staged():
			todo = append(todo, d)
		case len(names) > 0 || len(all) == 1:
			return nil, r.notStaged(ctx, d, verb)
		}
	}
	if len(todo) == 0 {
		return nil, &notStagedError{fmt.Sprintf("no %s domain is STAGED; nothing to %s", scope, verb)}
	}
	var done []string
	for _, d := range todo {
		if err := act(d); err != nil {
			if errors.Is(err, rekey.ErrNotStaged) {
				err = r.notStaged(ctx, d, verb)
			}
			return done, err
		}
		done = append(done, d.Name)
	}
	return done, nil
}

func (r *Registry) notStaged(ctx context.Context, d *Domain, verb string) error {
	return &notStagedError{fmt.Sprintf("%s is not STAGED (it is %s); nothing to %s", d.Name, r.shownStatus(ctx, d), verb)}
}

// notStagedError is rekey.ErrNotStaged with the operator's words.
type notStagedError struct{ msg string }

func (e *notStagedError) Error() string { return e.msg }
func (e *notStagedError) Unwrap() error { return rekey.ErrNotStaged }

// sentinelError is a message that stands alone, matching a sentinel.
type sentinelError struct {
	msg string
	is  error
}

func (e *sentinelError) Error() string { return e.msg }
func (e *sentinelError) Unwrap() error { return e.is }

// errorf formats a message that errors.Is matches to sentinel, without
// putting the sentinel's own words in front of it.
func errorf(sentinel error, format string, args ...any) error {
	return &sentinelError{msg: fmt.Sprintf(format, args...), is: sentinel}
}

// Plan actions: what a rekey asked for now would do to a domain.
const (
	PlanRekey  = "rekey"  // a new rekey
	PlanRetry  = "retry"  // the domain's failed rekey is retried
	PlanQueue  = "queue"  // it waits for the domain's migration to end
	PlanRefuse = "refuse" // refused: see Reason
)

// PlanRow is what a rekey would do to one domain.
type PlanRow struct {
	Domain  string
	Scope   string
	Node    int
	Entries int64
	Action  string // PlanRekey, PlanRetry, PlanQueue or PlanRefuse
	Reason  string // why, for every action but PlanRekey
	Current provider.KeyInfo
	// CreateAt is where the new MK would be created ("" if none would be),
	// CreateID its ID when already chosen (a retry).
	CreateAt, CreateID string
	// Destroy is the MK that would be destroyed once no entry needs it
	// (after the stage period, for a staged rekey); nil if none would be.
	Destroy *provider.KeyInfo
}

// Plan is what StartRekeyWith would do, done without changing anything.
type Plan struct {
	Scope string
	Stage rekey.Rotation
	Rows  []PlanRow
	// Refused is why the start would be refused as a whole ("" if it
	// would start).
	Refused string
}

// PlanRekey says what StartRekeyWith(scope, names, o) would do now, from
// the same checks, reading only: no state, schedule, key or event changes.
func (r *Registry) PlanRekey(ctx context.Context, scope string, names []string, o rekey.StartOptions) (Plan, error) {
	all, err := ScopeDomains(scope)
	if err != nil {
		return Plan{}, err
	}
	if len(names) == 0 {
		names = all
	}
	p := Plan{Scope: scope, Stage: o.Stage}
	var seen []string
	for _, n := range names {
		d, err := r.Domain(n)
		if err != nil {
			return Plan{}, err
		}
		if d.Scope != scope {
			return Plan{}, fmt.Errorf("%w %q in scope %s", ErrUnknownDomain, n, scope)
		}
		if slices.Contains(seen, n) {
			continue
		}
		seen = append(seen, n)
		row := r.planRow(ctx, d, o)
		if row.Action == PlanRefuse && p.Refused == "" {
			p.Refused = row.Reason
		}
		p.Rows = append(p.Rows, row)
	}
	return p, nil
}

func (r *Registry) planRow(ctx context.Context, d *Domain, o rekey.StartOptions) PlanRow {
	row := PlanRow{Domain: d.Name, Scope: d.Scope}
	if d.Scope == logs.ScopeSED {
		row.Node = r.cfg.NodeID
	}
	if d.openErr != nil {
		row.Action, row.Reason = PlanRefuse, fmt.Errorf("%w: %v", ErrUnavailable, d.openErr).Error()
		return row
	}
	if n, err := d.store.Count(ctx); err == nil {
		row.Entries = n
	}
	infos, err := d.store.Keys(ctx)
	if err != nil {
		row.Action, row.Reason = PlanRefuse, err.Error()
		return row
	}
	for _, k := range infos {
		if k.State == provider.KeyCurrent {
			row.Current = k
		}
	}
	st := d.engine.Status()
	queue, err := r.rekeyCheck(d, st, !o.Stage.IsNever())
	switch {
	case err != nil:
		row.Action, row.Reason = PlanRefuse, err.Error()
		return row
	case row.Current.ID == "":
		row.Action, row.Reason = PlanRefuse, fmt.Errorf("rekey %s: %w", d.Name, provider.ErrKeyUnavailable).Error()
		return row
	case queue:
		row.Action = PlanQueue
		row.Reason = fmt.Sprintf("waits for its migration to %s to end, then rekeys at %s", st.Target, st.Target)
		row.CreateAt = st.Target
		return row
	case st.Pending():
		row.Action = PlanRetry
		row.Reason = fmt.Sprintf("retries its %s that failed in %s: %s", st.Op, st.Phase, st.Error)
		if st.Ending() {
			what := rekey.RunContinue
			if st.Op == rekey.OpCancel {
				what = rekey.OpCancel
			}
			row.Reason = fmt.Sprintf("retries the %s of its staged rekey that failed in %s: %s", what, st.Phase, st.Error)
		}
		if st.Phase == rekey.PhasePrepare {
			row.CreateAt, row.CreateID = st.Target, st.To
		}
		if k, ok := provider.KeyByID(infos, st.From); ok {
			row.Destroy = &k
		}
		return row
	}
	row.Action = PlanRekey
	row.CreateAt = row.Current.Location
	cur := row.Current
	row.Destroy = &cur
	return row
}

// KeyRow is one MK as keys list shows it.
type KeyRow struct {
	provider.KeyInfo
	Scope   string
	Node    int
	Entries int64 // entries sealed under it
	// DestroyAt, for the retired MK of a STAGED rekey, is when it is
	// destroyed unless the rekey is continued or cancelled first.
	DestroyAt time.Time
}

// Keys lists the MKs of the named domains of scope (all when none), in
// display order, each domain's oldest first. A domain that could not be
// opened is left out when none is named.
func (r *Registry) Keys(ctx context.Context, scope string, names []string) ([]KeyRow, error) {
	ds, _, err := r.namedOrOpen(scope, names)
	if err != nil {
		return nil, err
	}
	rows := []KeyRow{}
	for _, d := range ds {
		rs, err := r.domainKeys(ctx, d)
		if err != nil {
			return nil, err
		}
		rows = append(rows, rs...)
	}
	return rows, nil
}

func (r *Registry) domainKeys(ctx context.Context, d *Domain) ([]KeyRow, error) {
	infos, err := d.store.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", d.Name, err)
	}
	usage, err := d.store.KeyUsage(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", d.Name, err)
	}
	st := d.engine.Status()
	var rows []KeyRow
	for _, k := range infos {
		row := KeyRow{KeyInfo: k, Scope: d.Scope, Entries: usage[k.ID]}
		row.Created = k.Created.UTC().Truncate(time.Second)
		if d.Scope == logs.ScopeSED {
			row.Node = r.cfg.NodeID
		}
		if st.Staged() && k.ID == st.From {
			row.DestroyAt = st.StagedUntil.UTC().Truncate(time.Second)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// FingerprintLen is the length of an MK fingerprint in hex digits.
const FingerprintLen = 32

// ValidFingerprint reports whether fp is an MK fingerprint: FingerprintLen
// hex digits, either case.
func ValidFingerprint(fp string) bool {
	if len(fp) != FingerprintLen {
		return false
	}
	for _, c := range fp {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// DeleteKey deletes the RETIRED MK of domain (of scope) whose fingerprint
// is fp, and returns it. When it is a STAGED rekey's retired MK, that is a
// continue of the rekey, waited for. It is refused for any other state, and
// while any entry references the MK.
func (r *Registry) DeleteKey(ctx context.Context, scope, domain, fp string) (KeyRow, error) {
	ds, err := r.scopeDomains(scope, []string{domain})
	if err != nil {
		return KeyRow{}, err
	}
	d := ds[0]
	if !ValidFingerprint(fp) {
		return KeyRow{}, fmt.Errorf("%w %q: want the %d hex digits that '%s' shows",
			ErrBadFingerprint, fp, FingerprintLen, listCmd(d))
	}
	rows, err := r.domainKeys(ctx, d)
	if err != nil {
		return KeyRow{}, err
	}
	i := slices.IndexFunc(rows, func(k KeyRow) bool { return strings.EqualFold(k.Fingerprint, fp) })
	if i < 0 {
		return KeyRow{}, errorf(ErrKeyNotFound, "no master key of %s has fingerprint %s; list them with '%s'", d.Name, strings.ToLower(fp), listCmd(d))
	}
	k := rows[i]
	switch k.State {
	case provider.KeyRetired:
	case provider.KeyCurrent:
		return k, errorf(ErrKeyNotRetired, "key %s of %s is CURRENT: new entries are sealed under it; only a RETIRED key can be deleted", k.ID, d.Name)
	case provider.KeyRetiring:
		return k, errorf(ErrKeyNotRetired, "key %s of %s is RETIRING: a rekey is moving its entries off it; only a RETIRED key can be deleted", k.ID, d.Name)
	default:
		return k, errorf(ErrKeyNotRetired, "key %s of %s is %s: a rekey is about to make it current; only a RETIRED key can be deleted", k.ID, d.Name, k.State)
	}
	// The kept count first (cheap); the full count is made by the delete
	// itself, or by the continue's VERIFY.
	if k.Entries > 0 {
		return k, errorf(rekey.ErrKeyInUse, "key %s of %s still seals %d entries; it cannot be deleted", k.ID, d.Name, k.Entries)
	}
	st := d.engine.Status()
	switch {
	case st.Staged() && st.From == k.ID:
		if err := d.engine.Continue(rekey.ContinuedByOperator); err != nil {
			if errors.Is(err, rekey.ErrNotStaged) {
				err = r.notStaged(ctx, d, "continue")
			}
			return k, err
		}
		r.lg.Info("retired key deletion continues the staged rekey", zap.String(logs.Domain, d.Name), zap.String(logs.KeyID, k.ID))
		d.engine.Wait()
		if _, err := r.findLiveKey(ctx, d, k.ID); errors.Is(err, ErrKeyNotFound) {
			return k, nil
		}
		st := d.engine.Status()
		if st.Error == "" { // kmd is stopping
			return k, fmt.Errorf("delete key %s of %s: the continue of its staged rekey was interrupted in %s; it resumes at the next start",
				k.ID, d.Name, st.Phase)
		}
		return k, fmt.Errorf("delete key %s of %s: the continue of its staged rekey failed in %s: %s; it is retried at %s",
			k.ID, d.Name, st.Phase, st.Error, st.NextRetry.UTC().Format(time.RFC3339))
	case st.Pending():
		return k, fmt.Errorf("%w for %s: key %s belongs to its pending %s (%s in %s), which destroys it; let that end first",
			rekey.ErrOtherPending, d.Name, k.ID, st.Op, runState(st), st.Phase)
	}
	if err := d.engine.DeleteRetired(ctx, k.ID); err != nil {
		return k, err
	}
	return k, nil
}

func runState(st rekey.Status) string {
	if st.Error == "" {
		return "running"
	}
	return "failed: " + st.Error
}

func listCmd(d *Domain) string { return kmctlCmd(d, "keys list") }

func (r *Registry) findLiveKey(ctx context.Context, d *Domain, id string) (provider.KeyInfo, error) {
	infos, err := d.store.Keys(ctx)
	if err != nil {
		return provider.KeyInfo{}, err
	}
	if k, ok := provider.KeyByID(infos, id); ok {
		return k, nil
	}
	return provider.KeyInfo{}, ErrKeyNotFound
}
