package provider

import (
	"context"
	"time"
)

// LocationLocal is the Location of an MK kept in a local key file.
const LocationLocal = "Local"

// KeyRef says where an MK lives.
type KeyRef struct {
	Domain   string // the domain the MK protects
	ID       string // the MK's ID, unique within its domain
	Location string // LocationLocal, or the name of a KMIP server
	RemoteID string // the KMIP unique identifier; empty for local keys
}

// KeySource creates, loads and destroys MKs in one location.
//
// Contract, for every implementation (the conformance suite in
// provider/providertest checks it):
//   - Create makes a new 256-bit MK for (domain, id) and returns only once it
//     is durable: a crash after Create returns cannot lose it. Create is
//     idempotent per (domain, id): if that MK already exists it is returned
//     as is, so a crash between Create and recording its KeyRef leaves no
//     orphan and no second key.
//   - Load returns the material of ref, ErrKeyNotFound if there is none, and
//     an error wrapping ErrKeyCorrupt if what is there is damaged.
//   - Destroy removes ref for good; destroying an MK that is already gone
//     returns nil.
//   - No method puts material in an error, a log line or a panic.
type KeySource interface {
	Location() string
	Create(ctx context.Context, domain, id string) (KeyRef, []byte, error)
	Load(ctx context.Context, ref KeyRef) ([]byte, error)
	Destroy(ctx context.Context, ref KeyRef) error
}

// KeyState is an MK's place in its domain's lifecycle.
type KeyState string

const (
	// KeyPending: minted for a rekey that has not switched to it yet. No
	// entry is sealed under it.
	KeyPending KeyState = "PENDING"
	// KeyCurrent: new writes are sealed under it. Exactly one per domain.
	KeyCurrent KeyState = "CURRENT"
	// KeyRetiring: a rekey is moving its entries to the current MK.
	KeyRetiring KeyState = "RETIRING"
	// KeyRetired: no entry references it; kept only until destroyed.
	KeyRetired KeyState = "RETIRED"
)

// KeyInfo is an MK's metadata, kept in the store. Never its material.
type KeyInfo struct {
	KeyRef
	State       KeyState
	Fingerprint string // see Fingerprint; empty while PENDING
	Created     time.Time
}

// KeyByID returns the MK of infos whose ID is id, and whether there is one.
func KeyByID(infos []KeyInfo, id string) (KeyInfo, bool) {
	for _, k := range infos {
		if k.ID == id {
			return k, true
		}
	}
	return KeyInfo{}, false
}
