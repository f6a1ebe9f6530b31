package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Paths of staged rekeys, dry runs and master keys.
const (
	// PathRekey + "{scope}" + PathPlanSuffix: GET the plan of a rekey
	// (?domain=D repeatable, ?stage_period=7D); changes nothing.
	PathPlanSuffix = "/plan"
	// PathRekey + "{scope}" + PathContinueSuffix: POST continue the scope's
	// STAGED rekeys (body StagedRequest).
	PathContinueSuffix = "/continue"
	// PathRekey + "{scope}" + PathCancelSuffix: POST cancel them.
	PathCancelSuffix = "/cancel"
	// PathKeys + "{scope}": GET the MKs (?domain=D repeatable);
	// + "{scope}/{fingerprint}?domain=D": DELETE a RETIRED MK.
	PathKeys = "/v1/keys/"
)

// Key states, as keys list shows them.
const (
	KeyPending  = "PENDING"
	KeyCurrent  = "CURRENT"
	KeyRetiring = "RETIRING"
	KeyRetired  = "RETIRED"
)

// Plan actions: what a rekey asked for now would do to a domain.
const (
	PlanRekey  = "rekey"  // a new rekey
	PlanRetry  = "retry"  // the domain's failed rekey is retried
	PlanQueue  = "queue"  // the rekey waits for the domain's migration to end
	PlanRefuse = "refuse" // refused; reason says why
)

// StagedRequest is the body of POST /v1/rekey/{scope}/continue and
// /v1/rekey/{scope}/cancel. The answer is a RekeyStartResponse naming the
// domains whose continue or cancel started.
type StagedRequest struct {
	Domains []string `json:"domains,omitempty"` // empty: every STAGED domain of the scope
}

// PlanKey is an MK in a plan.
type PlanKey struct {
	KeyID       string `json:"key_id"`
	Fingerprint string `json:"fingerprint"`
	Location    string `json:"location"` // Local or the KMIP server
	RemoteKeyID string `json:"remote_key_id"`
}

// PlanNewKey is the MK a rekey would create.
type PlanNewKey struct {
	Location string `json:"location"`         // Local or the KMIP server
	KeyID    string `json:"key_id,omitempty"` // known only when a retry chose it already
}

// RekeyPlanDomain is what a rekey would do to one domain.
type RekeyPlanDomain struct {
	Domain     string      `json:"domain"`
	Node       int         `json:"node,omitempty"` // sed scope
	Entries    int64       `json:"entries"`
	Action     string      `json:"action"` // PlanRekey, PlanRetry, PlanQueue, PlanRefuse
	Reason     string      `json:"reason"` // why, for every action but rekey
	CurrentKey *PlanKey    `json:"current_key"`
	Create     *PlanNewKey `json:"create"`  // null: no MK would be created
	Destroy    *PlanKey    `json:"destroy"` // null: none would be destroyed
}

// RekeyPlan is `rekey start --dry-run -o json`.
type RekeyPlan struct {
	Scope       string            `json:"scope"`
	DryRun      bool              `json:"dry_run"`      // always true: nothing was changed
	StagePeriod string            `json:"stage_period"` // "" unless staged
	WouldStart  bool              `json:"would_start"`
	Refused     string            `json:"refused"` // why the start would be refused as a whole
	Domains     []RekeyPlanDomain `json:"domains"`
	Entries     int64             `json:"entries"` // over every domain
	Total       int               `json:"total"`
}

// Key is one MK as keys list shows it. Never its material: the
// fingerprint is a keyed hash that reveals nothing of it.
type Key struct {
	Domain      string    `json:"domain"`
	Node        int       `json:"node,omitempty"` // sed scope
	KeyID       string    `json:"key_id"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`    // KeyCurrent, KeyRetiring, KeyRetired (KeyPending briefly)
	Location    string    `json:"location"` // Local or the KMIP server
	RemoteKeyID string    `json:"remote_key_id"`
	Created     time.Time `json:"created"`
	Entries     int64     `json:"entries"` // entries sealed under it
	// DestroyAt is when a STAGED rekey's retired MK is destroyed unless
	// the rekey is continued or cancelled first; null for any other.
	DestroyAt *time.Time `json:"destroy_at"`
}

// KeyList is `keys list -o json`.
type KeyList struct {
	Keys  []Key `json:"keys"`
	Total int   `json:"total"`
}

// KeyDeleteResponse is the answer of DELETE /v1/keys/{scope}/{fingerprint}.
type KeyDeleteResponse struct {
	Deleted Key `json:"deleted"`
}

// StartRekeyWith starts a rekey as req asks: some domains, staged or not.
func (c *Client) StartRekeyWith(ctx context.Context, scope string, req RekeyStartRequest) (RekeyStartResponse, error) {
	var out RekeyStartResponse
	_, err := c.do(ctx, http.MethodPost, PathRekey+url.PathEscape(scope), nil, jsonBody(req), &out)
	return out, err
}

// PlanRekey returns what a rekey of the scope's domains (all when none)
// would do, with stagePeriod ("" for none); kmd changes nothing.
func (c *Client) PlanRekey(ctx context.Context, scope string, domains []string, stagePeriod string) (RekeyPlan, error) {
	q := url.Values{}
	for _, d := range domains {
		q.Add("domain", d)
	}
	if stagePeriod != "" {
		q.Set("stage_period", stagePeriod)
	}
	p := PathRekey + url.PathEscape(scope) + PathPlanSuffix
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out RekeyPlan
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, &out)
	return out, err
}

// ContinueRekey continues the STAGED rekeys of the scope's domains (every
// STAGED one when none is named): their retired MKs are destroyed now.
func (c *Client) ContinueRekey(ctx context.Context, scope string, domains []string) (RekeyStartResponse, error) {
	var out RekeyStartResponse
	_, err := c.do(ctx, http.MethodPost, PathRekey+url.PathEscape(scope)+PathContinueSuffix, nil, jsonBody(StagedRequest{Domains: domains}), &out)
	return out, err
}

// CancelRekey cancels the STAGED rekeys of the scope's domains (every
// STAGED one when none is named): their entries go back under the retired
// MKs and the rekeys' new MKs are destroyed.
func (c *Client) CancelRekey(ctx context.Context, scope string, domains []string) (RekeyStartResponse, error) {
	var out RekeyStartResponse
	_, err := c.do(ctx, http.MethodPost, PathRekey+url.PathEscape(scope)+PathCancelSuffix, nil, jsonBody(StagedRequest{Domains: domains}), &out)
	return out, err
}

// Keys lists the MKs of the scope's domains (all when none named).
func (c *Client) Keys(ctx context.Context, scope string, domains []string) (KeyList, error) {
	q := url.Values{}
	for _, d := range domains {
		q.Add("domain", d)
	}
	p := PathKeys + url.PathEscape(scope)
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out KeyList
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, &out)
	return out, err
}

// DeleteKey deletes the RETIRED MK of domain ("" in the sed scope) whose
// fingerprint is fingerprint. For a STAGED rekey's retired MK that is a
// continue of the rekey, which it waits for.
func (c *Client) DeleteKey(ctx context.Context, scope, domain, fingerprint string) (KeyDeleteResponse, error) {
	p := PathKeys + url.PathEscape(scope) + "/" + url.PathEscape(fingerprint)
	if domain != "" {
		p += "?" + url.Values{"domain": {domain}}.Encode()
	}
	var out KeyDeleteResponse
	_, err := c.do(ctx, http.MethodDelete, p, nil, nil, &out)
	return out, err
}
