// Package logs sets up kmd's zap logger and carries its events.
//
// Field names are constants so that every call site logs the same key for the
// same thing. No field ever holds key material or an entry's value.
package logs

// Log field names.
const (
	Domain    = "domain"
	Scope     = "scope"
	Node      = "node"
	KeyID     = "key_id"
	OldKeyID  = "old_key_id"
	NewKeyID  = "new_key_id"
	Phase     = "phase"
	Entry     = "entry"
	Entries   = "entries"
	Done      = "done"
	Total     = "total"
	Attempt   = "attempt"
	Elapsed   = "elapsed"
	Location  = "location"
	Path      = "path"
	EventName = "event"
	Error     = "error"
	Retry     = "next_retry"
	// StagePeriod is a staged rekey's stage period ("Never" when not staged).
	StagePeriod = "stage_period"
	// Until is when a STAGED domain continues by itself.
	Until = "until"
	// By says who continued a staged rekey: operator or auto.
	By = "by"
)
