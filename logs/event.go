package logs

import "time"

// Event names, as documented in SPEC.md (Events).
const (
	// EventRekeyFailed is raised when a cluster-scope domain's rekey fails.
	EventRekeyFailed = "KeyManagerRekeyFailed"
	// EventSedsRekeyFailed is raised when the node's SED store rekey fails.
	EventSedsRekeyFailed = "KeyManagerSedsRekeyFailed"
	// EventRekeyCompleted is raised when a rekey of any scope completes.
	EventRekeyCompleted = "KeyManagerRekeyCompleted"
	// EventRekeyStaged is raised when a cluster-scope domain's staged rekey
	// has re-encrypted every entry and keeps the old MK, RETIRED, for its
	// stage period; EventSedsRekeyStaged for the SED store.
	EventRekeyStaged     = "KeyManagerRekeyStaged"
	EventSedsRekeyStaged = "KeyManagerSedsRekeyStaged"
	// EventRekeyContinued is raised when a staged rekey is continued (by
	// the operator or at the end of its stage period) and its retired MK
	// destroyed; EventSedsRekeyContinued for the SED store.
	EventRekeyContinued     = "KeyManagerRekeyContinued"
	EventSedsRekeyContinued = "KeyManagerSedsRekeyContinued"
	// EventRekeyCancelled is raised when a staged rekey is cancelled: every
	// entry is back under the retired MK, current again, and the rekey's
	// new MK destroyed; EventSedsRekeyCancelled for the SED store.
	EventRekeyCancelled     = "KeyManagerRekeyCancelled"
	EventSedsRekeyCancelled = "KeyManagerSedsRekeyCancelled"
)

// Scopes of a domain.
const (
	ScopeCluster = "cluster"
	ScopeSED     = "sed"
)

// Event is one thing that happened that operators must hear of. It never
// carries key material or entry values: Error holds an error message built
// by kmd, which by construction names keys by ID and entries by name only.
type Event struct {
	Seq     int64     `json:"seq"`               // assigned by the journal, increasing
	Time    time.Time `json:"time"`              // UTC
	Name    string    `json:"event"`             // one of the Event* constants
	Scope   string    `json:"scope"`             // ScopeCluster or ScopeSED
	Domain  string    `json:"domain"`            // e.g. "S3" or "SED"
	Node    int       `json:"node,omitempty"`    // node id, for the sed scope
	KeyID   string    `json:"key_id,omitempty"`  // the MK the event concerns
	Attempt int       `json:"attempt,omitempty"` // 1 for the first try of a rekey
	Error   string    `json:"error,omitempty"`
	Message string    `json:"message"`
}
