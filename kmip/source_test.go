package kmip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	kmipgo "github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"

	"github.com/kmd-project/kmd/kmip/kmiptestserver"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/provider/providertest"
)

func TestSource_Conformance(t *testing.T) {
	srv := kmiptestserver.Start(t)
	providertest.RunKeySource(t, func(t *testing.T) provider.KeySource {
		return newSource(t, testConfig(srv))
	})
}

// Some servers keep a destroyed object's metadata: Locate still finds it.
func TestSource_ConformanceKeepDestroyed(t *testing.T) {
	srv := kmiptestserver.Start(t, kmiptestserver.WithKeepDestroyed())
	providertest.RunKeySource(t, func(t *testing.T) provider.KeySource {
		return newSource(t, testConfig(srv))
	})
}

// The conformance suite at every KMIP version kmd speaks.
func TestSource_ConformanceAtEachKMIPVersion(t *testing.T) {
	for _, v := range kmipVersions {
		t.Run(v.String(), func(t *testing.T) {
			opts := []kmiptestserver.Option{kmiptestserver.WithKMIPVersions(v, kmipgo.V1_1)}
			if v == kmipgo.V1_0 {
				opts = append(opts, kmiptestserver.WithoutDiscoverVersions())
			}
			srv := kmiptestserver.Start(t, opts...)
			src := newSource(t, testConfig(srv))
			rep, err := src.Verify(t.Context())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if rep.KMIPVersion != v.String() {
				t.Fatalf("negotiated KMIP %s, want %s", rep.KMIPVersion, v)
			}
			providertest.RunKeySource(t, func(t *testing.T) provider.KeySource { return src })
		})
	}
}

func TestSource_CreateRecordsTheKeyOnTheServer(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k1")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := provider.KeyRef{Domain: "S3", ID: "k1", Location: "kmip1", RemoteID: ref.RemoteID}
	if ref != want || ref.RemoteID == "" {
		t.Fatalf("ref = %+v, want %+v with a RemoteID", ref, want)
	}
	if got := srv.Keys()[ref.RemoteID]; !bytes.Equal(got, m) {
		t.Fatalf("the server holds other material under %s than Create returned", ref.RemoteID)
	}
	if ids := srv.Lookup("kmd/1/S3/k1"); len(ids) != 1 || ids[0] != ref.RemoteID {
		t.Fatalf("keys named kmd/1/S3/k1 on the server: %v, want [%s]", ids, ref.RemoteID)
	}
	if st, _ := srv.State(ref.RemoteID); st != kmipgo.StateActive {
		t.Fatalf("state after Create = %v, want Active", st)
	}
}

// A crash after Create but before kmd recorded the RemoteID: a new process
// creating the same (domain, id) gets the same key, and the server holds
// one key of that name.
func TestSource_CreateIsIdempotentAcrossACrash(t *testing.T) {
	srv := kmiptestserver.Start(t)
	first := newSource(t, testConfig(srv))
	ref1, m1, err := first.Create(t.Context(), "SSO", "mk7")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	m1 = bytes.Clone(m1)
	_ = first.Close() // the crash

	second := newSource(t, testConfig(srv))
	ref2, m2, err := second.Create(t.Context(), "SSO", "mk7")
	if err != nil {
		t.Fatalf("Create after the crash: %v", err)
	}
	if ref2 != ref1 {
		t.Errorf("ref after the crash = %+v, want %+v", ref2, ref1)
	}
	if !bytes.Equal(m1, m2) {
		t.Errorf("Create after the crash returned other material")
	}
	if ids := srv.Lookup(KeyName(1, "SSO", "mk7")); len(ids) != 1 {
		t.Errorf("the server holds %d keys named %s, want 1", len(ids), KeyName(1, "SSO", "mk7"))
	}
	if n := srv.Count("Create"); n != 1 {
		t.Errorf("the server got %d Create requests, want 1", n)
	}
}

// A crash between KMIP Create and Activate leaves a pre-active key: the
// next Create activates and returns it.
func TestSource_CreateActivatesAPreActiveLeftover(t *testing.T) {
	srv := kmiptestserver.Start(t)
	material := bytes.Repeat([]byte{0x5a}, 32)
	rid := srv.Put(kmiptestserver.Object{Name: KeyName(1, "S3", "k"), State: kmipgo.StatePreActive, Material: material})
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if ref.RemoteID != rid || !bytes.Equal(m, material) {
		t.Fatalf("Create returned %s (same material: %v), want the leftover %s", ref.RemoteID, bytes.Equal(m, material), rid)
	}
	if st, _ := srv.State(rid); st != kmipgo.StateActive {
		t.Fatalf("leftover state = %v, want Active", st)
	}
	if n := srv.Count("Create"); n != 0 {
		t.Fatalf("%d Create requests, want 0", n)
	}
}

// A revoked key of the same name is on its way out (a Destroy that did not
// finish): Create makes a new one rather than resurrect it.
func TestSource_CreateIgnoresRevokedAndOtherObjects(t *testing.T) {
	srv := kmiptestserver.Start(t)
	name := KeyName(1, "S3", "k")
	revoked := srv.Put(kmiptestserver.Object{Name: name, State: kmipgo.StateDeactivated, Material: bytes.Repeat([]byte{1}, 32)})
	secret := srv.Put(kmiptestserver.Object{Name: name, Type: kmipgo.ObjectTypeSecretData, Material: bytes.Repeat([]byte{2}, 32)})
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if ref.RemoteID == revoked || ref.RemoteID == secret {
		t.Fatalf("Create reused object %s, which is not a usable key", ref.RemoteID)
	}
}

func TestSource_CreateRefusesACorruptLeftover(t *testing.T) {
	srv := kmiptestserver.Start(t)
	srv.Put(kmiptestserver.Object{Name: KeyName(1, "S3", "k"), Material: bytes.Repeat([]byte{3}, 16)})
	src := newSource(t, testConfig(srv))
	_, _, err := src.Create(t.Context(), "S3", "k")
	if !errors.Is(err, provider.ErrKeyCorrupt) {
		t.Fatalf("Create over a 16-byte key: %v, want ErrKeyCorrupt", err)
	}
	if n := srv.Count("Create"); n != 0 {
		t.Fatalf("Create made a new key over a damaged one (%d Create requests)", n)
	}
	noLeak(t, srv, nil, err)
}

func TestSource_LoadByNameWithoutRemoteID(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	ref.RemoteID = ""
	got, err := src.Load(t.Context(), ref)
	if err != nil || !bytes.Equal(got, m) {
		t.Fatalf("Load by name: %v (same material: %v)", err, bytes.Equal(got, m))
	}
}

// Another node's key of the same domain and ID (cluster domains) loads.
func TestSource_LoadKeyOfAnotherNode(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.NodeID = 2
	ref, m, err := newSource(t, cfg).Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create on node 2: %v", err)
	}
	got, err := newSource(t, testConfig(srv)).Load(t.Context(), ref)
	if err != nil || !bytes.Equal(got, m) {
		t.Fatalf("Load on node 1: %v (same material: %v)", err, bytes.Equal(got, m))
	}
}

func TestSource_LoadRefusesWhatIsNotTheKey(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	name := KeyName(1, "S3", "k")
	cases := []struct {
		name    string
		obj     kmiptestserver.Object
		want    []error
		message string
	}{
		{"short key", kmiptestserver.Object{Name: name, Material: bytes.Repeat([]byte{0xa1}, 16)}, []error{provider.ErrKeyCorrupt}, "16 bytes"},
		{"long key", kmiptestserver.Object{Name: name, Material: bytes.Repeat([]byte{0xa2}, 64)}, []error{provider.ErrKeyCorrupt}, "64 bytes"},
		{"secret data", kmiptestserver.Object{Name: name, Type: kmipgo.ObjectTypeSecretData, Material: bytes.Repeat([]byte{0xa3}, 32)}, []error{provider.ErrKeyCorrupt}, "SecretData"},
		{"another key", kmiptestserver.Object{Name: KeyName(1, "S3", "other"), Material: bytes.Repeat([]byte{0xa4}, 32)}, []error{provider.ErrKeyCorrupt, ErrWrongObject}, `named "kmd/1/S3/other"`},
		{"a foreign key", kmiptestserver.Object{Name: "payroll-2024", Material: bytes.Repeat([]byte{0xa5}, 32)}, []error{provider.ErrKeyCorrupt, ErrWrongObject}, `named "payroll-2024"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rid := srv.Put(c.obj)
			_, err := src.Load(t.Context(), provider.KeyRef{Domain: "S3", ID: "k", Location: "kmip1", RemoteID: rid})
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("Load: %v, want an error wrapping %v", err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), c.message) {
				t.Errorf("Load: %q does not say %q", err, c.message)
			}
			noLeak(t, srv, [][]byte{c.obj.Material}, err)
		})
	}
}

func TestSource_LoadMissing(t *testing.T) {
	srv := kmiptestserver.Start(t, kmiptestserver.WithKeepDestroyed())
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	m = bytes.Clone(m)
	if err := src.Destroy(t.Context(), ref); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	for _, ref := range []provider.KeyRef{
		ref, // destroyed, metadata kept
		{Domain: "S3", ID: "k", Location: "kmip1", RemoteID: "999"}, // never existed
		{Domain: "S3", ID: "k", Location: "kmip1"},                  // by name
	} {
		_, err := src.Load(t.Context(), ref)
		if !errors.Is(err, provider.ErrKeyNotFound) {
			t.Errorf("Load(%+v): %v, want ErrKeyNotFound", ref, err)
		}
		noLeak(t, srv, [][]byte{m}, err)
	}
}

func TestSource_RefsOfAnotherLocationAreRefused(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	ref.Location = "kmip2"
	if _, err := src.Load(t.Context(), ref); err == nil || !strings.Contains(err.Error(), `"kmip2"`) {
		t.Errorf("Load of a ref on kmip2: %v, want a refusal naming kmip2", err)
	}
	if err := src.Destroy(t.Context(), ref); err == nil {
		t.Errorf("Destroy of a ref on kmip2 succeeded")
	}
	if len(srv.Keys()) != 1 {
		t.Errorf("the key is gone")
	}
}

func TestSource_InvalidNamesAreRefusedBeforeAnyRequest(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	for _, c := range []struct{ domain, id string }{
		{"", "k"}, {"S3", ""}, {"a/b", "k"}, {"S3", "k/../x"}, {"S3", "k 1"}, {"S3", strings.Repeat("k", 129)}, {"S3", "ké"},
	} {
		if _, _, err := src.Create(t.Context(), c.domain, c.id); err == nil {
			t.Errorf("Create(%q, %q) succeeded", c.domain, c.id)
		}
		if _, err := src.Load(t.Context(), provider.KeyRef{Domain: c.domain, ID: c.id}); err == nil {
			t.Errorf("Load(%q, %q) succeeded", c.domain, c.id)
		}
	}
	if n := srv.Count("DiscoverVersions"); n != 0 {
		t.Errorf("%d connections made for invalid names", n)
	}
}

func TestSource_DestroyRemovesTheKey(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	keep, _, err := src.Create(t.Context(), "S3", "keep")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for i := range 2 {
		if err := src.Destroy(t.Context(), ref); err != nil {
			t.Fatalf("Destroy #%d: %v", i+1, err)
		}
	}
	keys := srv.Keys()
	if _, ok := keys[ref.RemoteID]; ok {
		t.Fatalf("key %s still on the server after Destroy", ref.RemoteID)
	}
	if _, ok := keys[keep.RemoteID]; !ok {
		t.Fatalf("Destroy removed another key")
	}
	if n := srv.Count("Revoke"); n != 1 {
		t.Errorf("%d Revoke requests, want 1", n)
	}
}

// Revoke of an object already revoked (a Destroy interrupted between its
// Revoke and its Destroy) does not stop the Destroy.
func TestSource_DestroyFinishesAnInterruptedDestroy(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	srv.FailOn("Destroy", errors.New("disk full"))
	err = src.Destroy(t.Context(), ref)
	if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "destroy") || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Destroy with Destroy failing: %v, want a server error naming destroy", err)
	}
	if st, _ := srv.State(ref.RemoteID); st != kmipgo.StateDeactivated {
		t.Fatalf("state after the failed Destroy = %v, want Deactivated", st)
	}
	srv.FailOn("Destroy", nil)
	if err := src.Destroy(t.Context(), ref); err != nil {
		t.Fatalf("Destroy of a revoked key: %v", err)
	}
	if _, ok := srv.Keys()[ref.RemoteID]; ok {
		t.Fatalf("the revoked key is still there")
	}
}

// When Revoke fails and the Destroy that follows fails too, both are told.
func TestSource_DestroyReportsAFailedRevoke(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	srv.FailOn("Revoke", kmipserver.Errorf(kmipgo.ResultReasonPermissionDenied, "not yours"))
	err = src.Destroy(t.Context(), ref)
	if err == nil || !strings.Contains(err.Error(), "after revoke") || !strings.Contains(err.Error(), "not yours") {
		t.Fatalf("Destroy: %v, want the Destroy error and the Revoke one", err)
	}
	noLeak(t, srv, [][]byte{m}, err)
}

func TestSource_DestroyWithoutRemoteIDDestroysEveryKeyOfTheName(t *testing.T) {
	srv := kmiptestserver.Start(t, kmiptestserver.WithKeepDestroyed())
	name := KeyName(1, "S3", "k")
	a := srv.Put(kmiptestserver.Object{Name: name, Material: bytes.Repeat([]byte{1}, 32)})
	b := srv.Put(kmiptestserver.Object{Name: name, State: kmipgo.StatePreActive, Material: bytes.Repeat([]byte{2}, 32)})
	c := srv.Put(kmiptestserver.Object{Name: name, State: kmipgo.StateDeactivated, Material: bytes.Repeat([]byte{3}, 32)})
	other := srv.Put(kmiptestserver.Object{Name: KeyName(1, "S3", "other"), Material: bytes.Repeat([]byte{4}, 32)})
	src := newSource(t, testConfig(srv))
	if err := src.Destroy(t.Context(), provider.KeyRef{Domain: "S3", ID: "k", Location: "kmip1"}); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	keys := srv.Keys()
	for _, id := range []string{a, b, c} {
		if _, ok := keys[id]; ok {
			t.Errorf("object %s named %s survived", id, name)
		}
	}
	if _, ok := keys[other]; !ok {
		t.Errorf("another key was destroyed")
	}
}

// A RemoteID that now names another object (the server reused
// identifiers): Destroy never touches it, and destroys the key by name.
func TestSource_DestroyNeverDestroysAnotherObject(t *testing.T) {
	srv := kmiptestserver.Start(t)
	foreign := srv.Put(kmiptestserver.Object{Name: "payroll", Material: bytes.Repeat([]byte{9}, 32)})
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	stale := ref
	stale.RemoteID = foreign
	if err := src.Destroy(t.Context(), stale); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	keys := srv.Keys()
	if _, ok := keys[foreign]; !ok {
		t.Fatalf("Destroy destroyed object %s, which is not kmd's", foreign)
	}
	if _, ok := keys[ref.RemoteID]; ok {
		t.Fatalf("Destroy left the key itself")
	}
}

func TestSource_ServerErrorsNameTheOperation(t *testing.T) {
	injected := errors.New("injected fault")
	cases := []struct {
		op     string // KMIP operation that fails
		method string // Source method that meets it
		word   string // what the error must say
	}{
		{"Locate", "create", "locate"},
		{"GetAttributes", "create", "get attributes"},
		{"Create", "create", "answered create"},
		{"Activate", "create", "activate"},
		{"Get", "create", "answered get"},
		{"Get", "load", "answered get"},
		{"GetAttributes", "load", "get attributes"},
		{"Locate", "destroy", "locate"},
		{"GetAttributes", "destroy", "get attributes"},
		{"Destroy", "destroy", "answered destroy"},
	}
	for _, c := range cases {
		t.Run(c.method+"/"+c.op, func(t *testing.T) {
			srv := kmiptestserver.Start(t)
			src := newSource(t, testConfig(srv))
			ctx := t.Context()
			existing, m, err := src.Create(ctx, "S3", "existing")
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			m = bytes.Clone(m)
			srv.FailOn(c.op, injected)
			switch c.method {
			case "create":
				if c.op == "GetAttributes" {
					// Asked only of a key found by name.
					_, _, err = src.Create(ctx, "S3", "existing")
					break
				}
				_, _, err = src.Create(ctx, "S3", "new")
				if c.op == "Get" || c.op == "Activate" {
					// The key exists: a retry reuses it.
					srv.FailOn(c.op, nil)
					if _, _, err2 := src.Create(ctx, "S3", "new"); err2 != nil {
						t.Errorf("Create again once the fault is gone: %v", err2)
					}
					if n := len(srv.Lookup(KeyName(1, "S3", "new"))); n != 1 {
						t.Errorf("%d keys named kmd/1/S3/new, want 1", n)
					}
				}
			case "load":
				_, err = src.Load(ctx, existing)
			case "destroy":
				if c.op == "Locate" {
					existing.RemoteID = ""
				}
				err = src.Destroy(ctx, existing)
			}
			if !errors.Is(err, ErrServer) {
				t.Fatalf("%s with %s failing: %v, want ErrServer", c.method, c.op, err)
			}
			var se *ServerError
			if !errors.As(err, &se) || se.Reason != kmipgo.ResultReasonGeneralFailure {
				t.Errorf("error %v is not a ServerError with reason GeneralFailure", err)
			}
			msg := err.Error()
			for _, w := range []string{"kmip " + c.method + " S3/", c.word, "kmip1", "injected fault"} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if errors.Is(err, provider.ErrKeyNotFound) || errors.Is(err, provider.ErrKeyUnavailable) {
				t.Errorf("a server error passes for a missing or unavailable key: %v", err)
			}
			noLeak(t, srv, [][]byte{m}, err)
		})
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// silentAddr accepts TCP connections and never says a word.
func silentAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestSource_FailsOverToTheNextAddress(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.Addrs = []string{closedAddr(t), srv.Addr}
	src := newSource(t, cfg)
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create with the first address closed: %v", err)
	}
	if got := srv.Keys()[ref.RemoteID]; !bytes.Equal(got, m) {
		t.Fatalf("the key is not on the second address's server")
	}
	rep, err := src.Verify(t.Context())
	if err != nil || rep.Addr != srv.Addr {
		t.Fatalf("Verify: %v, answered by %q, want %s", err, rep.Addr, srv.Addr)
	}
}

// The server in use dies: the next call fails over to the next address
// (another server of the same cluster) without an error.
func TestSource_FailsOverWhenTheConnectedServerDies(t *testing.T) {
	a := kmiptestserver.Start(t)
	b := kmiptestserver.Start(t, kmiptestserver.WithCertsFrom(a))
	cfg := testConfig(a)
	cfg.Addrs = []string{a.Addr, b.Addr}
	src := newSource(t, cfg)
	if _, _, err := src.Create(t.Context(), "S3", "k1"); err != nil {
		t.Fatalf("Create: %v", err)
	}
	a.Stop()
	ref, _, err := src.Create(t.Context(), "S3", "k2")
	if err != nil {
		t.Fatalf("Create after the server in use died: %v", err)
	}
	if _, ok := b.Keys()[ref.RemoteID]; !ok || len(b.Keys()) != 1 {
		t.Fatalf("the key is not on the second server")
	}
	b.Stop()
	_, _, err = src.Create(t.Context(), "S3", "k3")
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), a.Addr) || !strings.Contains(err.Error(), b.Addr) {
		t.Fatalf("Create with both servers down: %v, want ErrUnreachable naming both addresses", err)
	}
}

// A restarted server (same address, same keys): the next call reconnects
// by itself.
func TestSource_ReconnectsAfterARestart(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	m = bytes.Clone(m)
	srv.Restart()
	got, err := src.Load(t.Context(), ref)
	if err != nil {
		t.Fatalf("Load after a restart: %v", err)
	}
	if !bytes.Equal(got, m) {
		t.Fatalf("Load after a restart returned other material")
	}
}

func TestSource_RefusedConnectionIsUnreachable(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.Addrs = []string{closedAddr(t)}
	cfg.ConnectTimeout = 2 * time.Second
	src := newSource(t, cfg)
	start := time.Now()
	_, _, err := src.Create(t.Context(), "S3", "k")
	if d := time.Since(start); d > cfg.ConnectTimeout+time.Second {
		t.Errorf("took %s to give up on a refused connection", d)
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Fatalf("Create: %v, want ErrUnreachable and ErrKeyUnavailable", err)
	}
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Server != "kmip1" || len(ue.Errs) != 1 {
		t.Fatalf("error %v: want an UnreachableError for kmip1 with one cause", err)
	}
	for _, w := range []string{"kmip server kmip1 unreachable", cfg.Addrs[0], "connection refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestSource_RefuseConnections(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	m = bytes.Clone(m)
	srv.RefuseConnections(true)
	_, err = src.Load(t.Context(), ref)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Load while the server drops connections: %v, want ErrUnreachable", err)
	}
	noLeak(t, srv, [][]byte{m}, err)
	srv.RefuseConnections(false)
	if _, err := src.Load(t.Context(), ref); err != nil {
		t.Fatalf("Load once the server accepts again: %v", err)
	}
}

func TestSource_HangingServerTimesOut(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.OpTimeout = 300 * time.Millisecond
	src := newSource(t, cfg)
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	m = bytes.Clone(m)
	srv.Hang("Get", 10*time.Second)
	start := time.Now()
	_, err = src.Load(t.Context(), ref)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Load against a hanging server took %s", d)
	}
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, provider.ErrKeyUnavailable) {
		t.Fatalf("Load: %v, want ErrTimeout, DeadlineExceeded and ErrKeyUnavailable", err)
	}
	for _, w := range []string{"kmip load S3/k", "kmip1", "get", "300ms"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	noLeak(t, srv, [][]byte{m}, err)
	srv.Hang("Get", 0)
	if got, err := src.Load(t.Context(), ref); err != nil || !bytes.Equal(got, m) {
		t.Fatalf("Load once the server answers again: %v", err)
	}
}

// A server that accepts TCP and then says nothing, or that completes TLS
// and never answers the version negotiation: ConnectTimeout bounds both.
func TestSource_HangingConnectTimesOut(t *testing.T) {
	t.Run("silent after TCP", func(t *testing.T) {
		srv := kmiptestserver.Start(t)
		cfg := testConfig(srv)
		cfg.Addrs = []string{silentAddr(t)}
		cfg.ConnectTimeout = 300 * time.Millisecond
		src := newSource(t, cfg)
		start := time.Now()
		_, _, err := src.Create(t.Context(), "S3", "k")
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %s", d)
		}
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "tls handshake") {
			t.Fatalf("Create: %v, want ErrUnreachable from the TLS handshake", err)
		}
	})
	t.Run("silent after TLS", func(t *testing.T) {
		srv := kmiptestserver.Start(t)
		srv.Hang("DiscoverVersions", 10*time.Second)
		cfg := testConfig(srv)
		cfg.ConnectTimeout = 300 * time.Millisecond
		src := newSource(t, cfg)
		start := time.Now()
		_, _, err := src.Create(t.Context(), "S3", "k")
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %s", d)
		}
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no answer within 300ms") {
			t.Fatalf("Create: %v, want ErrUnreachable: no answer", err)
		}
	})
}

func TestSource_CallerContext(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, m, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	m = bytes.Clone(m)

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = src.Load(canceled, ref)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a canceled context: %v", err)
	}

	// Canceled while waiting for a hanging server: the caller's
	// cancellation, not a timeout.
	srv.Hang("Get", 5*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = src.Load(ctx, ref)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTimeout) {
		t.Errorf("Load with the caller's deadline: %v, want the caller's DeadlineExceeded", err)
	}
	noLeak(t, srv, [][]byte{m}, err)
}

func TestSource_Close(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// Close ends an operation under way.
	srv.Hang("Get", 5*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := src.Load(t.Context(), ref)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Load cut by Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("Close did not end the Load under way")
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := src.Create(t.Context(), "S3", "k2"); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close: %v, want ErrClosed", err)
	}
	if _, err := src.Verify(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Verify after Close: %v, want ErrClosed", err)
	}
}

func TestSource_DestroyByNameFailures(t *testing.T) {
	for _, op := range []string{"GetAttributes", "Revoke", "Destroy"} {
		t.Run(op, func(t *testing.T) {
			srv := kmiptestserver.Start(t)
			src := newSource(t, testConfig(srv))
			ref, m, err := src.Create(t.Context(), "S3", "k")
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			m = bytes.Clone(m)
			ref.RemoteID = ""
			srv.FailOn(op, errors.New("injected"))
			err = src.Destroy(t.Context(), ref)
			if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "kmip destroy S3/k") {
				t.Fatalf("Destroy by name with %s failing: %v, want a server error", op, err)
			}
			noLeak(t, srv, [][]byte{m}, err)
			srv.FailOn(op, nil)
			if err := src.Destroy(t.Context(), ref); err != nil || len(srv.Keys()) != 0 {
				t.Fatalf("Destroy once the fault is gone: %v, %d keys left", err, len(srv.Keys()))
			}
		})
	}
}

// An object without a Name at the ref's RemoteID cannot be told apart: it
// is taken for the key.
func TestSource_UnnamedObjectAtRemoteID(t *testing.T) {
	srv := kmiptestserver.Start(t)
	material := bytes.Repeat([]byte{0x42}, 32)
	rid := srv.Put(kmiptestserver.Object{Material: material})
	src := newSource(t, testConfig(srv))
	ref := provider.KeyRef{Domain: "S3", ID: "k", Location: "kmip1", RemoteID: rid}
	if got, err := src.Load(t.Context(), ref); err != nil || !bytes.Equal(got, material) {
		t.Fatalf("Load: %v", err)
	}
	if err := src.Destroy(t.Context(), ref); err != nil || len(srv.Keys()) != 0 {
		t.Fatalf("Destroy: %v, %d keys left", err, len(srv.Keys()))
	}
}

func TestSource_NegotiationRefused(t *testing.T) {
	srv := kmiptestserver.Start(t)
	srv.FailOn("DiscoverVersions", kmipserver.Errorf(kmipgo.ResultReasonPermissionDenied, "who are you"))
	_, _, err := newSource(t, testConfig(srv)).Create(t.Context(), "S3", "k")
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "kmip version negotiation with "+srv.Addr+": DiscoverVersions refused: PermissionDenied who are you") {
		t.Fatalf("Create: %v", err)
	}
	// A server that speaks none of 1.0-1.4.
	v2 := kmiptestserver.Start(t, kmiptestserver.WithKMIPVersions(kmipgo.V2_0))
	_, _, err = newSource(t, testConfig(v2)).Create(t.Context(), "S3", "k")
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "kmip version negotiation") {
		t.Fatalf("Create against a KMIP 2.0 server: %v", err)
	}
}

// Close while callers are busy: every call ends, with a result or
// ErrClosed, and nothing races.
func TestSource_CloseWhileBusy(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Go(func() {
			for j := 0; ; j++ {
				var err error
				if j%2 == 0 {
					_, err = src.Load(t.Context(), ref)
				} else {
					_, _, err = src.Create(t.Context(), "S3", fmt.Sprintf("k%d-%d", i, j))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	src.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("a call cut by Close: %v, want ErrClosed", err)
		}
	}
}

// Callers queued behind a connection attempt that fails get its error at
// once rather than each waiting ConnectTimeout again.
func TestSource_QueuedCallersShareAFailedConnect(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.Addrs = []string{silentAddr(t)}
	cfg.ConnectTimeout = 400 * time.Millisecond
	src := newSource(t, cfg)
	const n = 6
	errs := make(chan error, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := src.Load(t.Context(), provider.KeyRef{Domain: "S3", ID: fmt.Sprint("k", i), Location: "kmip1"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	if d := time.Since(start); d > 2*cfg.ConnectTimeout+500*time.Millisecond {
		t.Errorf("%d queued callers took %s against a silent server (ConnectTimeout %s)", n, d, cfg.ConnectTimeout)
	}
	for err := range errs {
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("Load: %v, want ErrUnreachable", err)
		}
	}
	// A later call tries again.
	start = time.Now()
	if _, err := src.Load(t.Context(), provider.KeyRef{Domain: "S3", ID: "k", Location: "kmip1"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("later Load: %v", err)
	}
	if d := time.Since(start); d < cfg.ConnectTimeout {
		t.Errorf("a later call did not try to connect (%s)", d)
	}
}

// A caller's context bounds its wait for its turn, too.
func TestSource_ContextBoundsTheWaitForATurn(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	ref, _, err := src.Create(t.Context(), "S3", "k")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	srv.Hang("Get", 2*time.Second)
	go src.Load(t.Context(), ref) // holds the turn for 2s
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = src.Load(ctx, ref)
	if d := time.Since(start); d > time.Second {
		t.Errorf("waited %s for a turn with a 200ms context", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Load: %v, want DeadlineExceeded", err)
	}
}
