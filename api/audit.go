package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// PathAudit: GET lists the audit trail (?since=RFC3339&limit=N).
const PathAudit = "/v1/audit"

// Limits of GET /v1/audit: how many records it answers without limit=,
// and the most limit= may ask for.
const (
	DefaultAuditLimit = 1000
	MaxAuditLimit     = 10000
)

// Outcomes of an audit record.
const (
	AuditOK      = "ok"      // done
	AuditRefused = "refused" // not done, nothing changed: no role, bad input, not found, conflict (a 4xx answer)
	AuditFailed  = "failed"  // kmd tried and could not (a 5xx answer)
)

// AuditRecord is one record of the audit trail: a change someone asked
// kmd for, and how it ended. It never holds an entry value or key material.
type AuditRecord struct {
	Time    time.Time `json:"time"`
	Who     string    `json:"who"`  // "uid 0", a certificate subject, "web session of …", "unknown"
	Via     string    `json:"via"`  // socket, tls, session; "" when unknown
	From    string    `json:"from"` // "unix:/path" or the peer address
	Action  string    `json:"action"`
	Target  string    `json:"target"`
	Detail  string    `json:"detail,omitempty"`
	Outcome string    `json:"outcome"` // AuditOK, AuditRefused or AuditFailed
	Status  int       `json:"status"`  // the HTTP status answered
	Error   string    `json:"error,omitempty"`
	Seq     int64     `json:"seq"`
}

// AuditList is the answer of GET /v1/audit: oldest first.
type AuditList struct {
	Records []AuditRecord `json:"records"`
}

// Audit lists the newest audit records at or after since (zero: any time),
// at most limit of them (0: DefaultAuditLimit), oldest first.
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) (AuditList, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	p := PathAudit
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out AuditList
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, &out)
	return out, err
}
