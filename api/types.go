// Package api is kmd's HTTP/JSON interface: the request and response types
// shared by the daemon and its clients, and the Go client that kmctl and
// services use. It does not depend on kmd's storage, so a service importing
// it pulls in nothing but the standard library.
package api

import "time"

// Paths.
const (
	PathVersion = "/v1/version"
	PathEvents  = "/v1/events"
	// PathDomains + "{domain}/entries/{name}", "{domain}/entries",
	// "{domain}/import", "{domain}/export".
	PathDomains = "/v1/domains/"
	// PathStatus + "{scope}" (cluster or sed).
	PathStatus = "/v1/status/"
	// PathRekey + "{scope}": GET view, PUT modify, POST start.
	PathRekey = "/v1/rekey/"
	// PathMetrics: Prometheus metrics (text format), GET.
	PathMetrics = "/metrics"
	// PathUILinks: POST makes a one-time sign-in link to the web page.
	PathUILinks = "/v1/ui/links"
)

// Scopes.
const (
	ScopeCluster = "cluster"
	ScopeSED     = "sed"
)

// Domain statuses.
const (
	StatusActive     = "ACTIVE"
	StatusInProgress = "IN_PROGRESS"
	StatusFailed     = "FAILED"
	StatusLocal      = "LOCAL" // sed: MK local, nothing running
	StatusKMIP       = "KMIP"  // sed: MK on a KMIP server, nothing running
	StatusMigrating  = "MIGRATING"
	StatusStaged     = "STAGED"
)

// Progress of a running rekey.
type Progress struct {
	Done    int64     `json:"done"`
	Total   int64     `json:"total"`
	Started time.Time `json:"started"`
}

// DomainStatus is a row of `cluster status -o json`.
type DomainStatus struct {
	Domain      string     `json:"domain"`
	Status      string     `json:"status"`
	KeyID       string     `json:"key_id"`
	KeyCreated  time.Time  `json:"key_created"`
	Location    string     `json:"location"`
	RemoteKeyID string     `json:"remote_key_id"`
	Error       string     `json:"error"`
	Entries     int64      `json:"entries"`
	Rekey       *Progress  `json:"rekey"`
	NextRetry   *time.Time `json:"next_retry"`
	StagedUntil *time.Time `json:"staged_until"` // when a STAGED domain continues by itself; null otherwise
}

// ClusterStatus is `cluster status -o json`.
type ClusterStatus struct {
	Domains []DomainStatus `json:"domains"`
	Total   int            `json:"total"`
}

// NodeStatus is a row of `sed status -o json`.
type NodeStatus struct {
	Node        int        `json:"node"`
	Status      string     `json:"status"`
	KeyID       string     `json:"key_id"`
	Location    string     `json:"location"`
	RemoteKeyID string     `json:"remote_key_id"`
	KeyCreated  time.Time  `json:"key_created"`
	Error       string     `json:"error"`
	Entries     int64      `json:"entries"`
	Rekey       *Progress  `json:"rekey"`
	NextRetry   *time.Time `json:"next_retry"`
	StagedUntil *time.Time `json:"staged_until"` // when a STAGED store continues by itself; null otherwise
}

// SEDStatus is `sed status -o json`.
type SEDStatus struct {
	Nodes []NodeStatus `json:"nodes"`
	Total int          `json:"total"`
}

// RekeyStartRequest is the body of POST /v1/rekey/{scope}.
type RekeyStartRequest struct {
	Domains []string `json:"domains,omitempty"` // empty: the whole scope
	// StagePeriod makes the rekey staged: the old MK is kept, RETIRED,
	// for this period (--key-rotation syntax, not Never); "": not staged.
	StagePeriod string `json:"stage_period,omitempty"`
}

// RekeyStartResponse lists the domains whose rekey was started.
type RekeyStartResponse struct {
	Started []string `json:"started"`
}

// RekeyModifyRequest is the body of PUT /v1/rekey/{scope}.
type RekeyModifyRequest struct {
	KeyRotation string `json:"key_rotation"`
}

// RekeyView is `rekey view -o json`. Times are UTC, second precision.
type RekeyView struct {
	RekeyTime   time.Time `json:"rekey_time"`
	KeyRotation string    `json:"key_rotation"` // "Never" or e.g. "6W"
	NextRekey   string    `json:"next_rekey"`   // RFC 3339 time, or "Never"
	LastResult  string    `json:"last_result"`  // none, in progress, succeeded, failed
}

// EntryList is the answer of GET /v1/domains/{domain}/entries.
type EntryList struct {
	Names []string `json:"names"`
	Next  string   `json:"next"` // pass as after= for the next page; "" at the end
}

// ImportLine is one line of `entry import` / `entry export`.
type ImportLine struct {
	Name  string `json:"name"`
	Value []byte `json:"value"` // base64 in JSON
}

// ImportResponse is the answer of POST /v1/domains/{domain}/import.
type ImportResponse struct {
	Imported int `json:"imported"`
}

// Event is one event as listed by GET /v1/events.
type Event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Name    string    `json:"event"`
	Scope   string    `json:"scope"`
	Domain  string    `json:"domain"`
	Node    int       `json:"node,omitempty"`
	KeyID   string    `json:"key_id,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	Error   string    `json:"error,omitempty"`
	Message string    `json:"message"`
}

// EventList is the answer of GET /v1/events.
type EventList struct {
	Events []Event `json:"events"`
}

// Version is the answer of GET /v1/version.
type Version struct {
	Version string `json:"version"`
}

// UILink is the answer of POST /v1/ui/links: a one-time link that signs a
// browser in to the web page.
type UILink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"` // the link's; the session it opens lasts longer
}

// MaxValueSize is the largest entry value kmd accepts: 64 KiB.
const MaxValueSize = 64 << 10
