package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/rekey"
)

// stagedRoutes adds the dry run, continue and cancel of staged rekeys, and
// the master keys.
func (s *Server) stagedRoutes(mux routes) {
	// All for admins: the plan and the key list show fingerprints.
	mux.need("GET "+api.PathRekey+"{scope}"+api.PathPlanSuffix, access.Admin, "plan a rekey of {scope}", s.planRekey)
	mux.need("POST "+api.PathRekey+"{scope}"+api.PathContinueSuffix, access.Admin, "continue the staged rekeys of {scope}", s.continueRekey)
	mux.need("POST "+api.PathRekey+"{scope}"+api.PathCancelSuffix, access.Admin, "cancel the staged rekeys of {scope}", s.cancelRekey)
	mux.need("GET "+api.PathKeys+"{scope}", access.Admin, "list the master keys of {scope}", s.listKeys)
	mux.need("DELETE "+api.PathKeys+"{scope}/{fingerprint}", access.Admin, "delete a master key of {scope}", s.deleteKey)
}

// queryDomains reads ?domain=D (repeatable; the sed scope takes none),
// and refuses any parameter but those and the others allowed.
func queryDomains(r *http.Request, others ...string) ([]string, error) {
	if err := checkQuery(r, append([]string{"domain"}, others...)...); err != nil {
		return nil, err
	}
	ds := r.URL.Query()["domain"]
	if r.PathValue("scope") == api.ScopeSED && len(ds) > 0 {
		return nil, badRequestf("the sed scope has one domain; do not name domains")
	}
	return ds, nil
}

// checkQuery refuses query parameters other than allowed: a misspelt one
// must not be ignored.
func checkQuery(r *http.Request, allowed ...string) error {
	for k := range r.URL.Query() {
		if !slices.Contains(allowed, k) {
			return badRequestf(fmt.Sprintf("unknown query parameter %q: want %v", k, allowed))
		}
	}
	return nil
}

func planKey(k provider.KeyInfo) *api.PlanKey {
	if k.ID == "" {
		return nil
	}
	return &api.PlanKey{KeyID: k.ID, Fingerprint: k.Fingerprint, Location: k.Location, RemoteKeyID: k.RemoteID}
}

// planRekey answers what a rekey would do. It reads only: a dry run changes
// nothing in kmd's data dir.
func (s *Server) planRekey(w http.ResponseWriter, r *http.Request) {
	names, err := queryDomains(r, "stage_period")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var o rekey.StartOptions
	if v := r.URL.Query().Get("stage_period"); v != "" {
		if o.Stage, err = rekey.ParseStagePeriod(v); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	p, err := s.reg.PlanRekey(r.Context(), r.PathValue("scope"), names, o)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.RekeyPlan{Scope: p.Scope, DryRun: true, WouldStart: p.Refused == "", Refused: p.Refused,
		Domains: []api.RekeyPlanDomain{}, Total: len(p.Rows)}
	if !p.Stage.IsNever() {
		out.StagePeriod = p.Stage.String()
	}
	for _, row := range p.Rows {
		d := api.RekeyPlanDomain{Domain: row.Domain, Node: row.Node, Entries: row.Entries, Action: row.Action,
			Reason: row.Reason, CurrentKey: planKey(row.Current)}
		if row.CreateAt != "" {
			d.Create = &api.PlanNewKey{Location: row.CreateAt, KeyID: row.CreateID}
		}
		if row.Destroy != nil {
			d.Destroy = planKey(*row.Destroy)
		}
		out.Entries += row.Entries
		out.Domains = append(out.Domains, d)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) continueRekey(w http.ResponseWriter, r *http.Request) {
	s.stagedAction(w, r, "continue", s.reg.ContinueStaged)
}

func (s *Server) cancelRekey(w http.ResponseWriter, r *http.Request) {
	s.stagedAction(w, r, "cancel", s.reg.CancelStaged)
}

func (s *Server) stagedAction(w http.ResponseWriter, r *http.Request, verb string,
	act func(ctx context.Context, scope string, names []string) ([]string, error)) {
	var req api.StagedRequest
	if err := decodeJSON(w, r, &req, true, `{"domains":["S3"]} or an empty body for every STAGED domain of the scope`); err != nil {
		s.writeError(w, r, err)
		return
	}
	scope := r.PathValue("scope")
	if scope == api.ScopeSED && len(req.Domains) > 0 {
		s.writeError(w, r, badRequestf("the sed scope has one domain; do not name domains"))
		return
	}
	done, err := act(r.Context(), scope, req.Domains)
	if len(done) > 0 {
		s.lg.Info("staged rekey action started", zap.String("action", verb), zap.String(logs.Scope, scope), zap.Strings("domains", done))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, api.RekeyStartResponse{Started: done})
}

func apiKey(k domains.KeyRow) api.Key {
	out := api.Key{Domain: k.Domain, Node: k.Node, KeyID: k.ID, Fingerprint: k.Fingerprint, State: string(k.State),
		Location: k.Location, RemoteKeyID: k.RemoteID, Created: utcSecond(k.Created), Entries: k.Entries}
	if !k.DestroyAt.IsZero() {
		t := utcSecond(k.DestroyAt)
		out.DestroyAt = &t
	}
	return out
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	names, err := queryDomains(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rows, err := s.reg.Keys(r.Context(), r.PathValue("scope"), names)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.KeyList{Keys: []api.Key{}, Total: len(rows)}
	for _, k := range rows {
		out.Keys = append(out.Keys, apiKey(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "domain"); err != nil {
		s.writeError(w, r, err)
		return
	}
	scope := r.PathValue("scope")
	domain := r.URL.Query().Get("domain")
	switch {
	case scope == api.ScopeSED && domain != "" && domain != domains.SEDDomain:
		s.writeError(w, r, badRequestf("the sed scope has one domain; do not name domains"))
		return
	case scope == api.ScopeSED:
		domain = domains.SEDDomain
	case domain == "":
		s.writeError(w, r, badRequestf("missing domain: want ?domain=D, the domain whose key to delete"))
		return
	}
	k, err := s.reg.DeleteKey(r.Context(), scope, domain, r.PathValue("fingerprint"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.lg.Info("retired key deleted", zap.String(logs.Domain, domain), zap.String(logs.KeyID, k.ID), zap.String(logs.Location, k.Location))
	writeJSON(w, http.StatusOK, api.KeyDeleteResponse{Deleted: apiKey(k)})
}
