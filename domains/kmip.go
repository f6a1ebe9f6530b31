package domains

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/internal/fsx"
	"github.com/kmd-project/kmd/kmip"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// Errors of the KMIP server registry.
var (
	ErrUnknownServer = errors.New("unknown kmip server")
	// ErrInUse: the server still holds MKs.
	ErrInUse = errors.New("kmip server in use")
	// ErrExists: a server of that name exists.
	ErrExists = errors.New("kmip server exists")
	// ErrNothingToDo: every domain asked for is already where it should be.
	ErrNothingToDo = errors.New("nothing to migrate")
	// ErrVerify: the server's connection or probe failed on create.
	ErrVerify = errors.New("kmip server verification failed")
)

// KMIPServer is a configured KMIP server, as persisted in
// <data-dir>/kmip/servers.json; its PEM files are in <data-dir>/kmip/<name>/.
type KMIPServer struct {
	Name              string        `json:"name"`
	Host              string        `json:"host"`
	Port              int           `json:"port"`
	MinTLSVersion     string        `json:"min_tls_version"` // "1.2" or "1.3"
	ConnectionTimeout time.Duration `json:"connection_timeout"`
	Created           time.Time     `json:"created"`
}

// KMIPFiles are a new server's PEM files.
type KMIPFiles struct {
	CACert, ClientCert, ClientKey []byte
	// CACertFile, ClientCertFile and ClientKeyFile are where the operator's
	// copies came from, if known: an error about a file names that one,
	// not kmd's copy (which is removed when the server is refused).
	CACertFile, ClientCertFile, ClientKeyFile string
}

// renamedError is err with another message.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

func (r *Registry) kmipDir() string { return filepath.Join(r.cfg.DataDir, "kmip") }

func (r *Registry) serversPath() string { return filepath.Join(r.kmipDir(), "servers.json") }

func (r *Registry) sourceConfig(s KMIPServer) kmip.ServerConfig {
	dir := filepath.Join(r.kmipDir(), s.Name)
	tv := uint16(tls.VersionTLS12)
	if s.MinTLSVersion == "1.3" {
		tv = tls.VersionTLS13
	}
	return kmip.ServerConfig{
		Name: s.Name, Addrs: []string{net.JoinHostPort(s.Host, strconv.Itoa(s.Port))},
		CACert: filepath.Join(dir, "ca.pem"), ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client.key"),
		MinTLSVersion: tv, ConnectTimeout: s.ConnectionTimeout, NodeID: r.cfg.NodeID,
	}
}

// loadKMIPServers opens a key source for every configured server. A server
// whose files no longer pass their checks is logged; the MKs on it stay
// unloaded and their domains FAILED with the reason.
func (r *Registry) loadKMIPServers() error {
	r.kmipServers = map[string]KMIPServer{}
	if r.cfg.Sources == nil {
		r.cfg.Sources = map[string]provider.KeySource{}
	}
	var list []KMIPServer
	if err := readJSON(r.serversPath(), "kmip servers", &list); err != nil {
		return err
	}
	for _, s := range list {
		r.kmipServers[s.Name] = s
		src, err := kmip.New(r.sourceConfig(s))
		if err != nil {
			r.lg.Error("kmip server unusable", zap.String(logs.Location, s.Name), zap.Error(err))
			continue
		}
		r.cfg.Sources[s.Name] = src
	}
	return nil
}

func (r *Registry) saveKMIPServersLocked() error {
	list := make([]KMIPServer, 0, len(r.kmipServers))
	for _, s := range r.kmipServers {
		list = append(list, s)
	}
	slices.SortFunc(list, func(a, b KMIPServer) int { return strings.Compare(a.Name, b.Name) })
	if err := fsx.MkdirPrivate(r.kmipDir()); err != nil {
		return err
	}
	return writeJSON(r.serversPath(), list)
}

// AddKMIPServer checks a new server's files, keeps copies of them (mode
// 0600), verifies the connection with a create/get/destroy probe and only
// then records the server. On any failure nothing is kept.
func (r *Registry) AddKMIPServer(ctx context.Context, s KMIPServer, files KMIPFiles) (kmip.VerifyReport, error) {
	r.kmipMu.Lock()
	defer r.kmipMu.Unlock()
	if s.Name == provider.LocationLocal {
		return kmip.VerifyReport{}, fmt.Errorf("%w: the name %q is reserved for local keys; choose another", kmip.ErrConfig, s.Name)
	}
	if _, ok := r.kmipServers[s.Name]; ok {
		return kmip.VerifyReport{}, fmt.Errorf("%w: %s; delete it first or choose another name", ErrExists, s.Name)
	}
	if s.Port == 0 {
		s.Port = kmip.DefaultPort
	}
	if s.MinTLSVersion == "" {
		s.MinTLSVersion = "1.2"
	}
	if s.ConnectionTimeout == 0 {
		s.ConnectionTimeout = kmip.DefaultConnectTimeout
	}
	s.Created = r.cfg.Clock.Now().UTC().Truncate(time.Second)
	cfg := r.sourceConfig(s)
	// Check the name before it becomes a directory.
	if err := kmip.ValidateServerName(s.Name); err != nil {
		return kmip.VerifyReport{}, err
	}
	dir := filepath.Dir(cfg.CACert)
	// A refused first server leaves no empty kmip/ behind either.
	_, statErr := os.Stat(r.kmipDir())
	freshKMIPDir := errors.Is(statErr, fs.ErrNotExist)
	if err := fsx.MkdirPrivate(dir); err != nil {
		return kmip.VerifyReport{}, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
			if freshKMIPDir {
				os.Remove(r.kmipDir())
			}
		}
	}()
	for path, data := range map[string][]byte{cfg.CACert: files.CACert, cfg.ClientCert: files.ClientCert, cfg.ClientKey: files.ClientKey} {
		if err := fsx.WriteFileAtomic(path, data, 0o600); err != nil {
			return kmip.VerifyReport{}, err
		}
	}
	src, err := kmip.New(cfg)
	if err != nil {
		msg := err.Error()
		for copied, given := range map[string]string{cfg.CACert: files.CACertFile, cfg.ClientCert: files.ClientCertFile, cfg.ClientKey: files.ClientKeyFile} {
			if given != "" {
				msg = strings.ReplaceAll(msg, copied, given)
			}
		}
		return kmip.VerifyReport{}, &renamedError{msg: msg, err: err}
	}
	rep, err := src.Verify(ctx)
	if err == nil && !rep.OK {
		err = fmt.Errorf("%w: %s: %s", ErrVerify, s.Name, rep.Error)
	}
	if err != nil {
		src.Close()
		return rep, err
	}
	r.kmipServers[s.Name] = s
	if err := r.saveKMIPServersLocked(); err != nil {
		delete(r.kmipServers, s.Name)
		src.Close()
		return rep, err
	}
	r.srcMu.Lock()
	r.cfg.Sources[s.Name] = src
	r.srcMu.Unlock()
	ok = true
	r.lg.Info("kmip server created", zap.String(logs.Location, s.Name), zap.String("addr", cfg.Addrs[0]))
	return rep, nil
}

// KMIPServerInfo is a server with what lives on it.
type KMIPServerInfo struct {
	KMIPServer
	ClientCertSubject string
	ClientCertExpires time.Time
	Keys              int      // MKs on the server, in any state
	Domains           []string // domains whose current MK is there
}

// KMIPServers lists the servers, by name.
func (r *Registry) KMIPServers(ctx context.Context) []KMIPServerInfo {
	r.kmipMu.Lock()
	names := make([]string, 0, len(r.kmipServers))
	for n := range r.kmipServers {
		names = append(names, n)
	}
	r.kmipMu.Unlock()
	slices.Sort(names)
	out := make([]KMIPServerInfo, 0, len(names))
	for _, n := range names {
		if info, err := r.KMIPServer(ctx, n); err == nil {
			out = append(out, info)
		}
	}
	return out
}

// KMIPServer views one server.
func (r *Registry) KMIPServer(ctx context.Context, name string) (KMIPServerInfo, error) {
	r.kmipMu.Lock()
	s, ok := r.kmipServers[name]
	r.kmipMu.Unlock()
	if !ok {
		return KMIPServerInfo{}, fmt.Errorf("%w %q", ErrUnknownServer, name)
	}
	info := KMIPServerInfo{KMIPServer: s}
	if b, err := os.ReadFile(r.sourceConfig(s).ClientCert); err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
				info.ClientCertSubject, info.ClientCertExpires = c.Subject.String(), c.NotAfter.UTC()
			}
		}
	}
	info.Keys, info.Domains = r.keysAt(ctx, name)
	return info, nil
}

// keysAt counts the MKs recorded at location, and the domains whose
// current MK is there. Pending rekeys that target it count as keys too.
func (r *Registry) keysAt(ctx context.Context, location string) (int, []string) {
	n := 0
	var ds []string
	for _, d := range r.order {
		if d.store == nil {
			continue
		}
		infos, err := d.store.Keys(ctx)
		if err != nil {
			n++ // cannot tell: count it, so that delete is refused
			continue
		}
		for _, k := range infos {
			if k.Location == location {
				n++
				if k.State == provider.KeyCurrent {
					ds = append(ds, d.Name)
				}
			}
		}
		if st := d.engine.Status(); st.Pending() && st.Target == location && !slices.ContainsFunc(infos, func(k provider.KeyInfo) bool { return k.ID == st.To }) {
			n++
		}
	}
	return n, ds
}

// DeleteKMIPServer forgets a server and its files; refused while any MK
// lives there or a rekey targets it.
func (r *Registry) DeleteKMIPServer(ctx context.Context, name string) error {
	r.kmipMu.Lock()
	defer r.kmipMu.Unlock()
	if _, ok := r.kmipServers[name]; !ok {
		return fmt.Errorf("%w %q", ErrUnknownServer, name)
	}
	if n, ds := r.keysAt(ctx, name); n > 0 {
		return fmt.Errorf("%w: %s holds %d master key(s) (current for %v); migrate them away first", ErrInUse, name, n, ds)
	}
	delete(r.kmipServers, name)
	if err := r.saveKMIPServersLocked(); err != nil {
		return err
	}
	r.srcMu.Lock()
	src := r.cfg.Sources[name]
	delete(r.cfg.Sources, name)
	r.srcMu.Unlock()
	if c, ok := src.(interface{ Close() error }); ok {
		c.Close()
	}
	os.RemoveAll(filepath.Join(r.kmipDir(), name))
	r.lg.Info("kmip server deleted", zap.String(logs.Location, name))
	return nil
}

// VerifyKMIPServers verifies one server, or every one when name is "".
func (r *Registry) VerifyKMIPServers(ctx context.Context, name string) ([]kmip.VerifyReport, error) {
	r.kmipMu.Lock()
	var names []string
	for n := range r.kmipServers {
		if name == "" || n == name {
			names = append(names, n)
		}
	}
	r.kmipMu.Unlock()
	if name != "" && len(names) == 0 {
		return nil, fmt.Errorf("%w %q", ErrUnknownServer, name)
	}
	slices.Sort(names)
	var out []kmip.VerifyReport
	for _, n := range names {
		src, err := r.Sources(n)
		if err != nil {
			out = append(out, kmip.VerifyReport{Server: n, Error: err.Error()})
			continue
		}
		ks, ok := src.(*kmip.Source)
		if !ok {
			continue
		}
		rep, err := ks.Verify(ctx)
		if err != nil && rep.Error == "" {
			rep.Error = err.Error()
		}
		out = append(out, rep)
	}
	return out, nil
}

// Migrate starts a migration of the named domains of scope (all when none)
// to target: a KMIP server's name or provider.LocationLocal. A domain
// already there is skipped. A domain whose last rekey or migration failed
// is retried now only if retry is set.
func (r *Registry) Migrate(scope string, names []string, target string, retry bool) ([]string, error) {
	if target != provider.LocationLocal {
		r.kmipMu.Lock()
		_, ok := r.kmipServers[target]
		r.kmipMu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownServer, target)
		}
	}
	ds, err := r.scopeDomains(scope, names)
	if err != nil {
		return nil, err
	}
	var todo []*Domain
	for _, d := range ds {
		st := d.engine.Status()
		switch {
		case st.Staged():
			return nil, r.stagedError(d, st.StagedUntil)
		case st.Running:
			return nil, fmt.Errorf("%w for %s", rekey.ErrInProgress, d.Name)
		case st.Ending():
			return nil, fmt.Errorf("%w for %s: the end of its staged rekey failed (%s); it is retried by itself",
				rekey.ErrOtherPending, d.Name, st.Error)
		case st.Failed() && !retry:
			return nil, fmt.Errorf("%w for %s: its %s to %s failed (%s); pass --retry to retry it now", rekey.ErrOtherPending, d.Name, st.Op, st.Target, st.Error)
		case st.Pending() && st.Target != target:
			// Resuming it would go where the operator did not ask.
			return nil, fmt.Errorf("%w for %s: its %s to %s is not finished (%s); retry that one (--retry with that target) before migrating elsewhere",
				rekey.ErrOtherPending, d.Name, st.Op, st.Target, st.Error)
		case st.Pending():
			todo = append(todo, d)
		case r.currentLocation(d) != target:
			todo = append(todo, d)
		}
	}
	if len(todo) == 0 {
		return nil, fmt.Errorf("%w: the master keys of %s are already at %s", ErrNothingToDo, scope, target)
	}
	var started []string
	for _, d := range todo {
		if err := d.engine.Start(target); err != nil {
			return started, r.withHint(d, err)
		}
		started = append(started, d.Name)
	}
	return started, nil
}

// scopeDomains resolves names (all when empty) to open domains of scope.
func (r *Registry) scopeDomains(scope string, names []string) ([]*Domain, error) {
	all, err := ScopeDomains(scope)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		names = all
	}
	var ds []*Domain
	for _, n := range names {
		d, err := r.Domain(n)
		if err != nil {
			return nil, err
		}
		if d.Scope != scope {
			return nil, fmt.Errorf("%w %q in scope %s", ErrUnknownDomain, n, scope)
		}
		if d.openErr != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, d.openErr)
		}
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	return ds, nil
}

// runQueued starts the rekey that was asked for while domain migrated.
// It stays queued (on disk too) until it has started, so that a crash or a
// stop before then does not lose it; queueMu is held across the start, so
// that the queued rekey's own end never finds itself still queued.
func (r *Registry) runQueued(domain string) {
	r.queueMu.Lock()
	queued := r.queued[domain]
	r.queueMu.Unlock()
	if !queued {
		return
	}
	d := r.byName[domain]
	d.engine.Wait() // the migration's run, which called us from its end
	r.queueMu.Lock()
	defer r.queueMu.Unlock()
	if !r.queued[domain] {
		return
	}
	// Tick may have started the scope's pending rekey first: that one counts.
	err := d.engine.Start(r.currentLocation(d))
	switch {
	case errors.Is(err, rekey.ErrClosed):
		return // kmd is stopping: the next start runs it
	case err != nil && !errors.Is(err, rekey.ErrInProgress):
		r.lg.Error("start queued rekey", zap.String(logs.Domain, domain), zap.Error(err))
	}
	r.dequeueLocked(domain)
}
