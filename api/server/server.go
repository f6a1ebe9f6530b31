// Package server serves kmd's HTTP/JSON API (package api) over the
// registry of domains.
package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// EventLister lists persisted events; logs.Journal implements it.
type EventLister interface {
	List(since time.Time) []logs.Event
}

// Server holds the handlers.
type Server struct {
	reg     *domains.Registry
	events  EventLister
	lg      *zap.Logger
	version string
	audit   AuditTrail   // nil: no audit trail
	metrics http.Handler // GET /metrics; see WithMetrics

	policy *access.Policy // who holds which role (access.go)
}

// Option configures a Server.
type Option func(*Server)

// New returns a server over reg.
func New(reg *domains.Registry, events EventLister, lg *zap.Logger, version string, opts ...Option) *Server {
	s := &Server{reg: reg, events: events, lg: lg, version: version}
	for _, o := range opts {
		o(s)
	}
	if s.policy == nil {
		s.policy = defaultPolicy()
	}
	return s
}

const (
	maxJSONBody  = 1 << 20
	defaultLimit = 1000
	maxLimit     = 10000
	// maxImportLine bounds one import line: a 64 KiB value in base64 plus
	// a name and the JSON around them.
	maxImportLine = 128 << 10
)

// Handler returns the API's routes. Every request first gets its caller
// (identify); every route then checks the caller's role (routes,
// routeDomain): mux.HandleFunc registers a route for admins only.
func (s *Server) Handler() http.Handler {
	mux := routes{s: s, mux: http.NewServeMux()}
	mux.open("GET "+api.PathVersion, s.getVersion)
	mux.need("GET "+api.PathEvents, access.Monitor, "list the events", s.listEvents)
	mux.need("GET "+api.PathStatus+"{scope}", access.Monitor, "read the status of {scope}", s.getStatus)
	mux.need("GET "+api.PathRekey+"{scope}", access.Monitor, "view the rekey schedule of {scope}", s.getRekey)
	mux.need("PUT "+api.PathRekey+"{scope}", access.Admin, "change the key rotation of {scope}", s.modifyRekey)
	mux.need("POST "+api.PathRekey+"{scope}", access.Admin, "start a rekey of {scope}", s.startRekey)
	s.kmipRoutes(mux)
	mux.need("GET "+api.PathAudit, access.Admin, "list the audit trail", s.listAudit)
	mux.need("GET "+api.PathMetrics, access.Monitor, "read the metrics", s.metricsHandler().ServeHTTP)
	s.stagedRoutes(mux)
	mux.HandleFunc("/", s.noEndpoint)
	// The caller first, so that the audit trail records who asked.
	return s.identify(s.audited(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.EscapedPath(), api.PathDomains) {
			s.routeDomain(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})))
}

var errNoEndpoint = errors.New("no such endpoint")

func (s *Server) noEndpoint(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, fmt.Errorf("%w: %s %s", errNoEndpoint, r.Method, r.URL.Path))
}

// routeDomain routes /v1/domains/{domain}/… on the escaped path itself:
// http.ServeMux would clean "." and ".." segments away, and those are valid
// entry names.
func (s *Server) routeDomain(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), api.PathDomains), "/")
	for i, seg := range segs {
		v, err := url.PathUnescape(seg)
		if err != nil {
			s.writeError(w, r, badRequestf(fmt.Sprintf("invalid path segment %q: %v", seg, err)))
			return
		}
		segs[i] = v
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet // as ServeMux does; net/http drops the body
	}
	// The role is checked before anything is looked up, so that no
	// caller learns from a 404 what it may not read.
	var h http.HandlerFunc
	domain := segs[0]
	role, what := access.Service(domain), ""
	switch {
	case len(segs) == 2 && segs[1] == "entries" && method == http.MethodGet:
		h, what = s.listEntries, "list the entries of "+shown(domain)
	case len(segs) == 3 && segs[1] == "entries":
		switch method {
		case http.MethodGet:
			h, what = s.getEntry, "read entries of "+shown(domain)
		case http.MethodPut:
			h, what = s.putEntry, "write entries of "+shown(domain)
		case http.MethodDelete:
			h, what = s.deleteEntry, "delete entries of "+shown(domain)
		}
		r.SetPathValue("name", segs[2])
	case len(segs) == 2 && segs[1] == "import" && method == http.MethodPost:
		h, what = s.importEntries, "import entries into "+shown(domain)
	case len(segs) == 2 && segs[1] == "export" && method == http.MethodGet:
		h, role, what = s.exportEntries, access.Admin, "export the entries of "+shown(domain)
	}
	if h == nil {
		h, role, what = s.noEndpoint, access.Admin, r.Method+" "+shown(r.URL.Path)
	}
	if !s.require(w, r, role, what) {
		return
	}
	r.SetPathValue("domain", domain)
	h(w, r)
}

func (s *Server) getVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.Version{Version: s.version})
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.writeError(w, r, badRequestf(fmt.Sprintf("invalid since %q: want an RFC 3339 time such as 2026-11-22T09:00:00Z", v)))
			return
		}
		since = t
	}
	evs := s.events.List(since)
	out := api.EventList{Events: make([]api.Event, 0, len(evs))}
	for _, e := range evs {
		out.Events = append(out.Events, api.Event{Seq: e.Seq, Time: e.Time, Name: e.Name, Scope: e.Scope, Domain: e.Domain,
			Node: e.Node, KeyID: e.KeyID, Attempt: e.Attempt, Error: e.Error, Message: e.Message})
	}
	writeJSON(w, http.StatusOK, out)
}

func utcSecond(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	scope := r.PathValue("scope")
	rows, err := s.reg.Status(r.Context(), scope)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if scope == api.ScopeSED {
		out := api.SEDStatus{Nodes: []api.NodeStatus{}, Total: len(rows)}
		for _, d := range rows {
			st := d.Status
			if st == domains.StatusActive {
				st = api.StatusLocal
				if d.Location != provider.LocationLocal {
					st = api.StatusKMIP
				}
			}
			out.Nodes = append(out.Nodes, api.NodeStatus{Node: d.Node, Status: st, KeyID: d.KeyID, Location: d.Location,
				RemoteKeyID: d.RemoteKeyID, KeyCreated: utcSecond(d.KeyCreated), Error: d.Error, Entries: d.Entries,
				Rekey: progress(d.Rekey), NextRetry: d.NextRetry, StagedUntil: d.StagedUntil})
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	out := api.ClusterStatus{Domains: []api.DomainStatus{}, Total: len(rows)}
	for _, d := range rows {
		out.Domains = append(out.Domains, api.DomainStatus{Domain: d.Domain, Status: d.Status, KeyID: d.KeyID,
			KeyCreated: utcSecond(d.KeyCreated), Location: d.Location, RemoteKeyID: d.RemoteKeyID, Error: d.Error,
			Entries: d.Entries, Rekey: progress(d.Rekey), NextRetry: d.NextRetry, StagedUntil: d.StagedUntil})
	}
	writeJSON(w, http.StatusOK, out)
}

func progress(p *domains.Progress) *api.Progress {
	if p == nil {
		return nil
	}
	return &api.Progress{Done: p.Done, Total: p.Total, Started: p.Started}
}

func rekeyView(s rekey.ScopeSchedule) api.RekeyView {
	v := api.RekeyView{RekeyTime: utcSecond(s.RekeyTime), KeyRotation: s.Rotation.String(), NextRekey: "Never", LastResult: s.LastResult}
	if next := s.Next(); !next.IsZero() {
		v.NextRekey = utcSecond(next).Format(time.RFC3339)
	}
	if v.LastResult == "" {
		v.LastResult = rekey.ResultNone
	}
	return v
}

func (s *Server) getRekey(w http.ResponseWriter, r *http.Request) {
	sched, err := s.reg.Schedule(r.PathValue("scope"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rekeyView(sched))
}

// decodeJSON reads a JSON body strictly: unknown fields and trailing data
// are errors that say what was expected.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool, want string) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return badRequestf(fmt.Sprintf("request body over %d bytes (1 MiB); want %s", maxJSONBody, want))
	}
	if err != nil {
		return badRequestf(fmt.Sprintf("request body: %v", err))
	}
	if allowEmpty && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := decodeStrict(body, v); err != nil {
		return badRequestf(fmt.Sprintf("invalid request body: %v; want %s", err, want))
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown or repeated
// fields and nothing after it but white space. It is encoding/json/v2 as
// developed in github.com/go-json-experiment/json: an import decodes one
// line per entry, and v1's Decoder took a quarter of an import's CPU time;
// v2 takes a fifth of what v1 did.
func decodeStrict(b []byte, v any) error {
	if err := jsonv2.Unmarshal(b, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		return errors.New(jsonProblem(err))
	}
	return nil
}

// jsonProblem says what is wrong with a JSON value in the request's terms
// — its fields and JSON's kinds — not in Go's.
func jsonProblem(err error) string {
	var se *jsonv2.SemanticError
	var xe *jsontext.SyntacticError
	switch {
	case errors.As(err, &se):
		field := ""
		if p := string(se.JSONPointer); p != "" {
			field = fmt.Sprintf("field %q: ", strings.TrimPrefix(p, "/"))
		}
		switch {
		case errors.Is(se.Err, jsonv2.ErrUnknownName):
			return fmt.Sprintf("unknown field %q", strings.TrimPrefix(string(se.JSONPointer), "/"))
		case se.Err != nil:
			return field + se.Err.Error()
		case se.JSONKind != 0 && se.GoType != nil:
			return fmt.Sprintf("%sa JSON %s where %s belongs", field, jsonKindName(se.JSONKind), jsonKindOf(se.GoType))
		}
		return field + "a value of the wrong kind"
	case errors.As(err, &xe):
		switch {
		case errors.Is(xe.Err, io.ErrUnexpectedEOF):
			return "the JSON value ends early"
		case errors.Is(xe.Err, jsontext.ErrDuplicateName):
			return fmt.Sprintf("field %q appears twice", strings.TrimPrefix(string(xe.JSONPointer), "/"))
		case strings.Contains(xe.Err.Error(), "after top-level value"):
			return "data after the JSON value"
		}
		return fmt.Sprintf("%v (byte %d)", xe.Err, xe.ByteOffset)
	}
	return err.Error()
}

// jsonKindName names a kind of JSON value.
func jsonKindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean"
	case '"':
		return "string"
	case '0':
		return "number"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "value"
}

// jsonKindOf names the JSON that decodes into t.
func jsonKindOf(t reflect.Type) string {
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return "a base64 string"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "an integer"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return "a list"
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		return "an object"
	case t.Kind() == reflect.Pointer:
		return jsonKindOf(t.Elem())
	}
	return "another kind of value"
}

func (s *Server) modifyRekey(w http.ResponseWriter, r *http.Request) {
	var req api.RekeyModifyRequest
	if err := decodeJSON(w, r, &req, false, `{"key_rotation":"6W"}`); err != nil {
		s.writeError(w, r, err)
		return
	}
	rot, err := rekey.ParseRotation(req.KeyRotation)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sched, err := s.reg.SetRotation(r.PathValue("scope"), rot)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.lg.Info("key rotation set", zap.String(logs.Scope, r.PathValue("scope")), zap.String("rotation", rot.String()))
	writeJSON(w, http.StatusOK, rekeyView(sched))
}

func (s *Server) startRekey(w http.ResponseWriter, r *http.Request) {
	var req api.RekeyStartRequest
	if err := decodeJSON(w, r, &req, true, `{"domains":["S3"]} or an empty body for the whole scope`); err != nil {
		s.writeError(w, r, err)
		return
	}
	var o rekey.StartOptions
	if req.StagePeriod != "" {
		stage, err := rekey.ParseStagePeriod(req.StagePeriod)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		o.Stage = stage
	}
	started, err := s.reg.StartRekeyWith(r.PathValue("scope"), req.Domains, o)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, api.RekeyStartResponse{Started: started})
}

func (s *Server) vault(w http.ResponseWriter, r *http.Request) *provider.Vault {
	v, err := s.reg.Vault(r.PathValue("domain"))
	if err != nil {
		s.writeError(w, r, err)
		return nil
	}
	return v
}

func setETag(w http.ResponseWriter, version int64) {
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(version, 10)))
}

// cond reads If-Match: "N" and If-None-Match: *.
func cond(r *http.Request) (provider.Cond, error) {
	var c provider.Cond
	if v := r.Header.Get("If-Match"); v != "" {
		// ETags compare as written: "04" is not "4".
		inner, quoted := strings.CutPrefix(v, `"`)
		inner, closed := strings.CutSuffix(inner, `"`)
		n, err := strconv.ParseInt(inner, 10, 64)
		if err != nil || n < 1 || !quoted || !closed || strconv.FormatInt(n, 10) != inner {
			return c, badRequestf(fmt.Sprintf(`invalid If-Match %q: want an entry version in quotes, as its ETag gives it, e.g. "3"`, v))
		}
		c.IfVersion = n
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if v != "*" {
			return c, badRequestf(fmt.Sprintf(`invalid If-None-Match %q: only * (create only) is supported`, v))
		}
		c.CreateOnly = true
	}
	if c.CreateOnly && c.IfVersion > 0 {
		return c, badRequestf("If-Match and If-None-Match together can never both hold; send one")
	}
	return c, nil
}

func (s *Server) getEntry(w http.ResponseWriter, r *http.Request) {
	v := s.vault(w, r)
	if v == nil {
		return
	}
	val, version, err := v.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setETag(w, version)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(val)))
	w.WriteHeader(http.StatusOK)
	w.Write(val)
	clear(val)
}

func (s *Server) putEntry(w http.ResponseWriter, r *http.Request) {
	v := s.vault(w, r)
	if v == nil {
		return
	}
	c, err := cond(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	val, err := io.ReadAll(io.LimitReader(r.Body, provider.MaxValueSize+1))
	if err != nil {
		s.writeError(w, r, badRequestf(fmt.Sprintf("request body: %v", err)))
		return
	}
	if len(val) > provider.MaxValueSize {
		s.writeError(w, r, fmt.Errorf("%w: more than %d bytes (64 KiB)", provider.ErrValueTooLarge, provider.MaxValueSize))
		return
	}
	version, err := v.Put(r.Context(), r.PathValue("name"), val, c)
	clear(val)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setETag(w, version)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteEntry(w http.ResponseWriter, r *http.Request) {
	v := s.vault(w, r)
	if v == nil {
		return
	}
	c, err := cond(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if c.CreateOnly {
		s.writeError(w, r, badRequestf("If-None-Match does not apply to DELETE"))
		return
	}
	if err := v.Delete(r.Context(), r.PathValue("name"), c.IfVersion); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listEntries(w http.ResponseWriter, r *http.Request) {
	v := s.vault(w, r)
	if v == nil {
		return
	}
	q := r.URL.Query()
	limit := defaultLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxLimit {
			s.writeError(w, r, badRequestf(fmt.Sprintf("invalid limit %q: want 1 to %d", l, maxLimit)))
			return
		}
		limit = n
	}
	names, err := v.List(r.Context(), q.Get("after"), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.EntryList{Names: names}
	if len(names) == limit {
		out.Next = names[len(names)-1]
	}
	writeJSON(w, http.StatusOK, out)
}

// importEntries reads JSON lines and imports them all or none. The first bad
// line is named by number. Lines are parsed as they arrive and written as
// they are sealed, so an import of any size holds a few hundred entries in
// memory, not the whole body.
func (s *Server) importEntries(w http.ResponseWriter, r *http.Request) {
	v := s.vault(w, r)
	if v == nil {
		return
	}
	body := newIdleBody(w, r.Body, time.Duration(importIdle.Load()))
	defer body.done()
	rd := newImportReader(body)
	n, err := v.Import(r.Context(), rd.next)
	if pause := body.stalled(); err != nil && pause != nil {
		err = pause
	}
	var dup *provider.DuplicateError
	if errors.As(err, &dup) {
		err = badRequestf(fmt.Sprintf("line %d: name %q is already on an earlier line; want each name once", rd.line(dup.Index), dup.Name))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.lg.Info("entries imported", zap.String(logs.Domain, v.Domain()), zap.Int(logs.Entries, n))
	writeJSON(w, http.StatusOK, api.ImportResponse{Imported: n})
}

// importReader parses an import body line by line.
type importReader struct {
	sc    *bufio.Scanner
	n     int     // lines read
	lines []int32 // the line of each item returned, for errors about it
}

func newImportReader(body io.Reader) *importReader {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), maxImportLine)
	return &importReader{sc: sc}
}

// line is the line number of the i-th item returned, from 0.
func (rd *importReader) line(i int) int {
	if i < 0 || i >= len(rd.lines) {
		return rd.n
	}
	return int(rd.lines[i])
}

// next returns the next item, io.EOF at the end, or an error naming the
// line that is wrong.
func (rd *importReader) next() (provider.Item, error) {
	for rd.sc.Scan() {
		rd.n++
		line := bytes.TrimSpace(rd.sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l api.ImportLine
		if err := decodeStrict(line, &l); err != nil {
			return provider.Item{}, badRequestf(fmt.Sprintf(`line %d: %v; want {"name":"…","value":"<base64>"}`, rd.n, err))
		}
		if err := provider.ValidateName(l.Name); err != nil {
			return provider.Item{}, fmt.Errorf("line %d: %w", rd.n, err)
		}
		if err := provider.ValidateValue(l.Value); err != nil {
			return provider.Item{}, fmt.Errorf("line %d: %w", rd.n, err)
		}
		rd.lines = append(rd.lines, int32(rd.n))
		return provider.Item{Name: l.Name, Value: l.Value}, nil
	}
	if err := rd.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return provider.Item{}, badRequestf(fmt.Sprintf("line %d: longer than %d bytes; values hold at most 64 KiB", rd.n+1, maxImportLine))
		}
		return provider.Item{}, badRequestf(fmt.Sprintf("request body: %v", err))
	}
	return provider.Item{}, io.EOF
}

// exportEntries streams every entry as JSON lines, then api.ExportEnd.
func (s *Server) exportEntries(w http.ResponseWriter, r *http.Request) {
	v := s.vault(w, r)
	if v == nil {
		return
	}
	ctx := r.Context()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	after := ""
	n := 0
	for {
		names, err := v.List(ctx, after, defaultLimit)
		if err != nil {
			s.exportFailed(w, r, n, err)
			return
		}
		for _, name := range names {
			val, _, err := v.Get(ctx, name)
			if errors.Is(err, provider.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				s.exportFailed(w, r, n, err)
				return
			}
			err = enc.Encode(api.ImportLine{Name: name, Value: val})
			clear(val)
			if err != nil {
				return // the client went away
			}
			n++
		}
		if len(names) < defaultLimit {
			break
		}
		after = names[len(names)-1]
	}
	bw.WriteString(api.ExportEnd + "\n")
	bw.Flush()
	s.lg.Info("entries exported", zap.String(logs.Domain, v.Domain()), zap.Int(logs.Entries, n))
}

// exportFailed ends an export without its end line, so the client reports
// it incomplete; before anything was sent it answers a proper error.
func (s *Server) exportFailed(w http.ResponseWriter, r *http.Request, n int, err error) {
	s.lg.Error("export failed", zap.String(logs.Domain, r.PathValue("domain")), zap.Int(logs.Entries, n), zap.Error(err))
	if n == 0 {
		s.writeError(w, r, err)
	}
}
