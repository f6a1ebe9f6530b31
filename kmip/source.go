// Package kmip keeps master keys on a KMIP server (KMIP 1.0-1.4 over mutual
// TLS, with github.com/ovh/kmip-go): Source implements provider.KeySource.
//
// A key for (domain, id) is an AES-256 symmetric key named
// kmd/<node>/<domain>/<id> (Name attribute, uninterpreted text string),
// with usage Encrypt|Decrypt. Its material is fetched with Get into memory
// when needed and never written anywhere by this package.
package kmip

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	kmipgo "github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/kmd-project/kmd/provider"
)

// Source is the key source of one KMIP server. It keeps one connection,
// reconnecting (with failover across Addrs) when it breaks. It is safe for
// concurrent use; methods run one at a time, so that Create's
// look-up-then-create is atomic for this Source, and a caller's context
// bounds its wait for its turn as well as the method itself.
type Source struct {
	cfg ServerConfig
	tls *tls.Config

	// turn is held for the whole of each method (a 1-slot semaphore, so
	// that a caller's context also bounds its wait). Under it: started,
	// when the running method began waiting; failedAt and failErr, the
	// end and result of the last failed connection attempt. A method that
	// was already waiting when an attempt failed gets that attempt's error
	// instead of trying again, so that callers queued behind an
	// unreachable server do not each wait ConnectTimeout in turn.
	turn     chan struct{}
	started  time.Time
	failedAt time.Time
	failErr  error

	mu     sync.Mutex // guards sess and closed
	sess   *session
	closed bool
}

var _ provider.KeySource = (*Source)(nil)

// New checks cfg and its files (they must exist, be PEM, hold what they
// should, match each other and be currently valid) and returns a Source.
// It does not connect: the first operation, or Verify, does. Errors wrap
// ErrConfig and name the file and what it should be.
func New(cfg ServerConfig) (*Source, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	t, err := loadTLS(cfg, time.Now())
	if err != nil {
		return nil, err
	}
	return &Source{cfg: cfg, tls: t, turn: make(chan struct{}, 1)}, nil
}

// Location returns the server's name, the Location of the keys it holds.
func (s *Source) Location() string { return s.cfg.Name }

// Config returns the configuration in use, defaults filled in.
func (s *Source) Config() ServerConfig { return s.cfg }

// Close closes the connection; an operation under way fails with ErrClosed,
// and so do later ones. Closing twice is fine.
func (s *Source) Close() error {
	s.mu.Lock()
	sess := s.sess
	s.sess, s.closed = nil, true
	s.mu.Unlock()
	if sess != nil {
		// An operation under way may be using the connection: closing it
		// fails that operation, which then sees closed.
		_ = sess.conn.Close()
	}
	return nil
}

// KeyName returns the KMIP Name of the key (domain, id) made by node:
// kmd/<node>/<domain>/<id>.
func KeyName(node int, domain, id string) string {
	return fmt.Sprintf("kmd/%d/%s/%s", node, domain, id)
}

// Create makes (or finds) the key of (domain, id) and returns its ref and
// material. It first Locates the Name: a key left by an earlier Create that
// crashed before its ref was recorded is reused (activated if it is still
// pre-active) rather than duplicated. Otherwise it Creates an AES-256 key
// with usage Encrypt|Decrypt, Activates it and Gets its material.
func (s *Source) Create(ctx context.Context, domain, id string) (provider.KeyRef, []byte, error) {
	var (
		ref provider.KeyRef
		m   []byte
	)
	err := s.do(ctx, "create", domain, id, func() error {
		var err error
		ref, m, err = s.create(ctx, domain, id)
		return err
	})
	if err != nil {
		return provider.KeyRef{}, nil, err
	}
	return ref, m, nil
}

func (s *Source) create(ctx context.Context, domain, id string) (provider.KeyRef, []byte, error) {
	name := KeyName(s.cfg.NodeID, domain, id)
	rid, state, err := s.findKey(ctx, name)
	if err != nil {
		return provider.KeyRef{}, nil, err
	}
	if rid == "" {
		if rid, err = s.createKey(ctx, name); err != nil {
			return provider.KeyRef{}, nil, err
		}
		state = kmipgo.StatePreActive
	}
	if state == kmipgo.StatePreActive {
		if err := s.activate(ctx, rid); err != nil {
			return provider.KeyRef{}, nil, err
		}
	}
	m, err := s.getKey(ctx, rid)
	if err != nil {
		return provider.KeyRef{}, nil, err
	}
	return provider.KeyRef{Domain: domain, ID: id, Location: s.cfg.Name, RemoteID: rid}, m, nil
}

// Load returns the material of ref: by ref.RemoteID, after checking that
// the object there is that key, or, without a RemoteID, by Name. A missing
// or destroyed key is provider.ErrKeyNotFound; an object that is not a
// 256-bit symmetric key, or is another key, provider.ErrKeyCorrupt.
func (s *Source) Load(ctx context.Context, ref provider.KeyRef) ([]byte, error) {
	var m []byte
	err := s.do(ctx, "load", ref.Domain, ref.ID, func() error {
		if err := s.checkRef(ref); err != nil {
			return err
		}
		var err error
		m, err = s.load(ctx, ref)
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Source) load(ctx context.Context, ref provider.KeyRef) ([]byte, error) {
	name := KeyName(s.cfg.NodeID, ref.Domain, ref.ID)
	rid := ref.RemoteID
	if rid == "" {
		var err error
		if rid, _, err = s.findKey(ctx, name); err != nil {
			return nil, err
		}
		if rid == "" {
			return nil, fmt.Errorf("no key named %q on kmip server %s: %w", name, s.cfg.Name, provider.ErrKeyNotFound)
		}
	} else {
		info, err := s.attributes(ctx, rid)
		switch {
		case isNotFound(err):
			return nil, fmt.Errorf("%w: %w", provider.ErrKeyNotFound, err)
		case err != nil:
			return nil, err
		case info.destroyed():
			return nil, fmt.Errorf("object %s is %s: %w", rid, ttlv.EnumStr(info.state), provider.ErrKeyNotFound)
		case !info.isKey(ref.Domain, ref.ID):
			return nil, fmt.Errorf("object %s is named %q, want %q: %w: %w", rid, info.names[0], name, ErrWrongObject, provider.ErrKeyCorrupt)
		}
	}
	m, err := s.getKey(ctx, rid)
	if isNotFound(err) {
		return nil, fmt.Errorf("%w: %w", provider.ErrKeyNotFound, err)
	}
	return m, err
}

// Destroy revokes (reason Superseded) and destroys the key of ref. A key
// already gone is success; so is a key already revoked, which is destroyed
// all the same. Without a RemoteID, or if the object at RemoteID turns out
// to be another key, it destroys every key with ref's Name.
func (s *Source) Destroy(ctx context.Context, ref provider.KeyRef) error {
	return s.do(ctx, "destroy", ref.Domain, ref.ID, func() error {
		if err := s.checkRef(ref); err != nil {
			return err
		}
		return s.destroy(ctx, ref)
	})
}

func (s *Source) destroy(ctx context.Context, ref provider.KeyRef) error {
	if rid := ref.RemoteID; rid != "" {
		info, err := s.attributes(ctx, rid)
		switch {
		case isNotFound(err):
			return nil
		case err != nil:
			return err
		case info.destroyed():
			return nil
		case info.isKey(ref.Domain, ref.ID):
			return s.retire(ctx, rid, info)
		}
		// The identifier names another object now: never destroy that one.
		// Ours is gone from there; look for it by name.
	}
	ids, err := s.locate(ctx, KeyName(s.cfg.NodeID, ref.Domain, ref.ID))
	if err != nil {
		return err
	}
	for _, rid := range ids {
		info, err := s.attributes(ctx, rid)
		switch {
		case isNotFound(err):
			continue
		case err != nil:
			return err
		case info.destroyed():
			continue
		}
		if err := s.retire(ctx, rid, info); err != nil {
			return err
		}
	}
	return nil
}

// retire revokes an active object, then destroys it. A failed Revoke (the
// object was already revoked, say) does not stop the Destroy; it is
// reported only if the Destroy fails too.
func (s *Source) retire(ctx context.Context, rid string, info objectInfo) error {
	var revokeErr error
	if info.state == kmipgo.StateActive || info.state == 0 {
		revokeErr = s.revoke(ctx, rid, kmipgo.RevocationReasonCodeSuperseded)
		var se *ServerError
		switch {
		case isNotFound(revokeErr):
			return nil
		case revokeErr != nil && !errors.As(revokeErr, &se):
			return revokeErr // no answer: a Destroy would get none either
		}
	}
	err := s.destroyObject(ctx, rid)
	switch {
	case err == nil, isNotFound(err):
		return nil
	case revokeErr != nil:
		return fmt.Errorf("%w (after revoke: %v)", err, revokeErr)
	}
	return err
}

// do runs f, one method at a time, and once more on a new connection if
// the connection broke under it: every method is idempotent, Create
// included, since it looks its key up by name before creating one.
// Errors are prefixed with the method and the key.
func (s *Source) do(ctx context.Context, method, domain, id string, f func() error) error {
	wrap := func(err error) error { return fmt.Errorf("kmip %s %s/%s: %w", method, domain, id, err) }
	if err := checkName("domain", domain); err != nil {
		return wrap(err)
	}
	if err := checkName("key id", id); err != nil {
		return wrap(err)
	}
	if err := s.acquire(ctx); err != nil {
		return wrap(err)
	}
	defer s.release()
	if s.isClosed() {
		return wrap(ErrClosed)
	}
	err := f()
	var lost *connLostError
	if errors.As(err, &lost) && ctx.Err() == nil && !s.isClosed() {
		err = f()
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// acquire waits for the Source's turn, or for ctx to end.
func (s *Source) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	started := time.Now()
	select {
	case s.turn <- struct{}{}:
		s.started = started
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) release() { <-s.turn }

// checkName refuses what cannot be one part of a key's Name.
func checkName(what, s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("%s %q: want 1-128 characters", what, s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:-", r)) {
			return fmt.Errorf("%s %q: only letters, digits, '.', '_', ':' and '-' are allowed", what, s)
		}
	}
	return nil
}

func (s *Source) checkRef(ref provider.KeyRef) error {
	if ref.Location != "" && ref.Location != s.cfg.Name {
		return fmt.Errorf("the key is located at %q, not on kmip server %s", ref.Location, s.cfg.Name)
	}
	return nil
}

// objectInfo is what GetAttributes tells of an object.
type objectInfo struct {
	typ   kmipgo.ObjectType
	state kmipgo.State // 0 if the server did not say
	names []string
}

func (o objectInfo) destroyed() bool {
	return o.state == kmipgo.StateDestroyed || o.state == kmipgo.StateDestroyedCompromised
}

// usable: a symmetric key that can still be activated or used.
func (o objectInfo) usable() bool {
	return (o.typ == kmipgo.ObjectTypeSymmetricKey || o.typ == 0) &&
		(o.state == kmipgo.StateActive || o.state == kmipgo.StatePreActive || o.state == 0)
}

// isKey reports whether the object is named as the key (domain, id) of
// any node, or has no name to tell.
func (o objectInfo) isKey(domain, id string) bool {
	if len(o.names) == 0 {
		return true
	}
	for _, n := range o.names {
		p := strings.Split(n, "/")
		if len(p) == 4 && p[0] == "kmd" && p[2] == domain && p[3] == id {
			if _, err := strconv.Atoi(p[1]); err == nil {
				return true
			}
		}
	}
	return false
}

// findKey returns the usable key named name, preferring an active one to a
// pre-active one, or "" if there is none.
func (s *Source) findKey(ctx context.Context, name string) (string, kmipgo.State, error) {
	ids, err := s.locate(ctx, name)
	if err != nil {
		return "", 0, err
	}
	var preActive string
	for _, rid := range ids {
		info, err := s.attributes(ctx, rid)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return "", 0, err
		}
		if !info.usable() {
			continue
		}
		if info.state != kmipgo.StatePreActive {
			return rid, kmipgo.StateActive, nil
		}
		if preActive == "" {
			preActive = rid
		}
	}
	if preActive != "" {
		return preActive, kmipgo.StatePreActive, nil
	}
	return "", 0, nil
}

// The KMIP operations, each one request.

func (s *Source) locate(ctx context.Context, name string) ([]string, error) {
	resp, err := s.call(ctx, "locate", &payloads.LocateRequestPayload{
		Attribute: []kmipgo.Attribute{{
			AttributeName:  kmipgo.AttributeNameName,
			AttributeValue: kmipgo.Name{NameValue: name, NameType: kmipgo.NameTypeUninterpretedTextString},
		}},
	})
	if err != nil {
		return nil, err
	}
	return resp.(*payloads.LocateResponsePayload).UniqueIdentifier, nil
}

func (s *Source) attributes(ctx context.Context, rid string) (objectInfo, error) {
	resp, err := s.call(ctx, "get attributes", &payloads.GetAttributesRequestPayload{
		UniqueIdentifier: rid,
		AttributeName:    []kmipgo.AttributeName{kmipgo.AttributeNameObjectType, kmipgo.AttributeNameState, kmipgo.AttributeNameName},
	})
	if err != nil {
		return objectInfo{}, err
	}
	var info objectInfo
	for _, a := range resp.(*payloads.GetAttributesResponsePayload).Attribute {
		switch v := a.AttributeValue.(type) {
		case kmipgo.ObjectType:
			info.typ = v
		case kmipgo.State:
			info.state = v
		case kmipgo.Name:
			info.names = append(info.names, v.NameValue)
		}
	}
	return info, nil
}

func (s *Source) createKey(ctx context.Context, name string) (string, error) {
	resp, err := s.call(ctx, "create", &payloads.CreateRequestPayload{
		ObjectType: kmipgo.ObjectTypeSymmetricKey,
		TemplateAttribute: kmipgo.TemplateAttribute{Attribute: []kmipgo.Attribute{
			{AttributeName: kmipgo.AttributeNameCryptographicAlgorithm, AttributeValue: kmipgo.CryptographicAlgorithmAES},
			{AttributeName: kmipgo.AttributeNameCryptographicLength, AttributeValue: int32(provider.KeySize * 8)},
			{AttributeName: kmipgo.AttributeNameCryptographicUsageMask, AttributeValue: kmipgo.CryptographicUsageEncrypt | kmipgo.CryptographicUsageDecrypt},
			{AttributeName: kmipgo.AttributeNameName, AttributeValue: kmipgo.Name{NameValue: name, NameType: kmipgo.NameTypeUninterpretedTextString}},
		}},
	})
	if err != nil {
		return "", err
	}
	rid := resp.(*payloads.CreateResponsePayload).UniqueIdentifier
	if rid == "" {
		return "", &ServerError{Server: s.cfg.Name, Operation: "create", Status: kmipgo.ResultStatusSuccess, Message: "no unique identifier in the answer"}
	}
	return rid, nil
}

func (s *Source) activate(ctx context.Context, rid string) error {
	_, err := s.call(ctx, "activate", &payloads.ActivateRequestPayload{UniqueIdentifier: rid})
	return err
}

func (s *Source) revoke(ctx context.Context, rid string, reason kmipgo.RevocationReasonCode) error {
	_, err := s.call(ctx, "revoke", &payloads.RevokeRequestPayload{
		UniqueIdentifier: rid,
		RevocationReason: kmipgo.RevocationReason{RevocationReasonCode: reason},
	})
	return err
}

func (s *Source) destroyObject(ctx context.Context, rid string) error {
	_, err := s.call(ctx, "destroy", &payloads.DestroyRequestPayload{UniqueIdentifier: rid})
	return err
}

// getKey fetches the material of rid and checks that it is a 256-bit AES
// key. The answer's copy of the material is wiped.
func (s *Source) getKey(ctx context.Context, rid string) ([]byte, error) {
	resp, err := s.call(ctx, "get", &payloads.GetRequestPayload{UniqueIdentifier: rid})
	if err != nil {
		return nil, err
	}
	pl := resp.(*payloads.GetResponsePayload)
	key, ok := pl.Object.(*kmipgo.SymmetricKey)
	if pl.ObjectType != kmipgo.ObjectTypeSymmetricKey || !ok {
		return nil, fmt.Errorf("object %s is a %s, not a SymmetricKey: %w", rid, ttlv.EnumStr(pl.ObjectType), provider.ErrKeyCorrupt)
	}
	if alg := key.KeyBlock.CryptographicAlgorithm; alg != 0 && alg != kmipgo.CryptographicAlgorithmAES {
		return nil, fmt.Errorf("object %s is a %s key, not AES: %w", rid, ttlv.EnumStr(alg), provider.ErrKeyCorrupt)
	}
	raw, err := key.KeyMaterial()
	if err != nil {
		// kmip-go's messages here name formats, never bytes.
		return nil, fmt.Errorf("object %s: key material unreadable (%v): %w", rid, err, provider.ErrKeyCorrupt)
	}
	defer clear(raw)
	if len(raw) != provider.KeySize {
		return nil, fmt.Errorf("object %s holds %d bytes of key material, want %d: %w", rid, len(raw), provider.KeySize, provider.ErrKeyCorrupt)
	}
	return bytes.Clone(raw), nil
}
