package provider

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is; the API layer maps them
// to HTTP statuses in one place.
var (
	// ErrNotFound: no entry of that name.
	ErrNotFound = errors.New("entry not found")
	// ErrExists: a create-only write found the entry already there.
	ErrExists = errors.New("entry already exists")
	// ErrVersionMismatch: a conditional write or delete found another version.
	ErrVersionMismatch = errors.New("entry version does not match")
	// ErrInvalidName: the entry name is not 1–255 bytes of printable UTF-8.
	ErrInvalidName = errors.New("invalid entry name")
	// ErrValueTooLarge: the value is over MaxValueSize.
	ErrValueTooLarge = errors.New("value too large")
	// ErrKeyNotFound: the key source holds no MK with that ID.
	ErrKeyNotFound = errors.New("master key not found")
	// ErrKeyUnavailable: the MK an operation needs is not loaded (for
	// example its KMIP server is unreachable). Entries are intact.
	ErrKeyUnavailable = errors.New("master key unavailable")
	// ErrKeyCorrupt: key material failed its integrity check.
	ErrKeyCorrupt = errors.New("master key corrupt")
	// ErrOpen: a ciphertext did not authenticate under its MK.
	ErrOpen = errors.New("ciphertext does not authenticate")
)

// EntryError ties an error to the domain and entry it concerns, so that an
// operator reading "rewrap S3: entry \"ftp/password\" under key 3f…: ciphertext
// does not authenticate" knows which row to look at. It never carries values.
type EntryError struct {
	Domain string
	Name   string
	KeyID  string
	Err    error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("domain %s entry %q under key %s: %v", e.Domain, e.Name, e.KeyID, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// DuplicateError: an import named the same entry twice. Index is the
// second one's position in the import, from 0.
type DuplicateError struct {
	Name  string
	Index int
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("name %q appears twice in the import", e.Name)
}
