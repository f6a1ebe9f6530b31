// Package domains is the registry of kmd's domains: the 17 cluster domains
// and the node's SED store. It opens each store with its key source, runs
// their rekeys independently, keeps the per-scope rotation schedule and
// aggregates status.
package domains

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/internal/fsx"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// ClusterDomains are the cluster scope's domains, in display order.
var ClusterDomains = []string{
	"CELOG", "CERTSTORE", "CLOUDPOOLS", "EMAIL", "FTP", "IPMI_MGMT", "JWT", "LHOTSE",
	"NDMP", "NETWORK", "PSTORE", "RICE", "S3", "SIQ", "SNMP", "SRS", "SSO",
}

// SEDDomain is the node's self-encrypting-drive key store.
const SEDDomain = "SED"

// Errors.
var (
	ErrUnknownDomain = errors.New("unknown domain")
	ErrUnknownScope  = errors.New("unknown scope")
	// ErrUnavailable: the domain could not be opened; its error says why.
	ErrUnavailable = errors.New("domain unavailable")
)

// Domain statuses (SPEC: cluster status).
const (
	StatusActive     = "ACTIVE"
	StatusInProgress = "IN_PROGRESS"
	StatusFailed     = "FAILED"
	StatusMigrating  = "MIGRATING"
	// StatusStaged: a staged rekey is done but keeps the old MK, RETIRED,
	// until it is continued or cancelled, or its stage period ends.
	StatusStaged = "STAGED"
)

// Config configures a Registry.
type Config struct {
	DataDir       string
	NodeID        int
	RetryInterval time.Duration // default 15m
	BatchSize     int
	Events        rekey.Emitter
	Log           *zap.Logger
	Clock         rekey.Clock
	// TickMax bounds how long the scheduler sleeps (default 1m).
	TickMax time.Duration
	// Sources holds key sources other than the local one, by location.
	Sources map[string]provider.KeySource
	SQLite  provider.SQLiteOptions
	// OnRekeyEnd, if set, is told of every rekey or migration run that
	// completes or fails (rekey.Config.OnEnd); metrics count them.
	OnRekeyEnd func(rekey.End)
	// Trace, if set, is called at each step of every rekey (tests).
	Trace func(domain, step string)
	// Lock, if set, is the data dir's lock already taken with LockDataDir;
	// the registry releases it on Close. If nil, Open takes it.
	Lock *fsx.Lock
}

// Domain is one opened domain.
type Domain struct {
	Name  string
	Scope string
	Vault *provider.Vault

	engine *rekey.Engine
	store  *provider.SQLiteStore
	// openErr says why the domain could not be opened; nil when it was.
	openErr error
}

// Registry holds every domain.
type Registry struct {
	cfg    Config
	lg     *zap.Logger
	local  *provider.LocalKeys
	byName map[string]*Domain
	order  []*Domain
	sched  *rekey.Scheduler
	lock   *fsx.Lock // on <data-dir>/kmd.lock: one registry per data dir

	srcMu       sync.Mutex // guards cfg.Sources
	kmipMu      sync.Mutex // guards kmipServers; held across a server's create or delete
	kmipServers map[string]KMIPServer
	queueMu     sync.Mutex
	queued      map[string]bool // rekeys asked for while the domain migrates

	tickMu    sync.Mutex // one Tick at a time
	mu        sync.Mutex // guards schedules
	schedules map[string]*rekey.ScopeSchedule
}

// Scopes lists the scopes.
var Scopes = []string{logs.ScopeCluster, logs.ScopeSED}

// ScopeDomains returns the domains of a scope.
func ScopeDomains(scope string) ([]string, error) {
	switch scope {
	case logs.ScopeCluster:
		return ClusterDomains, nil
	case logs.ScopeSED:
		return []string{SEDDomain}, nil
	}
	return nil, fmt.Errorf("%w %q: want cluster or sed", ErrUnknownScope, scope)
}

func scopeOf(domain string) string {
	if domain == SEDDomain {
		return logs.ScopeSED
	}
	return logs.ScopeCluster
}

// Open opens every domain under cfg.DataDir, creating missing stores with a
// fresh MK, resumes interrupted rekeys and starts the scheduler. A domain
// that cannot be opened is reported FAILED; the others work.
func Open(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Clock == nil {
		cfg.Clock = rekey.SystemClock
	}
	if cfg.TickMax <= 0 {
		cfg.TickMax = time.Minute
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = rekey.DefaultRetryInterval
	}
	if cfg.NodeID <= 0 {
		cfg.NodeID = 1
	}
	if err := fsx.MkdirPrivate(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	lock := cfg.Lock
	if lock == nil {
		l, err := LockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		lock = l
	}
	r, err := open(ctx, cfg, lock)
	if err != nil {
		if cfg.Lock == nil {
			lock.Unlock()
		}
		return nil, err
	}
	return r, nil
}

// LockDataDir takes the data dir's lock, <dir>/kmd.lock, creating dir if
// needed. While it is held no other kmd opens the dir: the error of a second
// one wraps fsx.ErrLocked and names the holder's pid.
func LockDataDir(dir string) (*fsx.Lock, error) {
	if err := fsx.MkdirPrivate(dir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	lock, err := fsx.TryLock(filepath.Join(dir, "kmd.lock"))
	if err != nil {
		return nil, fmt.Errorf("data dir %s is in use: %w", dir, err)
	}
	return lock, nil
}

func open(ctx context.Context, cfg Config, lock *fsx.Lock) (*Registry, error) {
	if err := fsx.MkdirPrivate(filepath.Join(cfg.DataDir, "stores")); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	local, err := provider.NewLocalKeys(filepath.Join(cfg.DataDir, "keys"))
	if err != nil {
		return nil, err
	}
	// We hold the data dir's lock: any temporary file is a crash's leftover.
	for _, clean := range []func() (int, error){
		local.RemoveTemps,
		func() (int, error) { return fsx.RemoveTemps(cfg.DataDir) },
		func() (int, error) { return fsx.RemoveTemps(filepath.Join(cfg.DataDir, "kmip")) },
	} {
		if n, err := clean(); err != nil {
			return nil, err
		} else if n > 0 {
			cfg.Log.Warn("removed files left half-written by a crash", zap.Int("files", n))
		}
	}
	r := &Registry{cfg: cfg, lg: cfg.Log, local: local, byName: map[string]*Domain{}, lock: lock, queued: map[string]bool{}}
	if err := r.loadSchedules(); err != nil {
		return nil, err
	}
	if err := r.loadQueued(); err != nil {
		return nil, err
	}
	if err := r.loadKMIPServers(); err != nil {
		return nil, err
	}
	for _, name := range append(slices.Clone(ClusterDomains), SEDDomain) {
		d := r.open(ctx, name)
		r.byName[name] = d
		r.order = append(r.order, d)
	}
	r.startQueued()
	for _, d := range r.order {
		if d.engine != nil && d.openErr == nil {
			d.engine.Resume()
		}
	}
	r.sched = rekey.NewScheduler(cfg.Log, cfg.TickMax, func() time.Time { return r.Tick(cfg.Clock.Now()) })
	r.sched.Start()
	return r, nil
}

// Sources resolves a location to its key source.
func (r *Registry) Sources(location string) (provider.KeySource, error) {
	if location == provider.LocationLocal {
		return r.local, nil
	}
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if s, ok := r.cfg.Sources[location]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w %q: its master keys cannot be reached; check `kmctl kmip server list`", ErrUnknownServer, location)
}

// StorePath returns the database file of a domain.
func (r *Registry) StorePath(domain string) string {
	return filepath.Join(r.cfg.DataDir, "stores", domain+".db")
}

func (r *Registry) open(ctx context.Context, name string) *Domain {
	d := &Domain{Name: name, Scope: scopeOf(name)}
	lg := r.lg.With(zap.String(logs.Domain, name))
	path := r.StorePath(name)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		// A domain with key files but no store lost its store: creating an
		// empty one would hide that every entry is gone.
		if ids, _ := r.local.List(name); len(ids) > 0 {
			d.openErr = fmt.Errorf("domain %s: store %s is missing but %d key file(s) exist; restore the store from backup", name, path, len(ids))
			lg.Error("open domain", zap.Error(d.openErr))
			return d
		}
		// A domain's first MK is always made locally, so its key dir
		// outlives its key files: it tells a domain whose MK moved to a
		// KMIP server from one never created.
		if fi, err := os.Stat(filepath.Join(r.cfg.DataDir, "keys", name)); err == nil && fi.IsDir() {
			d.openErr = fmt.Errorf("domain %s: store %s is missing but the domain exists (its key dir %s is there; its MK may be on a KMIP server); restore the store from backup",
				name, path, filepath.Join(r.cfg.DataDir, "keys", name))
			lg.Error("open domain", zap.Error(d.openErr))
			return d
		}
	}
	st, err := provider.OpenSQLite(path, r.cfg.SQLite)
	if err != nil {
		d.openErr = fmt.Errorf("domain %s: %w", name, err)
		lg.Error("open domain", zap.Error(d.openErr))
		return d
	}
	d.store = st
	d.Vault = provider.NewVault(name, st)
	loadErr := d.Vault.LoadKeys(ctx, r.Sources)
	if loadErr != nil {
		lg.Error("load keys", zap.Error(loadErr))
	}
	var trace func(string)
	if r.cfg.Trace != nil {
		trace = func(step string) { r.cfg.Trace(name, step) }
	}
	d.engine, err = rekey.New(ctx, rekey.Config{
		Domain: name, Scope: d.Scope, Node: r.cfg.NodeID, Vault: d.Vault, Sources: r.Sources,
		Events: r.cfg.Events, Log: r.lg, Clock: r.cfg.Clock, RetryInterval: r.cfg.RetryInterval,
		BatchSize: r.cfg.BatchSize, OnFinish: r.finished, OnEnd: r.cfg.OnRekeyEnd, Trace: trace,
	})
	if err != nil {
		d.openErr = err
		return d
	}
	if loadErr == nil && d.Vault.Current() == "" {
		if err := d.engine.Init(ctx, provider.LocationLocal); err != nil {
			d.openErr = fmt.Errorf("domain %s: create first key: %w", name, err)
			lg.Error("open domain", zap.Error(d.openErr))
		} else {
			lg.Info("domain created", zap.String(logs.KeyID, d.Vault.Current()))
		}
	}
	return d
}

// Domain returns a domain by name.
func (r *Registry) Domain(name string) (*Domain, error) {
	d, ok := r.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownDomain, name)
	}
	return d, nil
}

// Vault returns the vault of a domain that is open.
func (r *Registry) Vault(name string) (*provider.Vault, error) {
	d, err := r.Domain(name)
	if err != nil {
		return nil, err
	}
	if d.openErr != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, d.openErr)
	}
	return d.Vault, nil
}

// Close stops the scheduler and every rekey (a batch in flight is rolled
// back; the rekey resumes at the next start) and closes the stores.
func (r *Registry) Close() error {
	if r.sched != nil {
		r.sched.Stop()
	}
	var wg sync.WaitGroup
	for _, d := range r.order {
		if d.engine != nil {
			wg.Go(d.engine.Close)
		}
	}
	wg.Wait()
	var errs []error
	for _, d := range r.order {
		if d.store != nil {
			errs = append(errs, d.store.Close())
		}
	}
	r.srcMu.Lock()
	for _, src := range r.cfg.Sources {
		if c, ok := src.(interface{ Close() error }); ok {
			c.Close()
		}
	}
	r.srcMu.Unlock()
	errs = append(errs, r.lock.Unlock())
	return errors.Join(errs...)
}
