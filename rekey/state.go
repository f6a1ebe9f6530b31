package rekey

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kmd-project/kmd/provider"
)

// Phase is a step of the rekey state machine (DESIGN.md):
//
//	PREPARE: the new MK is created and durable
//	SWITCH:  the new MK becomes current for writes; the old one RETIRING
//	REWRAP:  batches of entries under the old MK are resealed under the new
//	VERIFY:  no entry references the old MK; the store is synced
//	DESTROY: the old MK is removed from its key source, then from metadata
//
// A staged rekey stops after VERIFY in STAGED: the old MK is RETIRED but
// kept, for its stage period. Continuing it goes STAGED → VERIFY → DESTROY
// (VERIFY proves once more that no entry needs the old MK). Cancelling it is
// a run of its own, Op cancel, with From and To swapped: SWITCH makes the
// retired MK current again, REWRAP moves every entry back under it, VERIFY
// proves none is left under the new one, DESTROY destroys the new one.
type Phase string

// The phases, in order. PhaseNone: no rekey pending.
const (
	PhaseNone    Phase = ""
	PhasePrepare Phase = "PREPARE"
	PhaseSwitch  Phase = "SWITCH"
	PhaseRewrap  Phase = "REWRAP"
	PhaseVerify  Phase = "VERIFY"
	PhaseDestroy Phase = "DESTROY"
	// PhaseStaged: a staged rekey is done but for DESTROY; the old MK is
	// RETIRED and kept until StagedUntil. Nothing runs.
	PhaseStaged Phase = "STAGED"
)

// Ops: what a pending state machine run is for.
const (
	OpInit    = "init"    // the domain's first MK
	OpRekey   = "rekey"   // replace the MK, at the same location
	OpMigrate = "migrate" // replace the MK with one made at another location
	OpCancel  = "cancel"  // undo a staged rekey: From is its new MK, To its retired one
)

// Who continued a staged rekey (State.Continued).
const (
	ContinuedByOperator = "operator"
	ContinuedAuto       = "auto" // its stage period ended
)

// stateKey is the name of the persisted state in the store.
const stateKey = "rekey"

// State is a domain's rekey state, persisted in its store so that a restart
// resumes exactly where the rekey stood.
type State struct {
	Phase    Phase     `json:"phase"`
	Op       string    `json:"op"`
	From     string    `json:"from,omitempty"` // the old MK's ID
	To       string    `json:"to"`             // the new MK's ID
	Target   string    `json:"target"`         // the new MK's location
	Started  time.Time `json:"started"`
	Total    int64     `json:"total"`    // entries under From when REWRAP began
	Attempts int       `json:"attempts"` // runs started, this one included

	Error     string    `json:"error,omitempty"` // why the last run failed
	FailedAt  time.Time `json:"failed_at,omitzero"`
	NextRetry time.Time `json:"next_retry,omitzero"`
	Failures  int       `json:"failures,omitempty"` // runs of this rekey that failed

	// StagePeriod is set for a staged rekey until it reaches STAGED: VERIFY
	// then keeps From, RETIRED, instead of destroying it.
	StagePeriod Rotation `json:"stage_period,omitzero"`
	// StagedAt and StagedUntil: when the rekey reached STAGED, and when
	// it continues by itself.
	StagedAt    time.Time `json:"staged_at,omitzero"`
	StagedUntil time.Time `json:"staged_until,omitzero"`
	// Continued says who continued a staged rekey (ContinuedByOperator,
	// ContinuedAuto); "" while it has not been.
	Continued string `json:"continued,omitempty"`
}

// run is the kind of run st stands for: OpCancel, "continue", or its Op.
func (st State) run() string {
	if st.Continued != "" {
		return RunContinue
	}
	return st.Op
}

// RunContinue is the Status.Run of the continuing of a staged rekey.
const RunContinue = "continue"

func loadState(ctx context.Context, s provider.Store) (State, error) {
	b, err := s.State(ctx, stateKey)
	if err != nil || b == nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("rekey state: %w", err)
	}
	return st, nil
}

func stateUpdate(st State) (provider.MetaUpdate, error) {
	if st.Phase == PhaseNone {
		return provider.MetaUpdate{Unset: []string{stateKey}}, nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return provider.MetaUpdate{}, err
	}
	return provider.MetaUpdate{Set: map[string][]byte{stateKey: b}}, nil
}
