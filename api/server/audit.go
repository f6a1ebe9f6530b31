package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/audit"
	"github.com/kmd-project/kmd/provider"
)

// AuditTrail records and lists what callers changed; *audit.Trail
// implements it. Record returns once the record is durable.
type AuditTrail interface {
	Record(ctx context.Context, r audit.Record) error
	List(since time.Time, limit int) ([]audit.Record, error)
}

// WithAudit makes the server record every state-changing request (PUT,
// POST, DELETE, PATCH) in trail, durably, before its answer is sent, and
// serve the trail at GET /v1/audit. The caller recorded is the one the
// request's context carries (access.FromContext): whatever identifies
// callers must wrap Handler(); role checks belong inside it, so that their
// refusals are recorded.
func WithAudit(trail AuditTrail) Option {
	return func(s *Server) { s.audit = trail }
}

const (
	// maxAuditField bounds a record's target, detail and error: a
	// refused request can carry a name or path of any length.
	maxAuditField = 512
	// auditActionOther is the action of a state-changing request that is no
	// known endpoint's; its target is the method and path.
	auditActionOther = "request"
)

// listAudit answers GET /v1/audit?since=RFC3339&limit=N. It is for admins
// only.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	if s.audit == nil {
		s.writeError(w, r, fmt.Errorf("%w: %s %s: kmd runs without an audit trail", errNoEndpoint, r.Method, r.URL.Path))
		return
	}
	q := r.URL.Query()
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.writeError(w, r, badRequestf(fmt.Sprintf("invalid since %q: want an RFC 3339 time such as 2026-11-22T09:00:00Z", v)))
			return
		}
		since = t
	}
	limit := api.DefaultAuditLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > api.MaxAuditLimit {
			s.writeError(w, r, badRequestf(fmt.Sprintf("invalid limit %q: want 1 to %d", v, api.MaxAuditLimit)))
			return
		}
		limit = n
	}
	recs, err := s.audit.List(since, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.AuditList{Records: make([]api.AuditRecord, 0, len(recs))}
	for _, a := range recs {
		out.Records = append(out.Records, api.AuditRecord{Time: a.Time, Who: a.Who, Via: a.Via, From: a.From,
			Action: a.Action, Target: a.Target, Detail: a.Detail, Outcome: a.Outcome, Status: a.Status, Error: a.Error, Seq: a.Seq})
	}
	writeJSON(w, http.StatusOK, out)
}

// changes reports whether a request of this method may change state.
func changes(method string) bool {
	switch method {
	case http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch:
		return true
	}
	return false
}

// audited records each state-changing request that h serves, after h ran
// and before its answer goes out: h's answer is held until the record is
// durable. A failure to record is logged; the answer still goes out, since
// what h did is done.
func (s *Server) audited(h http.Handler) http.Handler {
	if s.audit == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !changes(r.Method) {
			h.ServeHTTP(w, r)
			return
		}
		req := newAuditedRequest(r)
		resp := &heldResponse{w: w}
		defer func() {
			if p := recover(); p != nil {
				// net/http answers a panic by closing the connection; the
				// request is recorded as failed all the same.
				s.record(r, req.record(&heldResponse{status: http.StatusInternalServerError}))
				panic(p)
			}
		}()
		h.ServeHTTP(resp, r)
		s.record(r, req.record(resp))
		resp.send()
	})
}

// record writes rec to the trail, as the caller r's context carries.
func (s *Server) record(r *http.Request, rec audit.Record) {
	if access.FromContext(r.Context()) == nil {
		rec.From = r.RemoteAddr
	}
	if err := s.audit.Record(r.Context(), rec); err != nil {
		s.lg.Error("audit record not written", zap.String("action", rec.Action), zap.String("target", rec.Target),
			zap.Int("status", rec.Status), zap.Error(err))
	}
}

// heldResponse holds a handler's answer until it is recorded.
type heldResponse struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.w.Header() }

func (h *heldResponse) WriteHeader(status int) {
	if h.status == 0 && status >= 200 {
		h.status = status
	}
}

func (h *heldResponse) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(p)
}

// code is the status the handler answered: 200 if it wrote nothing.
func (h *heldResponse) code() int {
	if h.status == 0 {
		return http.StatusOK
	}
	return h.status
}

func (h *heldResponse) send() {
	h.w.WriteHeader(h.code())
	if h.body.Len() > 0 {
		h.w.Write(h.body.Bytes())
	}
}

// auditedRequest is what the trail needs of a request, taken before its
// handler runs: the action and target, and a copy of a JSON body.
type auditedRequest struct {
	action string
	target string
	scope  string // rekey, migrate: the scope named in the path
	body   []byte // the JSON body (its first 1 MiB); nil for other requests
	detail string // what the path says beyond the target (a key's fingerprint)
}

// newAuditedRequest names r's action and target from its method and path.
// Entry values are never copied: only the JSON bodies of the admin
// endpoints are, to name what they asked for.
func newAuditedRequest(r *http.Request) *auditedRequest {
	path := r.URL.EscapedPath()
	a := &auditedRequest{action: auditActionOther, target: r.Method + " " + path}
	rest, versioned := strings.CutPrefix(path, "/v1/")
	var segs []string
	if versioned {
		segs = strings.Split(rest, "/")
	}
	for i, seg := range segs {
		v, err := url.PathUnescape(seg)
		if err != nil {
			return a // the handler refuses the path; recorded as it came
		}
		segs[i] = v
	}
	m := r.Method
	readBody := false
	switch {
	case len(segs) == 4 && segs[0] == "domains" && segs[2] == "entries" && m == http.MethodPut:
		a.action, a.target = "entry.put", segs[1]+"/"+segs[3]
	case len(segs) == 4 && segs[0] == "domains" && segs[2] == "entries" && m == http.MethodDelete:
		a.action, a.target = "entry.delete", segs[1]+"/"+segs[3]
	case len(segs) == 3 && segs[0] == "domains" && segs[2] == "import" && m == http.MethodPost:
		a.action, a.target = "entry.import", segs[1]
	case len(segs) == 2 && segs[0] == "rekey" && m == http.MethodPut:
		a.action, a.target, a.scope, readBody = "rekey.modify", segs[1], segs[1], true
	case len(segs) == 2 && segs[0] == "rekey" && m == http.MethodPost:
		a.action, a.target, a.scope, readBody = "rekey.start", segs[1], segs[1], true
	case len(segs) == 3 && segs[0] == "rekey" && (segs[2] == "continue" || segs[2] == "cancel") && m == http.MethodPost:
		a.action, a.target, a.scope, readBody = "rekey."+segs[2], segs[1], segs[1], true
	case len(segs) == 3 && segs[0] == "keys" && m == http.MethodDelete:
		a.action, a.target = "keys.delete", segs[1]
		if d := r.URL.Query().Get("domain"); d != "" {
			a.target += ":" + d
		}
		a.detail = "fingerprint=" + segs[2]
	case len(segs) == 2 && segs[0] == "migrate" && m == http.MethodPost:
		a.action, a.target, a.scope, readBody = "migrate", segs[1], segs[1], true
	case len(segs) == 3 && segs[0] == "kmip" && segs[1] == "servers" && segs[2] == "" && m == http.MethodPost:
		a.action, a.target, readBody = "kmip.server.create", "", true
	case len(segs) == 3 && segs[0] == "kmip" && segs[1] == "servers" && m == http.MethodDelete:
		a.action, a.target = "kmip.server.delete", segs[2]
	case len(segs) == 4 && segs[0] == "kmip" && segs[1] == "servers" && segs[3] == "verify" && m == http.MethodPost:
		a.action, a.target = "kmip.server.verify", segs[2]
		if a.target == "-" {
			a.target = "all"
		}
	}
	if readBody && r.Body != nil {
		// Read before the handler, which may refuse without reading
		// (a role check), and handed on unchanged.
		b, _ := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
		a.body = b
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	}
	return a
}

// adminBody holds the fields of the admin endpoints' bodies that say what
// was asked. The KMIP server's PEM files are not among them.
type adminBody struct {
	Domains     []string `json:"domains"`
	KeyRotation *string  `json:"key_rotation"`
	StagePeriod string   `json:"stage_period"`
	ToServer    string   `json:"to_server"`
	ToLocal     bool     `json:"to_local"`
	Retry       bool     `json:"retry"`
	Name        string   `json:"name"`
	Host        string   `json:"host"`
	Port        int      `json:"port"`
}

// record builds the record of the request answered with resp.
func (a *auditedRequest) record(resp *heldResponse) audit.Record {
	status := resp.code()
	rec := audit.Record{Action: a.action, Target: a.target, Outcome: audit.OutcomeOf(status), Status: status}
	var body adminBody
	if a.body != nil {
		// A body that does not parse was refused by the handler; the
		// record then names what the path does.
		_ = json.Unmarshal(a.body, &body)
		clear(a.body) // a KMIP create carries a private key
	}
	ok := rec.Outcome == audit.OK
	var detail []string
	if a.detail != "" {
		detail = append(detail, a.detail)
	}
	switch a.action {
	case "entry.put":
		if ok {
			if v := resp.Header().Get("ETag"); v != "" {
				detail = append(detail, "version="+strings.Trim(v, `"`))
			}
		}
	case "entry.import":
		var out api.ImportResponse
		if ok && json.Unmarshal(resp.body.Bytes(), &out) == nil {
			detail = append(detail, "imported="+strconv.Itoa(out.Imported))
		}
	case "rekey.modify":
		if body.KeyRotation != nil {
			detail = append(detail, "key_rotation="+*body.KeyRotation)
		}
	case "rekey.start", "migrate", "rekey.continue", "rekey.cancel":
		if len(body.Domains) > 0 {
			rec.Target = a.scope + ":" + strings.Join(body.Domains, ",")
		}
		if body.StagePeriod != "" {
			detail = append(detail, "stage_period="+body.StagePeriod)
		}
		switch {
		case a.action != "migrate":
		case body.ToServer != "":
			detail = append(detail, "to="+body.ToServer)
		case body.ToLocal:
			detail = append(detail, "to="+provider.LocationLocal)
		}
		if body.Retry {
			detail = append(detail, "retry")
		}
		var out api.RekeyStartResponse
		if ok && json.Unmarshal(resp.body.Bytes(), &out) == nil {
			detail = append(detail, "started="+strings.Join(out.Started, ","))
		}
	case "kmip.server.create":
		rec.Target = body.Name
		var out api.KMIPServer
		switch {
		case ok && json.Unmarshal(resp.body.Bytes(), &out) == nil:
			detail = append(detail, "host="+out.Host+":"+strconv.Itoa(out.Port))
		case body.Host != "" && body.Port != 0:
			detail = append(detail, "host="+body.Host+":"+strconv.Itoa(body.Port))
		case body.Host != "":
			detail = append(detail, "host="+body.Host)
		}
	case "kmip.server.verify":
		var out api.KMIPVerifyResponse
		if ok && json.Unmarshal(resp.body.Bytes(), &out) == nil {
			for _, rep := range out.Reports {
				result := "failed"
				if rep.OK {
					result = "ok"
				}
				detail = append(detail, rep.Server+"="+result)
			}
		}
	}
	rec.Target = auditField(rec.Target)
	rec.Detail = auditField(strings.Join(detail, " "))
	if !ok {
		var eb api.ErrorBody
		if json.Unmarshal(resp.body.Bytes(), &eb) != nil || eb.Error == "" {
			eb.Error = http.StatusText(status)
		}
		rec.Error = auditField(eb.Error)
	}
	return rec
}

// auditField makes s fit a record: one line, valid UTF-8, at most
// maxAuditField bytes.
func auditField(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxAuditField {
		return s
	}
	cut := maxAuditField - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
