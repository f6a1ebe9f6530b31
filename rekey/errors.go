// Package rekey replaces a domain's master key: the persisted state machine
// PREPARE → SWITCH → REWRAP → VERIFY → DESTROY, the rotation schedule and the
// retry policy. It knows nothing of SQL or HTTP: it works on provider.Store,
// provider.Vault and provider.KeySource.
package rekey

import "errors"

var (
	// ErrInProgress: a rekey of the domain is running.
	ErrInProgress = errors.New("rekey already in progress")
	// ErrNoProgress: rewrap passes left entries under the old MK, again
	// and again.
	ErrNoProgress = errors.New("rewrap made no progress")
	// ErrClosed: the engine is shutting down.
	ErrClosed = errors.New("engine closed")
	// ErrOtherPending: a failed rekey or migration to another location is
	// pending; it must be retried (or complete) first.
	ErrOtherPending = errors.New("another rekey is pending")
)
