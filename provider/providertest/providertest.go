// Package providertest holds the conformance suites that every implementation
// of a provider interface must pass, whatever it talks to: the local key
// files now, a KMIP server later. An implementation's own tests call them:
//
//	func TestSource_Conformance(t *testing.T) {
//		providertest.RunKeySource(t, func(t *testing.T) provider.KeySource { ... })
//	}
package providertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kmd-project/kmd/provider"
)

// RunKeySource checks the provider.KeySource contract. newSource returns a
// source for one subtest; it may share state with other calls (a KMIP
// server, say): every subtest uses domains and IDs of its own.
func RunKeySource(t *testing.T, newSource func(t *testing.T) provider.KeySource) {
	t.Helper()

	t.Run("CreateReturnsKeyAndRef", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		domain, id := NewName("D"), NewName("k")
		ref, m, err := src.Create(ctx, domain, id)
		if err != nil {
			t.Fatalf("Create(%s, %s): %v", domain, id, err)
		}
		if len(m) != provider.KeySize {
			t.Fatalf("Create returned %d bytes of material, want %d", len(m), provider.KeySize)
		}
		if bytes.Equal(m, make([]byte, provider.KeySize)) {
			t.Errorf("Create returned all-zero material")
		}
		if src.Location() == "" {
			t.Errorf("Location() is empty")
		}
		if ref.Domain != domain || ref.ID != id || ref.Location != src.Location() {
			t.Errorf("Create ref = %+v, want Domain %q ID %q Location %q", ref, domain, id, src.Location())
		}
	})

	t.Run("LoadReturnsCreatedMaterial", func(t *testing.T) {
		src := newSource(t)
		ref, m := mustCreate(t, src, NewName("D"), NewName("k"))
		want := bytes.Clone(m)
		got := mustLoad(t, src, ref)
		if !bytes.Equal(got, want) {
			t.Fatalf("Load returned other material than Create")
		}
		// Callers wipe material once they have built their cipher: that
		// must not reach into the source.
		clear(m)
		clear(got)
		if again := mustLoad(t, src, ref); !bytes.Equal(again, want) {
			t.Fatalf("Load after the caller cleared an earlier result returned other material: the source hands out a shared slice")
		}
	})

	t.Run("CreateIsIdempotent", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		domain, id := NewName("D"), NewName("k")
		ref1, m1 := mustCreate(t, src, domain, id)
		m1 = bytes.Clone(m1)
		ref2, m2, err := src.Create(ctx, domain, id)
		checkErrs(t, [][]byte{m1}, err)
		if err != nil {
			t.Fatalf("second Create(%s, %s): %v", domain, id, err)
		}
		if !bytes.Equal(m1, m2) {
			t.Fatalf("second Create of the same (domain, id) returned new material: a crash between Create and recording the ref would leave two keys")
		}
		if ref1 != ref2 {
			t.Errorf("second Create ref = %+v, want %+v", ref2, ref1)
		}
		if got := mustLoad(t, src, ref2); !bytes.Equal(got, m1) {
			t.Errorf("Load after the second Create returned other material")
		}
	})

	t.Run("DistinctIDsHaveDistinctMaterial", func(t *testing.T) {
		src := newSource(t)
		domain := NewName("D")
		seen := map[string]string{}
		for range 4 {
			id := NewName("k")
			_, m := mustCreate(t, src, domain, id)
			if other, dup := seen[string(m)]; dup {
				t.Fatalf("ids %s and %s got the same material", other, id)
			}
			seen[string(m)] = id
		}
	})

	t.Run("LoadUnknownIsKeyNotFound", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		domain := NewName("D")
		_, m := mustCreate(t, src, domain, NewName("k"))
		cases := []struct{ name, domain string }{
			{"in a domain with keys", domain},
			{"in an unused domain", NewName("D")},
		}
		for _, c := range cases {
			ref := provider.KeyRef{Domain: c.domain, ID: NewName("k"), Location: src.Location()}
			got, err := src.Load(ctx, ref)
			checkErrs(t, [][]byte{m}, err)
			if !errors.Is(err, provider.ErrKeyNotFound) {
				t.Errorf("Load of an unknown id %s: got (%d bytes, %v), want an error wrapping ErrKeyNotFound", c.name, len(got), err)
			}
		}
	})

	t.Run("DestroyThenLoadIsKeyNotFound", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		domain, id := NewName("D"), NewName("k")
		ref, m := mustCreate(t, src, domain, id)
		old := bytes.Clone(m)
		keep, keepM := mustCreate(t, src, domain, NewName("k"))
		keepM = bytes.Clone(keepM)
		if err := src.Destroy(ctx, ref); err != nil {
			checkErrs(t, [][]byte{old, keepM}, err)
			t.Fatalf("Destroy: %v", err)
		}
		_, err := src.Load(ctx, ref)
		checkErrs(t, [][]byte{old, keepM}, err)
		if !errors.Is(err, provider.ErrKeyNotFound) {
			t.Fatalf("Load after Destroy: %v, want an error wrapping ErrKeyNotFound", err)
		}
		if got := mustLoad(t, src, keep); !bytes.Equal(got, keepM) {
			t.Errorf("Destroy of one key changed another key of the same domain")
		}
		// Destroyed is for good: the same (domain, id) never brings the
		// old material back.
		_, m2, err := src.Create(ctx, domain, id)
		checkErrs(t, [][]byte{old, keepM}, err)
		if err != nil {
			t.Fatalf("Create after Destroy: %v", err)
		}
		if bytes.Equal(m2, old) {
			t.Fatalf("Create after Destroy returned the destroyed material")
		}
	})

	t.Run("DestroyTwiceIsNil", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		ref, m := mustCreate(t, src, NewName("D"), NewName("k"))
		for i := range 2 {
			err := src.Destroy(ctx, ref)
			checkErrs(t, [][]byte{m}, err)
			if err != nil {
				t.Fatalf("Destroy #%d: %v, want nil", i+1, err)
			}
		}
	})

	// A retried DESTROY step may find the key, or even the whole domain's
	// keys, already gone: that is success, not an error that blocks the
	// rekey for ever.
	t.Run("DestroyNeverCreatedIsNil", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		used := NewName("D")
		_, m := mustCreate(t, src, used, NewName("k"))
		cases := []struct{ name, domain string }{
			{"in a domain with keys", used},
			{"in an unused domain", NewName("D")},
		}
		for _, c := range cases {
			ref := provider.KeyRef{Domain: c.domain, ID: NewName("k"), Location: src.Location()}
			err := src.Destroy(ctx, ref)
			checkErrs(t, [][]byte{m}, err)
			if err != nil {
				t.Errorf("Destroy of a never-created key %s: %v, want nil", c.name, err)
			}
		}
	})

	t.Run("DomainsAreIndependent", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		d1, d2, id := NewName("D"), NewName("D"), NewName("k")
		ref1, m1 := mustCreate(t, src, d1, id)
		m1 = bytes.Clone(m1)
		ref2, m2 := mustCreate(t, src, d2, id)
		m2 = bytes.Clone(m2)
		if bytes.Equal(m1, m2) {
			t.Fatalf("the same id in two domains got the same material")
		}
		if ref2.Domain != d2 {
			t.Fatalf("ref of the second domain = %+v", ref2)
		}
		if err := src.Destroy(ctx, ref1); err != nil {
			checkErrs(t, [][]byte{m1, m2}, err)
			t.Fatalf("Destroy %s/%s: %v", d1, id, err)
		}
		if got := mustLoad(t, src, ref2); !bytes.Equal(got, m2) {
			t.Fatalf("Destroy in domain %s changed the key of the same id in domain %s", d1, d2)
		}
		_, err := src.Load(ctx, ref1)
		checkErrs(t, [][]byte{m1, m2}, err)
		if !errors.Is(err, provider.ErrKeyNotFound) {
			t.Fatalf("Load of the destroyed key: %v, want ErrKeyNotFound", err)
		}
	})

	t.Run("ErrorsNeverContainMaterial", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		d1, d2, id := NewName("D"), NewName("D"), NewName("k")
		var ms [][]byte
		var refs []provider.KeyRef
		for _, d := range []string{d1, d2} {
			ref, m := mustCreate(t, src, d, id)
			refs, ms = append(refs, ref), append(ms, bytes.Clone(m))
		}
		var errs []error
		collect := func(err error) {
			if err != nil {
				errs = append(errs, err)
			}
		}
		// Every failure a caller can provoke through the interface.
		_, err := src.Load(ctx, provider.KeyRef{Domain: d1, ID: NewName("k"), Location: src.Location()})
		collect(err)
		_, err = src.Load(ctx, provider.KeyRef{Domain: NewName("D"), ID: id, Location: src.Location()})
		collect(err)
		collect(src.Destroy(ctx, refs[0]))
		_, err = src.Load(ctx, refs[0])
		collect(err)
		collect(src.Destroy(ctx, refs[0]))
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		_, _, err = src.Create(canceled, d2, id)
		collect(err)
		_, err = src.Load(canceled, refs[1])
		collect(err)
		collect(src.Destroy(canceled, provider.KeyRef{Domain: d2, ID: NewName("k"), Location: src.Location()}))
		if len(errs) < 2 {
			t.Fatalf("only %d errors produced; the unknown-key loads must fail", len(errs))
		}
		checkErrs(t, ms, errs...)
	})

	t.Run("ConcurrentCreate", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		domain := NewName("D")
		const n = 8
		ids := make([]string, n)
		for i := range ids {
			ids[i] = NewName("k")
		}
		refs := make([]provider.KeyRef, n)
		ms := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				refs[i], ms[i], errs[i] = src.Create(ctx, domain, ids[i])
			})
		}
		wg.Wait()
		seen := map[string]int{}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("concurrent Create %s: %v", ids[i], errs[i])
			}
			if j, dup := seen[string(ms[i])]; dup {
				t.Fatalf("concurrent Creates %s and %s returned the same material", ids[j], ids[i])
			}
			seen[string(ms[i])] = i
		}
		// Concurrent loads of what was just created.
		got := make([][]byte, n)
		for i := range n {
			wg.Go(func() { got[i], errs[i] = src.Load(ctx, refs[i]) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Load %s: %v", ids[i], errs[i])
			}
			if !bytes.Equal(got[i], ms[i]) {
				t.Errorf("Load %s after concurrent Creates returned other material", ids[i])
			}
		}
	})

	// Create is idempotent even when callers race: every one of them gets
	// the material that stays, never one that another Create overwrote.
	t.Run("ConcurrentCreateOfOneIDAgrees", func(t *testing.T) {
		src, ctx := newSource(t), t.Context()
		domain := NewName("D")
		const n, rounds = 8, 10
		for range rounds {
			id := NewName("k")
			ms := make([][]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { _, ms[i], errs[i] = src.Create(ctx, domain, id) })
			}
			wg.Wait()
			kept := mustLoad(t, src, provider.KeyRef{Domain: domain, ID: id, Location: src.Location()})
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("concurrent Create of %s: %v", id, errs[i])
				}
				if !bytes.Equal(ms[i], kept) {
					t.Fatalf("%d concurrent Creates of %s: one returned material that is not the key kept; whatever it seals is lost", n, id)
				}
			}
		}
	})
}

// NewName returns prefix followed by 16 random hex digits: a domain or key
// ID that no other test uses, valid for every key source.
func NewName(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func mustCreate(t *testing.T, src provider.KeySource, domain, id string) (provider.KeyRef, []byte) {
	t.Helper()
	ref, m, err := src.Create(t.Context(), domain, id)
	if err != nil {
		t.Fatalf("Create(%s, %s): %v", domain, id, err)
	}
	if len(m) != provider.KeySize {
		t.Fatalf("Create(%s, %s) returned %d bytes of material, want %d", domain, id, len(m), provider.KeySize)
	}
	return ref, m
}

func mustLoad(t *testing.T, src provider.KeySource, ref provider.KeyRef) []byte {
	t.Helper()
	m, err := src.Load(t.Context(), ref)
	if err != nil {
		t.Fatalf("Load(%+v): %v", ref, err)
	}
	return m
}

// checkErrs fails t if any error's text holds any of the materials.
func checkErrs(t *testing.T, materials [][]byte, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			for _, m := range materials {
				if how := Leaks(text, m); how != "" {
					t.Errorf("error %q contains key material (%s)", err, how)
				}
			}
		}
	}
}

// Leaks reports how s reveals material, or "" if it does not: raw, in hex
// (either case), base64, fmt's decimal list, or any 8-byte piece of it raw
// or in hex.
func Leaks(s string, material []byte) string {
	if len(material) == 0 {
		return ""
	}
	lower := strings.ToLower(s)
	whole := map[string]string{
		"raw":            string(material),
		"hex":            hex.EncodeToString(material),
		"base64":         base64.StdEncoding.EncodeToString(material),
		"base64url":      base64.RawURLEncoding.EncodeToString(material),
		"decimal list":   fmt.Sprint(material),
		"Go byte syntax": fmt.Sprintf("%#v", material),
	}
	for how, enc := range whole {
		if strings.Contains(s, enc) || (how == "hex" && strings.Contains(lower, enc)) {
			return how
		}
	}
	const piece = 8
	for i := 0; i+piece <= len(material); i++ {
		p := material[i : i+piece]
		if strings.Contains(s, string(p)) {
			return fmt.Sprintf("raw bytes %d-%d", i, i+piece)
		}
		if strings.Contains(lower, hex.EncodeToString(p)) {
			return fmt.Sprintf("hex of bytes %d-%d", i, i+piece)
		}
	}
	return ""
}
