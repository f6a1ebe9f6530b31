// Package rekey replaces a domain's master key: the persisted state machine
// PREPARE → SWITCH → REWRAP → VERIFY → DESTROY, the rotation schedule and the
// retry policy. It knows nothing of SQL or HTTP: it works on provider.Store,
// provider.Vault and provider.KeySource.
package rekey

import (
	"errors"
	"fmt"
	"time"
)

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
	// ErrStaged: the domain's staged rekey keeps its retired MK; it must be
	// continued or cancelled before another rekey. Returned as a
	// *StagedError.
	ErrStaged = errors.New("staged rekey pending")
	// ErrNotStaged: continue or cancel asked of a domain that is not
	// STAGED.
	ErrNotStaged = errors.New("not staged")
	// ErrKeyInUse: an MK asked to be destroyed still has entries.
	ErrKeyInUse = errors.New("master key still referenced")
)

// StagedError says that a domain is STAGED, and until when.
type StagedError struct {
	Domain string
	Until  time.Time
	// Hint says what to do; a default one when empty.
	Hint string
}

func (e *StagedError) Error() string {
	hint := e.Hint
	if hint == "" {
		hint = "continue or cancel its staged rekey first"
	}
	return fmt.Sprintf("%s is STAGED until %s: %s", e.Domain, e.Until.UTC().Format(time.RFC3339), hint)
}

// Unwrap returns ErrStaged.
func (e *StagedError) Unwrap() error { return ErrStaged }
