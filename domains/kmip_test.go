package domains_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/kmip"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// TestKMIP_AddServer: a server's files are kept, private, and the server
// recorded only once its connection is verified; on any refusal nothing of
// it is kept.
func TestKMIP_AddServer(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	refusing := kmiptestserver.Start(t)
	refusing.RefuseConnections(true)
	e := newEnv(t)
	r := e.open()
	ctx := t.Context()
	files := kmipFiles(t, srv)
	kmipDir := filepath.Join(e.dir, "kmip")

	badCA := files
	badCA.CACert = []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
	notPEM := files
	notPEM.ClientKey = []byte("not a key")
	otherKey := files
	otherKey.ClientKey = readPEM(t, refusing.ClientKey)
	refusals := []struct {
		name  string
		s     domains.KMIPServer
		files domains.KMIPFiles
		want  []error // any of them
		dir   string  // must not exist afterwards
	}{
		{"bad CA PEM", kmipServer(t, srv, "badca"), badCA, []error{kmip.ErrConfig}, "badca"},
		{"key not PEM", kmipServer(t, srv, "notpem"), notPEM, []error{kmip.ErrConfig}, "notpem"},
		{"key of another certificate", kmipServer(t, srv, "otherkey"), otherKey, []error{kmip.ErrConfig}, "otherkey"},
		{"refuses connections", kmipServer(t, refusing, "refusing"), kmipFiles(t, refusing), []error{domains.ErrVerify, kmip.ErrUnreachable}, "refusing"},
		{"reserved name", kmipServer(t, srv, "Local"), files, []error{kmip.ErrConfig}, "Local"},
		{"reserved name, other case", kmipServer(t, srv, "local"), files, []error{kmip.ErrConfig}, "local"},
		{"path in name", kmipServer(t, srv, "../evil"), files, []error{kmip.ErrConfig}, "../evil"},
	}
	for _, c := range refusals {
		rep, err := r.AddKMIPServer(ctx, c.s, c.files)
		if err == nil || !slices.ContainsFunc(c.want, func(w error) bool { return errors.Is(err, w) }) {
			t.Errorf("%s: AddKMIPServer(%q) = %v (report %+v), want one of %v", c.name, c.s.Name, err, rep, c.want)
		}
		if _, err := os.Stat(filepath.Join(kmipDir, c.dir)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s kept after a refused create (stat: %v)", c.name, filepath.Join(kmipDir, c.dir), err)
		}
		if _, err := r.KMIPServer(ctx, c.s.Name); !errors.Is(err, domains.ErrUnknownServer) {
			t.Errorf("%s: KMIPServer(%q) after a refused create = %v, want ErrUnknownServer", c.name, c.s.Name, err)
		}
	}
	if got := r.KMIPServers(ctx); len(got) != 0 {
		t.Fatalf("servers after refused creates: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(kmipDir, "servers.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("servers.json written by refused creates (stat: %v)", err)
	}

	rep, err := r.AddKMIPServer(ctx, kmipServer(t, srv, "kmip1"), files)
	if err != nil || !rep.OK || !rep.Reachable || rep.Server != "kmip1" {
		t.Fatalf("AddKMIPServer(kmip1) = %+v, %v", rep, err)
	}
	dir := filepath.Join(kmipDir, "kmip1")
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("%s mode %v, want 0700", dir, m)
	}
	for name, want := range map[string][]byte{"ca.pem": files.CACert, "client.pem": files.ClientCert, "client.key": files.ClientKey} {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("copy of %s: %v", name, err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs from the file given", p)
		}
		if m := mode(t, p); m != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, m)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("%s holds %d files, want 3", dir, len(ents))
	}
	saved := readServersJSON(t, e)
	want := kmipServer(t, srv, "kmip1")
	if len(saved) != 1 || saved[0].Name != "kmip1" || saved[0].Host != want.Host || saved[0].Port != want.Port ||
		saved[0].ConnectionTimeout != 2*time.Second || saved[0].MinTLSVersion != "1.2" {
		t.Errorf("servers.json = %+v, want kmip1 at %s:%d", saved, want.Host, want.Port)
	}
	if m := mode(t, filepath.Join(kmipDir, "servers.json")); m != 0o600 {
		t.Errorf("servers.json mode %v, want 0600", m)
	}
	if keys := serverKeys(srv); len(keys) != 0 {
		t.Errorf("the verification probe left objects %v on the server", keys)
	}

	// The same name again, even with other files: refused, the first kept.
	if _, err := r.AddKMIPServer(ctx, kmipServer(t, refusing, "kmip1"), kmipFiles(t, refusing)); !errors.Is(err, domains.ErrExists) {
		t.Errorf("second AddKMIPServer(kmip1) = %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(got) != string(files.CACert) {
		t.Errorf("a refused second create replaced kmip1's CA certificate")
	}
	if saved := readServersJSON(t, e); len(saved) != 1 || saved[0].Port != want.Port {
		t.Errorf("servers.json after a refused second create = %+v", saved)
	}

	info, err := r.KMIPServer(ctx, "kmip1")
	if err != nil {
		t.Fatal(err)
	}
	cert := certOf(t, srv.ClientCert)
	if info.ClientCertSubject != cert.Subject.String() || !strings.Contains(info.ClientCertSubject, "CN=kmd-test-client") ||
		!info.ClientCertExpires.Equal(cert.NotAfter) {
		t.Errorf("view: client certificate %q expiring %v, want %q expiring %v",
			info.ClientCertSubject, info.ClientCertExpires, cert.Subject, cert.NotAfter)
	}
	if info.Host != want.Host || info.Port != want.Port || info.Keys != 0 || len(info.Domains) != 0 ||
		!info.Created.Equal(t0.Truncate(time.Second)) {
		t.Errorf("view of kmip1: %+v", info)
	}
	if got := r.KMIPServers(ctx); len(got) != 1 || got[0].Name != "kmip1" {
		t.Errorf("KMIPServers = %+v, want kmip1", got)
	}
}

func readServersJSON(t *testing.T, e *env) []domains.KMIPServer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "kmip", "servers.json"))
	if err != nil {
		t.Fatal(err)
	}
	var list []domains.KMIPServer
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("servers.json: %v", err)
	}
	return list
}

// TestKMIP_MigrateSEDAndBack: SED's MK moves to kmip1 (MIGRATING while it
// does, the local key destroyed only afterwards), is rekeyed there (the old
// one destroyed on the server), survives a restart (pulled with Get), and
// moves back; the server can be deleted only once nothing lives on it.
func TestKMIP_MigrateSEDAndBack(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	ctx := t.Context()
	addKMIP(t, r, srv)
	v := vault(t, r, domains.SEDDomain)
	want := fill(t, v, "drive", 25)
	local := status(t, r, domains.SEDDomain)
	if local.Location != provider.LocationLocal || local.RemoteKeyID != "" {
		t.Fatalf("SED before migration: %+v", local)
	}

	g := newGate()
	e.trace.Set(g.hook(domains.SEDDomain, "rewrap:batch"))
	started, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false)
	if err != nil || !slices.Equal(started, []string{domains.SEDDomain}) {
		t.Fatalf("Migrate(sed, kmip1) = %v, %v", started, err)
	}
	g.wait(t)
	st := status(t, r, domains.SEDDomain)
	if st.Status != domains.StatusMigrating || st.Rekey == nil || st.Rekey.Total != 25 || st.Location != "kmip1" ||
		st.KeyID == local.KeyID || st.RemoteKeyID == "" {
		t.Errorf("SED during its migration: %+v (rekey %+v)", st, st.Rekey)
	}
	if files := e.keyFiles(domains.SEDDomain); !slices.Equal(files, []string{local.KeyID}) {
		t.Errorf("key files during the migration %v, want the old one %s kept until the end", files, local.KeyID)
	}
	if err := r.DeleteKMIPServer(ctx, "kmip1"); !errors.Is(err, domains.ErrInUse) {
		t.Errorf("DeleteKMIPServer during a migration to it = %v, want ErrInUse", err)
	}
	putGet(t, v, "during-migration", []byte("written while migrating"))
	want["during-migration"] = []byte("written while migrating")
	g.open()
	waitActive(t, r, domains.SEDDomain)
	e.trace.Set(nil)

	onKMIP := checkOnKMIP(t, e, r, srv, domains.SEDDomain)
	if onKMIP.KeyID != st.KeyID {
		t.Errorf("SED key %s after the migration, want %s, the one made at the start", onKMIP.KeyID, st.KeyID)
	}
	if keys := serverKeys(srv); !slices.Equal(keys, []string{onKMIP.RemoteKeyID}) {
		t.Errorf("server holds %v, want only SED's key %s", keys, onKMIP.RemoteKeyID)
	}
	if ents, err := os.ReadDir(filepath.Join(e.dir, "keys", domains.SEDDomain)); err != nil || len(ents) != 0 {
		t.Errorf("keys/SED after migrating to kmip1: %v, %v; want empty", ents, err)
	}
	checkEntries(t, v, want)
	if n := len(e.events.Events(logs.EventRekeyCompleted, domains.SEDDomain)); n != 1 {
		t.Errorf("%d completed events for the migration, want 1", n)
	}

	// A rekey on kmip1: the new MK there, the old one destroyed there.
	rekeyOne(t, r, domains.SEDDomain)
	rekeyed := checkOnKMIP(t, e, r, srv, domains.SEDDomain)
	if rekeyed.KeyID == onKMIP.KeyID || rekeyed.RemoteKeyID == onKMIP.RemoteKeyID {
		t.Errorf("SED after a rekey on kmip1: %+v, before %+v", rekeyed, onKMIP)
	}
	if _, ok := srv.Keys()[onKMIP.RemoteKeyID]; ok {
		t.Errorf("the old key %s is still on the server after the rekey", onKMIP.RemoteKeyID)
	}
	if keys := serverKeys(srv); !slices.Equal(keys, []string{rekeyed.RemoteKeyID}) {
		t.Errorf("server holds %v after the rekey, want only %s", keys, rekeyed.RemoteKeyID)
	}
	checkEntries(t, v, want)

	// Restart: the MK is pulled from the server.
	gets := srv.Count("Get")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = e.open()
	v = vault(t, r, domains.SEDDomain)
	if srv.Count("Get") <= gets {
		t.Errorf("Get count %d after reopening, was %d: SED's MK was not fetched from the server", srv.Count("Get"), gets)
	}
	if st := checkOnKMIP(t, e, r, srv, domains.SEDDomain); st.KeyID != rekeyed.KeyID {
		t.Errorf("SED after reopening: %+v", st)
	}
	checkEntries(t, v, want)
	if got := r.KMIPServers(ctx); len(got) != 1 || got[0].Name != "kmip1" || got[0].Keys != 1 {
		t.Errorf("servers after reopening: %+v", got)
	}

	err = r.DeleteKMIPServer(ctx, "kmip1")
	if !errors.Is(err, domains.ErrInUse) || !strings.Contains(err.Error(), "1 master key") {
		t.Errorf("DeleteKMIPServer while SED's MK is there = %v, want ErrInUse naming 1 master key", err)
	}

	// Back to local.
	migrate(t, r, logs.ScopeSED, nil, provider.LocationLocal)
	back := status(t, r, domains.SEDDomain)
	if back.RemoteKeyID != "" || back.KeyID == rekeyed.KeyID {
		t.Errorf("SED back on local: %+v", back)
	}
	if files := e.keyFiles(domains.SEDDomain); !slices.Equal(files, []string{back.KeyID}) {
		t.Errorf("key files %v after migrating back, want [%s]", files, back.KeyID)
	}
	if keys := serverKeys(srv); len(keys) != 0 {
		t.Errorf("server holds %v after SED migrated back, want nothing", keys)
	}
	checkEntries(t, v, want)
	putGet(t, v, "after-back", []byte("local again"))

	if err := r.DeleteKMIPServer(ctx, "kmip1"); err != nil {
		t.Fatalf("DeleteKMIPServer once nothing lives there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "kmip", "kmip1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("kmip1's files kept after delete (stat: %v)", err)
	}
	if got := r.KMIPServers(ctx); len(got) != 0 {
		t.Errorf("servers after delete: %+v", got)
	}
	if saved := readServersJSON(t, e); len(saved) != 0 {
		t.Errorf("servers.json after delete: %+v", saved)
	}
	if _, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false); !errors.Is(err, domains.ErrUnknownServer) {
		t.Errorf("Migrate to a deleted server = %v, want ErrUnknownServer", err)
	}
	if err := r.DeleteKMIPServer(ctx, "kmip1"); !errors.Is(err, domains.ErrUnknownServer) {
		t.Errorf("second DeleteKMIPServer = %v, want ErrUnknownServer", err)
	}
}

// TestOutage_AtStart: a domain whose MK is on a server that is down at
// start is FAILED with the reason, refuses reads and writes (and never
// falls back to a local MK), while every other domain works; once the
// server is back a Tick loads the MK.
func TestOutage_AtStart(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	others := map[string]map[string][]byte{
		"FTP":             fill(t, vault(t, r, "FTP"), "ftp", 10),
		domains.SEDDomain: fill(t, vault(t, r, domains.SEDDomain), "drive", 5),
		"CELOG":           fill(t, vault(t, r, "CELOG"), "celog", 3),
		"CLOUDPOOLS":      nil,
		"SSO":             nil,
		"NETWORK":         nil,
	}
	want := fill(t, vault(t, r, "S3"), "s3", 30)
	migrate(t, r, logs.ScopeCluster, []string{"S3"}, "kmip1")
	onKMIP := checkOnKMIP(t, e, r, srv, "S3")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	r = e.open()
	st := status(t, r, "S3")
	if st.Status != domains.StatusFailed || !hasAll(st.Error, "kmip1", "unreachable") || st.NextRetry == nil ||
		st.KeyID != onKMIP.KeyID || st.Location != "kmip1" {
		t.Fatalf("S3 with kmip1 down at start: %+v, want FAILED naming kmip1 unreachable", st)
	}
	v := vault(t, r, "S3")
	if _, _, err := v.Get(t.Context(), "s3-00001"); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("Get from S3 with its MK out of reach = %v, want ErrKeyUnavailable", err)
	}
	if _, err := v.Put(t.Context(), "while-down", []byte("x"), provider.Cond{}); !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Errorf("Put into S3 with its MK out of reach = %v, want ErrKeyUnavailable", err)
	}
	if files := e.keyFiles("S3"); len(files) != 0 {
		t.Errorf("S3 key files %v: kmd fell back to a local MK", files)
	}
	for _, d := range allDomains() {
		if d == "S3" {
			continue
		}
		if st := status(t, r, d); st.Status != domains.StatusActive {
			t.Errorf("%s beside an unreachable kmip1: %+v", d, st)
		}
	}
	for d, w := range others {
		dv := vault(t, r, d)
		checkEntries(t, dv, w)
		putGet(t, dv, "beside-outage", []byte("fine"))
	}

	// Still down: a Tick changes nothing.
	r.Tick(e.clock.Advance(time.Minute))
	if st := status(t, r, "S3"); st.Status != domains.StatusFailed {
		t.Fatalf("S3 after a Tick with kmip1 still down: %+v", st)
	}

	srv.Restart()
	r.Tick(e.clock.Advance(time.Minute))
	if st := status(t, r, "S3"); st.Status != domains.StatusActive || st.Error != "" || st.NextRetry != nil || st.KeyID != onKMIP.KeyID {
		t.Fatalf("S3 after kmip1 came back and a Tick: %+v", st)
	}
	checkEntries(t, v, want)
	putGet(t, v, "after-outage", []byte("back"))
	if files := e.keyFiles("S3"); len(files) != 0 {
		t.Errorf("S3 key files %v after the outage", files)
	}
}

// TestOutage_AfterLoad: with the MK in memory, S3 keeps working while its
// server is down; a rekey fails (nothing destroyed, an event) and its retry
// completes once the server is back.
func TestOutage_AfterLoad(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	v := vault(t, r, "S3")
	want := fill(t, v, "s3", 40)
	migrate(t, r, logs.ScopeCluster, []string{"S3"}, "kmip1")
	before := checkOnKMIP(t, e, r, srv, "S3")

	srv.Stop()
	checkEntries(t, v, want)
	putGet(t, v, "while-down", []byte("written while kmip1 is down"))
	want["while-down"] = []byte("written while kmip1 is down")

	failedAt := e.clock.Now()
	if _, err := r.StartRekey(logs.ScopeCluster, []string{"S3"}); err != nil {
		t.Fatalf("StartRekey(S3) with kmip1 down: %v", err)
	}
	st := waitDone(t, r, "S3")
	if st.Status != domains.StatusFailed || !hasAll(st.Error, "kmip1", "unreachable") ||
		st.NextRetry == nil || !st.NextRetry.Equal(failedAt.Add(retryInterval)) {
		t.Fatalf("S3 after a rekey with kmip1 down: %+v", st)
	}
	if st.KeyID != before.KeyID || st.Location != "kmip1" || st.RemoteKeyID != before.RemoteKeyID {
		t.Errorf("S3's current MK changed by a failed rekey: %+v, before %+v", st, before)
	}
	evs := e.events.Events(logs.EventRekeyFailed, "S3")
	if len(evs) != 1 || evs[0].Error != st.Error || evs[0].KeyID != before.KeyID {
		t.Errorf("failure events %+v, want one for S3 with its error", evs)
	}
	if _, ok := srv.Keys()[before.RemoteKeyID]; !ok {
		t.Errorf("S3's MK %s gone from the server after a failed rekey", before.RemoteKeyID)
	}
	checkEntries(t, v, want)
	putGet(t, v, "after-failure", []byte("still writable"))
	want["after-failure"] = []byte("still writable")
	if st := status(t, r, "FTP"); st.Status != domains.StatusActive {
		t.Errorf("FTP beside S3's failure: %+v", st)
	}

	srv.Restart()
	retryNow(t, e, r, "S3")
	waitActive(t, r, "S3")
	after := checkOnKMIP(t, e, r, srv, "S3")
	if after.KeyID == before.KeyID {
		t.Errorf("S3 key unchanged by the retried rekey")
	}
	if keys := serverKeys(srv); !slices.Equal(keys, []string{after.RemoteKeyID}) {
		t.Errorf("server holds %v after the retry, want only %s (the old %s destroyed)", keys, after.RemoteKeyID, before.RemoteKeyID)
	}
	checkEntries(t, v, want)
	if n := len(e.events.Events(logs.EventRekeyCompleted, "S3")); n != 2 {
		t.Errorf("%d completed events for S3, want 2 (migration and rekey)", n)
	}
}

// TestOutage_DuringRekey: the server goes away in the middle of REWRAP (or
// refuses Destroy): the MKs are in memory so the entries move, but the old
// MK cannot be destroyed: FAILED in DESTROY, nothing lost, and the retry
// completes with exactly one key of S3 on the server.
func TestOutage_DuringRekey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		fault func(srv *kmiptestserver.Server, e *env) // before the rekey
		clear func(srv *kmiptestserver.Server)
		want  []string // in the error
	}{
		{
			name: "server stops at the 5th batch",
			fault: func(srv *kmiptestserver.Server, e *env) {
				var n atomic.Int32
				e.trace.Set(func(d, s string) {
					if d == "S3" && s == "rewrap:batch" && n.Add(1) == 5 {
						srv.Stop()
					}
				})
			},
			clear: func(srv *kmiptestserver.Server) { srv.Restart() },
			want:  []string{"destroy", "kmip1", "unreachable"},
		},
		{
			name:  "Destroy refused",
			fault: func(srv *kmiptestserver.Server, _ *env) { srv.FailOn("Destroy", errInjected) },
			clear: func(srv *kmiptestserver.Server) { srv.FailOn("Destroy", nil) },
			want:  []string{"destroy", "kmip1", errInjected.Error()},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := kmiptestserver.Start(t)
			e := newEnv(t)
			r := e.open()
			addKMIP(t, r, srv)
			v := vault(t, r, "S3")
			want := fill(t, v, "s3", 200)
			migrate(t, r, logs.ScopeCluster, []string{"S3"}, "kmip1")
			before := checkOnKMIP(t, e, r, srv, "S3")

			c.fault(srv, e)
			if _, err := r.StartRekey(logs.ScopeCluster, []string{"S3"}); err != nil {
				t.Fatal(err)
			}
			st := waitDone(t, r, "S3")
			e.trace.Set(nil)
			if st.Status != domains.StatusFailed || !hasAll(st.Error, c.want...) {
				t.Fatalf("S3 after the fault: %+v, want FAILED with %q", st, c.want)
			}
			if state := rekeyState(t, r.StorePath("S3")); !strings.Contains(state, `"phase":"DESTROY"`) {
				t.Errorf("S3's rekey state %s, want it stopped in DESTROY", state)
			}
			if st.KeyID == before.KeyID || st.Location != "kmip1" || st.RemoteKeyID == "" {
				t.Errorf("S3 current MK after REWRAP: %+v", st)
			}
			keys := srv.Keys()
			if _, ok := keys[before.RemoteKeyID]; !ok || len(keys) != 2 {
				t.Errorf("server holds %v, want the old %s (not destroyed) and the new %s", serverKeys(srv), before.RemoteKeyID, st.RemoteKeyID)
			}
			if n := len(e.events.Events(logs.EventRekeyFailed, "S3")); n != 1 {
				t.Errorf("%d failure events, want 1", n)
			}
			checkEntries(t, v, want)
			putGet(t, v, "after-failure", []byte("writable"))
			want["after-failure"] = []byte("writable")

			c.clear(srv)
			retryNow(t, e, r, "S3")
			waitActive(t, r, "S3")
			after := checkOnKMIP(t, e, r, srv, "S3")
			if after.KeyID != st.KeyID {
				t.Errorf("the retry made another MK %s, want it to finish with %s", after.KeyID, st.KeyID)
			}
			if keys := serverKeys(srv); !slices.Equal(keys, []string{after.RemoteKeyID}) {
				t.Errorf("server holds %v after the retry, want only %s", keys, after.RemoteKeyID)
			}
			checkEntries(t, v, want)
		})
	}
}

// TestKMIP_MigrateFailure: a migration whose key cannot be made on the
// server (Create, Activate or Get refused) fails, leaves the MK local and
// the entries readable, and its retry leaves exactly one key on the
// server: none orphaned, none duplicated.
func TestKMIP_MigrateFailure(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	for _, c := range []struct{ domain, op string }{
		{domains.SEDDomain, "Create"},
		{"S3", "Activate"},
		{"FTP", "Get"},
	} {
		scope, failEvent := logs.ScopeCluster, logs.EventRekeyFailed
		if c.domain == domains.SEDDomain {
			scope, failEvent = logs.ScopeSED, logs.EventSedsRekeyFailed
		}
		v := vault(t, r, c.domain)
		want := fill(t, v, strings.ToLower(c.domain), 15)
		before := status(t, r, c.domain)
		onServerBefore := serverKeys(srv)

		srv.FailOn(c.op, errInjected)
		if _, err := r.Migrate(scope, []string{c.domain}, "kmip1", false); err != nil {
			t.Fatalf("Migrate(%s): %v", c.domain, err)
		}
		st := waitDone(t, r, c.domain)
		if st.Status != domains.StatusFailed || !hasAll(st.Error, "kmip1", errInjected.Error()) {
			t.Fatalf("%s after %s failed: %+v", c.domain, c.op, st)
		}
		if st.Location != provider.LocationLocal || st.KeyID != before.KeyID || st.RemoteKeyID != "" {
			t.Errorf("%s after a failed migration: %+v, want still local under %s", c.domain, st, before.KeyID)
		}
		if files := e.keyFiles(c.domain); !slices.Equal(files, []string{before.KeyID}) {
			t.Errorf("%s key files %v, want [%s]", c.domain, files, before.KeyID)
		}
		if evs := e.events.Events(failEvent, c.domain); len(evs) != 1 {
			t.Errorf("%s: %d %s events, want 1", c.domain, len(evs), failEvent)
		}
		checkEntries(t, v, want)
		putGet(t, v, "after-failure", []byte(c.op))
		want["after-failure"] = []byte(c.op)

		srv.FailOn(c.op, nil)
		retryNow(t, e, r, c.domain)
		waitActive(t, r, c.domain)
		after := checkOnKMIP(t, e, r, srv, c.domain)
		if got, wantKeys := serverKeys(srv), sorted(append(slices.Clone(onServerBefore), after.RemoteKeyID)...); !slices.Equal(got, wantKeys) {
			t.Errorf("%s (%s failed once): server holds %v, want %v: one key for %s, none orphaned", c.domain, c.op, got, wantKeys, c.domain)
		}
		checkEntries(t, v, want)
	}
}

// TestMigrate_RekeyWaits: a rekey asked for during a migration is queued,
// and runs by itself once the migration is done, on the server.
func TestMigrate_RekeyWaits(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	v := vault(t, r, domains.SEDDomain)
	want := fill(t, v, "drive", 25)
	local := status(t, r, domains.SEDDomain)

	g := newGate()
	e.trace.Set(g.hook(domains.SEDDomain, "rewrap:batch"))
	if _, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
	migrating := status(t, r, domains.SEDDomain)
	started, err := r.StartRekey(logs.ScopeSED, nil)
	if err != nil || !slices.Equal(started, []string{domains.SEDDomain}) {
		t.Fatalf("StartRekey(sed) during a migration = %v, %v; want it accepted (queued)", started, err)
	}
	if st := status(t, r, domains.SEDDomain); st.Status != domains.StatusMigrating || st.KeyID != migrating.KeyID {
		t.Errorf("SED after a rekey was asked for during its migration: %+v", st)
	}
	g.open()

	waitEvents(t, e, logs.EventRekeyCompleted, domains.SEDDomain, 2)
	waitActive(t, r, domains.SEDDomain)
	e.trace.Set(nil)
	st := checkOnKMIP(t, e, r, srv, domains.SEDDomain)
	if st.KeyID == migrating.KeyID || st.KeyID == local.KeyID {
		t.Errorf("SED key %s after the queued rekey: want a third key (local %s, migration %s)", st.KeyID, local.KeyID, migrating.KeyID)
	}
	if keys := serverKeys(srv); !slices.Equal(keys, []string{st.RemoteKeyID}) {
		t.Errorf("server holds %v, want only %s", keys, st.RemoteKeyID)
	}
	checkEntries(t, v, want)
	time.Sleep(50 * time.Millisecond)
	if n := len(e.events.Events(logs.EventRekeyCompleted, domains.SEDDomain)); n != 2 {
		t.Errorf("%d completed events, want 2: the migration and the queued rekey", n)
	}
	if s := waitSchedule(t, r, logs.ScopeSED); s.LastResult != rekey.ResultSucceeded {
		t.Errorf("sed schedule %+v, want succeeded", s)
	}
}

// TestMigrate_QueuedRekeyFailureIsReported: the scope rekey asked for during
// a migration is the queued one: if it fails, the schedule must not say
// the rekey succeeded, and the rotation clock is reset when it completes,
// not when the migration did.
func TestMigrate_QueuedRekeyFailureIsReported(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	fill(t, vault(t, r, domains.SEDDomain), "drive", 25)
	schedBefore, _ := r.Schedule(logs.ScopeSED)

	g := newGate()
	hold := g.hook(domains.SEDDomain, "rewrap:batch")
	var once sync.Once
	e.trace.Set(func(d, s string) {
		hold(d, s)
		if d == domains.SEDDomain && s == "destroy:done" {
			// The migration is done; the queued rekey that follows fails.
			once.Do(func() { srv.FailOn("Create", errInjected) })
		}
	})
	if _, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
	if _, err := r.StartRekey(logs.ScopeSED, nil); err != nil {
		t.Fatalf("StartRekey(sed) during a migration: %v", err)
	}
	g.open()
	waitEvents(t, e, logs.EventSedsRekeyFailed, domains.SEDDomain, 1)
	if st := waitDone(t, r, domains.SEDDomain); st.Status != domains.StatusFailed {
		t.Fatalf("SED after its queued rekey failed: %+v", st)
	}
	s, _ := r.Schedule(logs.ScopeSED)
	if s.LastResult == rekey.ResultSucceeded || !s.RekeyTime.Equal(schedBefore.RekeyTime) {
		t.Errorf("sed schedule %+v while the rekey asked for has failed: want it not succeeded and the rotation clock unchanged (%v); "+
			"the migration's completion was counted as the rekey's", s, schedBefore.RekeyTime)
	}

	srv.FailOn("Create", nil)
	retryNow(t, e, r, domains.SEDDomain)
	retriedAt := e.clock.Now()
	waitActive(t, r, domains.SEDDomain)
	e.trace.Set(nil)
	s = waitSchedule(t, r, logs.ScopeSED)
	if s.LastResult != rekey.ResultSucceeded || !s.RekeyTime.Equal(retriedAt.UTC()) {
		t.Errorf("sed schedule %+v after the queued rekey completed at %v: want succeeded, rotation clock reset then", s, retriedAt)
	}
}

// TestMigrate_RetrySemantics: a failed migration is retried only with
// retry; unknown servers and migrations with nothing to do are refused.
func TestMigrate_RetrySemantics(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	v := vault(t, r, domains.SEDDomain)
	want := fill(t, v, "drive", 12)

	if _, err := r.Migrate(logs.ScopeSED, nil, "nope", false); !errors.Is(err, domains.ErrUnknownServer) {
		t.Errorf("Migrate to an unknown server = %v, want ErrUnknownServer", err)
	}
	if _, err := r.Migrate(logs.ScopeSED, nil, provider.LocationLocal, false); !errors.Is(err, domains.ErrNothingToDo) {
		t.Errorf("Migrate to where SED already is = %v, want ErrNothingToDo", err)
	}
	if _, err := r.Migrate(logs.ScopeCluster, []string{domains.SEDDomain}, "kmip1", false); !errors.Is(err, domains.ErrUnknownDomain) {
		t.Errorf("Migrate(cluster, SED) = %v, want ErrUnknownDomain", err)
	}

	srv.FailOn("Create", errInjected)
	if _, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, r, domains.SEDDomain); st.Status != domains.StatusFailed {
		t.Fatalf("SED after a failed migration: %+v", st)
	}
	attempts := len(e.events.Events(logs.EventSedsRekeyFailed, domains.SEDDomain))
	_, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false)
	if !errors.Is(err, rekey.ErrOtherPending) || !strings.Contains(err.Error(), "--retry") {
		t.Errorf("Migrate again without retry = %v, want ErrOtherPending mentioning --retry", err)
	}
	if st := status(t, r, domains.SEDDomain); st.Status != domains.StatusFailed {
		t.Errorf("SED after a refused Migrate: %+v", st)
	}

	// A rekey asked for meanwhile: if it is refused, nothing changes, the
	// scope's schedule included.
	schedBefore, _ := r.Schedule(logs.ScopeSED)
	if _, err := r.StartRekey(logs.ScopeSED, nil); err != nil {
		if s, _ := r.Schedule(logs.ScopeSED); s.LastResult != schedBefore.LastResult || len(s.Pending) != len(schedBefore.Pending) {
			t.Errorf("StartRekey(sed) refused (%v) but the schedule changed: %+v, was %+v", err, s, schedBefore)
		}
	} else {
		t.Logf("StartRekey(sed) during a failed migration accepted")
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(e.events.Events(logs.EventSedsRekeyFailed, domains.SEDDomain)); n != attempts {
		t.Errorf("%d failure events after refused starts, want %d: something retried", n, attempts)
	}

	srv.FailOn("Create", nil)
	started, err := r.Migrate(logs.ScopeSED, nil, "kmip1", true)
	if err != nil || !slices.Equal(started, []string{domains.SEDDomain}) {
		t.Fatalf("Migrate with retry = %v, %v", started, err)
	}
	waitActive(t, r, domains.SEDDomain)
	st := checkOnKMIP(t, e, r, srv, domains.SEDDomain)
	if keys := serverKeys(srv); !slices.Equal(keys, []string{st.RemoteKeyID}) {
		t.Errorf("server holds %v, want only %s", keys, st.RemoteKeyID)
	}
	checkEntries(t, v, want)
	for _, retry := range []bool{false, true} {
		if _, err := r.Migrate(logs.ScopeSED, nil, "kmip1", retry); !errors.Is(err, domains.ErrNothingToDo) {
			t.Errorf("Migrate(retry=%v) to where SED already is = %v, want ErrNothingToDo", retry, err)
		}
	}
}

// TestKMIP_ServerListAndVerify: the list counts the MKs on each server and
// the domains whose current MK is there; verify probes each server.
func TestKMIP_ServerListAndVerify(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	ctx := t.Context()
	addKMIP(t, r, srv)
	if got := r.KMIPServers(ctx); len(got) != 1 || got[0].Name != "kmip1" || got[0].Keys != 0 || len(got[0].Domains) != 0 {
		t.Fatalf("KMIPServers before any migration: %+v", got)
	}
	migrate(t, r, logs.ScopeSED, nil, "kmip1")
	migrate(t, r, logs.ScopeCluster, []string{"S3"}, "kmip1")
	got := r.KMIPServers(ctx)
	if len(got) != 1 || got[0].Name != "kmip1" || got[0].Keys != 2 || !slices.Equal(sorted(got[0].Domains...), []string{"S3", domains.SEDDomain}) {
		t.Errorf("KMIPServers after migrating SED and S3: %+v", got)
	}

	probes := srv.Count("Create")
	reps, err := r.VerifyKMIPServers(ctx, "")
	if err != nil || len(reps) != 1 {
		t.Fatalf("VerifyKMIPServers(\"\") = %+v, %v", reps, err)
	}
	if rep := reps[0]; rep.Server != "kmip1" || !rep.OK || !rep.Reachable || rep.TLSVersion == "" || rep.KMIPVersion == "" || rep.Error != "" {
		t.Errorf("verify report %+v", rep)
	}
	if srv.Count("Create") != probes+1 {
		t.Errorf("verify made %d Create requests, want 1 (its probe)", srv.Count("Create")-probes)
	}
	if reps, err := r.VerifyKMIPServers(ctx, "kmip1"); err != nil || len(reps) != 1 || !reps[0].OK {
		t.Errorf("VerifyKMIPServers(kmip1) = %+v, %v", reps, err)
	}
	if _, err := r.VerifyKMIPServers(ctx, "nope"); !errors.Is(err, domains.ErrUnknownServer) {
		t.Errorf("VerifyKMIPServers(nope) = %v, want ErrUnknownServer", err)
	}
	if _, err := r.KMIPServer(ctx, "nope"); !errors.Is(err, domains.ErrUnknownServer) {
		t.Errorf("KMIPServer(nope) = %v, want ErrUnknownServer", err)
	}
	if keys := serverKeys(srv); len(keys) != 2 {
		t.Errorf("server holds %v after verify, want SED's and S3's keys only", keys)
	}

	// Down: verify says so; the list still counts what lives there.
	srv.Stop()
	reps, err = r.VerifyKMIPServers(ctx, "")
	if err != nil || len(reps) != 1 || reps[0].OK || reps[0].Reachable || !strings.Contains(reps[0].Error, "unreachable") {
		t.Errorf("VerifyKMIPServers with kmip1 down = %+v, %v", reps, err)
	}
	if got := r.KMIPServers(ctx); len(got) != 1 || got[0].Keys != 2 {
		t.Errorf("KMIPServers with kmip1 down: %+v", got)
	}
}

// TestKMIP_ActiveMeansIdle: SPEC: ACTIVE is "no rekey running". Once a
// migration's state is cleared but before its run has ended, the domain
// must not show ACTIVE while a new migration or rekey is refused as
// "already in progress".
func TestKMIP_ActiveMeansIdle(t *testing.T) {
	t.Parallel()
	srv := kmiptestserver.Start(t)
	e := newEnv(t)
	r := e.open()
	addKMIP(t, r, srv)
	fill(t, vault(t, r, domains.SEDDomain), "drive", 5)
	g := newGate()
	e.trace.Set(g.hook(domains.SEDDomain, "destroy:done"))
	if _, err := r.Migrate(logs.ScopeSED, nil, "kmip1", false); err != nil {
		t.Fatal(err)
	}
	g.wait(t)
	st := status(t, r, domains.SEDDomain)
	_, err := r.Migrate(logs.ScopeSED, nil, provider.LocationLocal, false)
	g.open()
	if st.Status == domains.StatusActive && errors.Is(err, rekey.ErrInProgress) {
		t.Errorf("SED shows %s (no rekey running) but Migrate is refused: %v", st.Status, err)
	}
	waitActive(t, r, domains.SEDDomain)
}
