package domains_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/kmip"
	"github.com/kmd-project/kmd/kmip/kmiptestserver"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

// errInjected is what FailOn makes the test server answer.
var errInjected = errors.New("injected failure")

// readPEM reads one of the test server's PEM files.
func readPEM(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kmipFiles are srv's PEM files, as kmctl would upload them.
func kmipFiles(t *testing.T, srv *kmiptestserver.Server) domains.KMIPFiles {
	t.Helper()
	return domains.KMIPFiles{CACert: readPEM(t, srv.CACert), ClientCert: readPEM(t, srv.ClientCert), ClientKey: readPEM(t, srv.ClientKey)}
}

// kmipServer is the registry's description of srv under name.
func kmipServer(t *testing.T, srv *kmiptestserver.Server, name string) domains.KMIPServer {
	t.Helper()
	host, port, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return domains.KMIPServer{Name: name, Host: host, Port: p, ConnectionTimeout: 2 * time.Second}
}

// addKMIP adds srv to r as kmip1.
func addKMIP(t *testing.T, r *reg, srv *kmiptestserver.Server) {
	t.Helper()
	rep, err := r.AddKMIPServer(context.Background(), kmipServer(t, srv, "kmip1"), kmipFiles(t, srv))
	if err != nil {
		t.Fatalf("AddKMIPServer(kmip1): %v (report %+v)", err, rep)
	}
	if !rep.OK {
		t.Fatalf("AddKMIPServer(kmip1) report %+v, want OK", rep)
	}
}

// remoteName is the KMIP Name of a domain's MK made by the test node.
func remoteName(domain, id string) string { return kmip.KeyName(testNode, domain, id) }

// onServer returns the unique identifiers of the objects named as the MK
// (domain, id) on srv.
func onServer(srv *kmiptestserver.Server, domain, id string) []string {
	return srv.Lookup(remoteName(domain, id))
}

// serverKeys returns the identifiers of every object on srv, sorted.
func serverKeys(srv *kmiptestserver.Server) []string {
	var ids []string
	for id := range srv.Keys() {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// migrate migrates names of scope to target and waits until each is
// ACTIVE again.
func migrate(t *testing.T, r *reg, scope string, names []string, target string) {
	t.Helper()
	started, err := r.Migrate(scope, names, target, false)
	if err != nil {
		t.Fatalf("Migrate(%s, %v, %s): %v", scope, names, target, err)
	}
	waitActive(t, r, started...)
	for _, d := range started {
		if loc := status(t, r, d).Location; loc != target {
			t.Fatalf("%s after its migration to %s is at %q", d, target, loc)
		}
	}
}

// rekeyOne rekeys one domain and waits until it is ACTIVE again.
func rekeyOne(t *testing.T, r *reg, domain string) {
	t.Helper()
	scope := logs.ScopeCluster
	if domain == domains.SEDDomain {
		scope = logs.ScopeSED
	}
	if _, err := r.StartRekey(scope, []string{domain}); err != nil {
		t.Fatalf("StartRekey(%s): %v", domain, err)
	}
	waitActive(t, r, domain)
}

// checkOnKMIP checks that domain's current MK is on srv as kmip1: its
// status names the server and the object that carries the MK's name, and
// no key file of domain is left.
func checkOnKMIP(t *testing.T, e *env, r *reg, srv *kmiptestserver.Server, domain string) domains.Status {
	t.Helper()
	st := status(t, r, domain)
	if st.Status != domains.StatusActive || st.Location != "kmip1" || st.Error != "" {
		t.Fatalf("%s on kmip1: %+v", domain, st)
	}
	ids := onServer(srv, domain, st.KeyID)
	if len(ids) != 1 || st.RemoteKeyID != ids[0] {
		t.Fatalf("%s remote key id %q; the server holds %v named %s", domain, st.RemoteKeyID, ids, remoteName(domain, st.KeyID))
	}
	if files := e.keyFiles(domain); len(files) != 0 {
		t.Fatalf("%s key files %v while its MK is on kmip1", domain, files)
	}
	return st
}

// putGet writes and reads back one entry.
func putGet(t *testing.T, v *provider.Vault, name string, val []byte) {
	t.Helper()
	if _, err := v.Put(context.Background(), name, val, provider.Cond{}); err != nil {
		t.Fatalf("Put %s/%s: %v", v.Domain(), name, err)
	}
	got, _, err := v.Get(context.Background(), name)
	if err != nil || string(got) != string(val) {
		t.Fatalf("Get %s/%s = %x, %v; want %x", v.Domain(), name, got, err, val)
	}
}

// certOf parses the first certificate of a PEM file.
func certOf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(readPEM(t, path))
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hasAll reports whether s contains every one of subs.
func hasAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// retryNow moves the clock to domain's next retry and ticks.
func retryNow(t *testing.T, e *env, r *reg, domain string) {
	t.Helper()
	st := status(t, r, domain)
	if st.NextRetry == nil {
		t.Fatalf("%s has no retry time: %+v", domain, st)
	}
	r.Tick(e.clock.Set(st.NextRetry.Add(time.Second)))
}
