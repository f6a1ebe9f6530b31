package server

import (
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/provider"
)

// kmipRoutes registers the KMIP routes: all of them for admins only.
func (s *Server) kmipRoutes(mux routes) {
	mux.HandleFunc("GET "+api.PathKMIPServers, s.listKMIPServers)
	mux.HandleFunc("POST "+api.PathKMIPServers, s.createKMIPServer)
	mux.HandleFunc("GET "+api.PathKMIPServers+"{name}", s.viewKMIPServer)
	mux.HandleFunc("DELETE "+api.PathKMIPServers+"{name}", s.deleteKMIPServer)
	mux.HandleFunc("POST "+api.PathKMIPServers+"{name}/verify", s.verifyKMIPServers)
	mux.HandleFunc("POST "+api.PathMigrate+"{scope}", s.migrate)
}

func kmipServer(i domains.KMIPServerInfo) api.KMIPServer {
	ds := i.Domains
	if ds == nil {
		ds = []string{}
	}
	return api.KMIPServer{Name: i.Name, Host: i.Host, Port: i.Port, MinTLSVersion: i.MinTLSVersion,
		ConnectionTimeout: i.ConnectionTimeout.String(), ClientCertSubject: i.ClientCertSubject,
		ClientCertExpires: i.ClientCertExpires, Created: i.Created, Keys: i.Keys, Domains: ds}
}

func (s *Server) listKMIPServers(w http.ResponseWriter, r *http.Request) {
	out := api.KMIPServerList{Servers: []api.KMIPServer{}}
	for _, i := range s.reg.KMIPServers(r.Context()) {
		out.Servers = append(out.Servers, kmipServer(i))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) viewKMIPServer(w http.ResponseWriter, r *http.Request) {
	i, err := s.reg.KMIPServer(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, kmipServer(i))
}

func (s *Server) createKMIPServer(w http.ResponseWriter, r *http.Request) {
	var req api.KMIPServerCreateRequest
	if err := decodeJSON(w, r, &req, false, `{"name":…,"host":…,"port":5696,"ca_cert_pem":…,"client_cert_pem":…,"client_key_pem":…}`); err != nil {
		s.writeError(w, r, err)
		return
	}
	srv := domains.KMIPServer{Name: req.Name, Host: req.Host, Port: req.Port, MinTLSVersion: req.MinTLSVersion}
	switch {
	case req.Host == "":
		s.writeError(w, r, badRequestf("missing host: want the KMIP server's host name or address"))
		return
	case req.Port < 0 || req.Port > 65535:
		s.writeError(w, r, badRequestf(fmt.Sprintf("invalid port %d: want 1-65535", req.Port)))
		return
	case req.MinTLSVersion != "" && req.MinTLSVersion != "1.2" && req.MinTLSVersion != "1.3":
		s.writeError(w, r, badRequestf(fmt.Sprintf("invalid minimum TLS version %q: want 1.2 or 1.3", req.MinTLSVersion)))
		return
	}
	if req.ConnectionTimeout != "" {
		d, err := time.ParseDuration(req.ConnectionTimeout)
		if err != nil || d <= 0 {
			s.writeError(w, r, badRequestf(fmt.Sprintf("invalid connection timeout %q: want a positive duration such as 10s", req.ConnectionTimeout)))
			return
		}
		srv.ConnectionTimeout = d
	}
	_, err := s.reg.AddKMIPServer(r.Context(), srv, domains.KMIPFiles{
		CACert: []byte(req.CACertPEM), ClientCert: []byte(req.ClientCertPEM), ClientKey: []byte(req.ClientKeyPEM),
		CACertFile: req.CACertFile, ClientCertFile: req.ClientCertFile, ClientKeyFile: req.ClientKeyFile})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	i, err := s.reg.KMIPServer(r.Context(), req.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, kmipServer(i))
}

func (s *Server) deleteKMIPServer(w http.ResponseWriter, r *http.Request) {
	if err := s.reg.DeleteKMIPServer(r.Context(), r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) verifyKMIPServers(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "-" {
		name = ""
	}
	reps, err := s.reg.VerifyKMIPServers(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.KMIPVerifyResponse{Reports: []api.KMIPVerifyReport{}}
	for _, rep := range reps {
		ar := api.KMIPVerifyReport{Server: rep.Server, Addr: rep.Addr, Reachable: rep.Reachable, TLSVersion: rep.TLSVersion,
			KMIPVersion: rep.KMIPVersion, OK: rep.OK, Error: rep.Error, Steps: []api.KMIPVerifyStep{}}
		for _, st := range rep.Steps {
			ar.Steps = append(ar.Steps, api.KMIPVerifyStep{Name: st.Name, Result: st.Result, Error: st.Error})
		}
		out.Reports = append(out.Reports, ar)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) migrate(w http.ResponseWriter, r *http.Request) {
	var req api.MigrateRequest
	if err := decodeJSON(w, r, &req, false, `{"to_server":"NAME"} or {"to_local":true}`); err != nil {
		s.writeError(w, r, err)
		return
	}
	if (req.ToServer == "") == !req.ToLocal {
		s.writeError(w, r, badRequestf("want exactly one of to_server or to_local"))
		return
	}
	target := req.ToServer
	if req.ToLocal {
		target = provider.LocationLocal
	}
	scope := r.PathValue("scope")
	if scope == api.ScopeSED && len(req.Domains) > 0 {
		s.writeError(w, r, badRequestf("the sed scope has one domain; do not name domains"))
		return
	}
	started, err := s.reg.Migrate(scope, req.Domains, target, req.Retry)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.lg.Info("migration started", zap.String(logs.Scope, scope), zap.String(logs.Location, target), zap.Strings("domains", started))
	writeJSON(w, http.StatusAccepted, api.RekeyStartResponse{Started: started})
}
