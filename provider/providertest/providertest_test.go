package providertest_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/provider/providertest"
)

// memSource is an in-memory KeySource. With a fault set it breaks one rule of
// the contract, so that we can see the suite catch it.
type memSource struct {
	fault string

	mu   sync.Mutex
	keys map[provider.KeyRef][]byte
}

var _ provider.KeySource = (*memSource)(nil)

func newMem(fault string) *memSource {
	return &memSource{fault: fault, keys: map[provider.KeyRef][]byte{}}
}

func (s *memSource) Location() string { return "mem" }

func (s *memSource) ref(domain, id string) provider.KeyRef {
	return provider.KeyRef{Domain: domain, ID: id, Location: s.Location()}
}

func (s *memSource) Create(_ context.Context, domain, id string) (provider.KeyRef, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := s.ref(domain, id)
	if s.fault == "domainless" {
		ref.Domain = ""
	}
	if m, ok := s.keys[ref]; ok && s.fault != "not-idempotent" {
		return ref, bytes.Clone(m), nil
	}
	m, err := provider.GenerateKeyMaterial()
	if err != nil {
		return provider.KeyRef{}, nil, err
	}
	if s.fault == "constant" {
		m = bytes.Repeat([]byte{7}, provider.KeySize)
	}
	s.keys[ref] = m
	return s.ref(domain, id), bytes.Clone(m), nil
}

func (s *memSource) Load(_ context.Context, ref provider.KeyRef) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault == "domainless" {
		ref.Domain = ""
	}
	m, ok := s.keys[ref]
	if !ok {
		if s.fault == "leaky" {
			var all []string
			for _, m := range s.keys {
				all = append(all, hex.EncodeToString(m))
			}
			return nil, fmt.Errorf("key %s not found among %s: %w", ref.ID, strings.Join(all, ","), provider.ErrKeyNotFound)
		}
		if s.fault == "plain-not-found" {
			return nil, fmt.Errorf("key %s not found", ref.ID)
		}
		return nil, fmt.Errorf("key %s/%s: %w", ref.Domain, ref.ID, provider.ErrKeyNotFound)
	}
	if s.fault == "shared-slice" {
		return m, nil
	}
	return bytes.Clone(m), nil
}

func (s *memSource) Destroy(_ context.Context, ref provider.KeyRef) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault == "domainless" {
		ref.Domain = ""
	}
	if _, ok := s.keys[ref]; !ok && s.fault == "destroy-missing-fails" {
		return fmt.Errorf("destroy %s: %w", ref.ID, provider.ErrKeyNotFound)
	}
	if s.fault != "destroy-noop" {
		delete(s.keys, ref)
	}
	return nil
}

func TestRunKeySource_PassesCorrectSource(t *testing.T) {
	providertest.RunKeySource(t, func(*testing.T) provider.KeySource { return newMem("") })
}

// TestRunKeySource_CatchesBrokenSources runs the suite in a child process
// against sources that each break one rule, and checks that the suite fails
// in the subtest that owns that rule.
func TestRunKeySource_CatchesBrokenSources(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	cases := []struct {
		fault   string
		failing []string // subtests that must fail
	}{
		{"not-idempotent", []string{"CreateIsIdempotent", "ConcurrentCreateOfOneIDAgrees"}},
		{"constant", []string{"DistinctIDsHaveDistinctMaterial", "DomainsAreIndependent", "ConcurrentCreate"}},
		{"plain-not-found", []string{"LoadUnknownIsKeyNotFound", "DestroyThenLoadIsKeyNotFound"}},
		{"leaky", []string{"ErrorsNeverContainMaterial", "LoadUnknownIsKeyNotFound"}},
		{"shared-slice", []string{"LoadReturnsCreatedMaterial"}},
		{"destroy-missing-fails", []string{"DestroyTwiceIsNil", "DestroyNeverCreatedIsNil"}},
		{"destroy-noop", []string{"DestroyThenLoadIsKeyNotFound", "DomainsAreIndependent"}},
		{"domainless", []string{"DomainsAreIndependent"}},
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.fault, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestBrokenSourceChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "PROVIDERTEST_FAULT="+c.fault)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a source with fault %q:\n%s", c.fault, out)
			}
			for _, name := range c.failing {
				if want := "--- FAIL: TestBrokenSourceChild/" + name + " "; !bytes.Contains(out, []byte(want)) {
					t.Errorf("fault %q: subtest %s did not fail:\n%s", c.fault, name, out)
				}
			}
		})
	}
}

// TestBrokenSourceChild is the child of TestRunKeySource_CatchesBrokenSources.
func TestBrokenSourceChild(t *testing.T) {
	fault := os.Getenv("PROVIDERTEST_FAULT")
	if fault == "" {
		t.Skip("child process only")
	}
	providertest.RunKeySource(t, func(*testing.T) provider.KeySource { return newMem(fault) })
}

func TestLeaks(t *testing.T) {
	m := make([]byte, provider.KeySize)
	for i := range m {
		m[i] = byte(0xa0 + i)
	}
	h := hex.EncodeToString(m)
	cases := []struct {
		name, s string
		leaks   bool
	}{
		{"clean", "key file /x/S3/k1.key: checksum mismatch", false},
		{"raw", "bad " + string(m), true},
		{"hex", "bad " + h, true},
		{"upper hex", "bad " + strings.ToUpper(h), true},
		{"decimal", fmt.Sprintf("bad %v", m), true},
		{"hex piece", "bad " + h[16:32], true},
		{"raw piece", "bad " + string(m[20:28]), true},
		{"short hex piece", "bad " + h[16:30], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := providertest.Leaks(c.s, m) != ""; got != c.leaks {
				t.Errorf("Leaks = %q, want leak %v", providertest.Leaks(c.s, m), c.leaks)
			}
		})
	}
}
