package kmip

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"slices"

	kmipgo "github.com/ovh/kmip-go"
)

// VerifyReport is what Verify found out about a server. Field names are
// stable for `kmctl kmip server verify -o json`.
type VerifyReport struct {
	Server      string       `json:"server"`
	Addr        string       `json:"addr,omitempty"` // the address that answered
	Reachable   bool         `json:"reachable"`      // TCP, TLS and KMIP version negotiation worked
	TLSVersion  string       `json:"tls_version,omitempty"`
	KMIPVersion string       `json:"kmip_version,omitempty"`
	ProbeKey    string       `json:"probe_key,omitempty"` // Name of the throwaway key
	ProbeID     string       `json:"probe_id,omitempty"`  // its unique identifier
	Steps       []VerifyStep `json:"steps"`
	OK          bool         `json:"ok"` // reachable and every step worked
	Error       string       `json:"error,omitempty"`
}

// VerifyStep is one operation of Verify's probe.
type VerifyStep struct {
	Name   string `json:"name"`   // create, activate, locate, get, revoke, destroy
	Result string `json:"result"` // StepOK, StepFailed or StepSkipped
	Error  string `json:"error,omitempty"`
}

// Results of a VerifyStep.
const (
	StepOK      = "ok"
	StepFailed  = "failed"
	StepSkipped = "skipped"
)

var probeSteps = []string{"create", "activate", "locate", "get", "revoke", "destroy"}

// Verify connects afresh (trying the addresses in order) and runs a probe
// of every operation kmd needs on a throwaway key named
// kmd/<node>/verify/<random>: Create, Activate, Locate by that name, Get
// (32 bytes of AES material), Revoke and Destroy. The report says how far
// it got; the error, if any, is the first failure (wrapping ErrUnreachable
// when no address answered). The probe's material is wiped at once.
func (s *Source) Verify(ctx context.Context) (VerifyReport, error) {
	rep := VerifyReport{Server: s.cfg.Name}
	for _, n := range probeSteps {
		rep.Steps = append(rep.Steps, VerifyStep{Name: n, Result: StepSkipped})
	}
	fail := func(err error) (VerifyReport, error) {
		err = fmt.Errorf("kmip verify %s: %w", s.cfg.Name, err)
		rep.Error = err.Error()
		return rep, err
	}

	if err := s.acquire(ctx); err != nil {
		return fail(err)
	}
	defer s.release()
	s.failErr = nil // always try to connect
	s.mu.Lock()
	old, closed := s.sess, s.closed
	s.mu.Unlock()
	if closed {
		return fail(ErrClosed)
	}
	if old != nil {
		s.drop(old) // verify what a new connection gets, not an old one
	}
	sess, err := s.session(ctx)
	if err != nil {
		return fail(err)
	}
	rep.Reachable = true
	rep.Addr = sess.addr
	rep.TLSVersion = tls.VersionName(sess.tlsVersion)
	rep.KMIPVersion = sess.version.String()

	var first error
	step := func(i int, err error) bool {
		st := &rep.Steps[i]
		if err == nil {
			st.Result = StepOK
			return true
		}
		st.Result, st.Error = StepFailed, err.Error()
		if first == nil {
			first = fmt.Errorf("probe %s: %w", st.Name, err)
		}
		return false
	}

	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := KeyName(s.cfg.NodeID, "verify", hex.EncodeToString(b))
	rep.ProbeKey = name
	rid, err := s.createKey(ctx, name)
	if !step(0, err) {
		return fail(first)
	}
	rep.ProbeID = rid
	activated := step(1, s.activate(ctx, rid))
	ids, err := s.locate(ctx, name)
	if err == nil && !slices.Contains(ids, rid) {
		err = fmt.Errorf("locate by name %q did not return object %s (got %d objects)", name, rid, len(ids))
	}
	step(2, err)
	m, err := s.getKey(ctx, rid)
	clear(m)
	step(3, err)
	if activated {
		step(4, s.revoke(ctx, rid, kmipgo.RevocationReasonCodeCessationOfOperation))
	}
	step(5, s.destroyObject(ctx, rid))
	if first != nil {
		return fail(first)
	}
	rep.OK = true
	return rep, nil
}
