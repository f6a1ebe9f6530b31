package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api/ui"
	"github.com/kmd-project/kmd/logs"
)

// WithPolicy maps callers to roles. Without it only root and kmd's own
// user (on the socket) hold a role: admin.
func WithPolicy(p *access.Policy) Option { return func(s *Server) { s.policy = p } }

// Identify returns h behind the same identification as Handler: for
// routes served in front of the API (the web page's), so that they too
// know their caller. Handler keeps the caller Identify found.
func (s *Server) Identify(h http.Handler) http.Handler { return s.identify(h) }

// forbidden is a caller asking for what its roles do not allow.
type forbidden struct{ msg string }

func (e *forbidden) Error() string { return e.msg }

// identify finds who made each request, before any handler runs, and
// stores it with access.WithCaller: the socket peer's credentials (set by
// access.ConnContext), else the verified client certificate. A caller an
// outer handler already stored with access.WithCaller is kept: the web
// page's gate on --ui-listen stores the session's. A request from no one
// kmd can name is refused.
func (s *Server) identify(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if access.FromContext(r.Context()) != nil {
			next.ServeHTTP(w, r)
			return
		}
		c, err := s.caller(r)
		if err != nil {
			s.lg.Warn("access refused", zap.String("who", "unknown"), zap.String("from", r.RemoteAddr),
				zap.String("method", r.Method), zap.String(logs.Path, r.URL.Path), zap.Error(err))
			s.writeError(w, r, &forbidden{msg: "kmd cannot tell who sent this request (" + err.Error() + "), so it does nothing for it"})
			return
		}
		// A browser holding a client certificate sends it with a request
		// another site's page makes, too: a change must come from kmd's
		// own page (or from no page at all, as kmctl's do).
		if c.Via == access.ViaTLS && r.Method != http.MethodGet && r.Method != http.MethodHead && !ui.SameOrigin(r) {
			s.lg.Warn("access refused", zap.String("who", c.Who()), zap.String("from", c.Remote), zap.String("method", r.Method),
				zap.String(logs.Path, r.URL.Path), zap.String("origin", r.Header.Get("Origin")))
			s.writeError(w, r, &forbidden{msg: fmt.Sprintf("a change asked for by another site's page (Origin %s) is refused; use kmd's own page at https://%s/ui/", shown(r.Header.Get("Origin")), r.Host)})
			return
		}
		next.ServeHTTP(w, r.WithContext(access.WithCaller(r.Context(), c)))
	})
}

var errNoIdentity = errors.New("no unix-socket peer, no client certificate, no session")

func (s *Server) caller(r *http.Request) (*access.Caller, error) {
	p, err := access.PeerFromContext(r.Context())
	switch {
	case err == nil:
		c := access.SocketCaller(p)
		s.policy.Resolve(c)
		return c, nil
	case !errors.Is(err, access.ErrNoPeer):
		return nil, err
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		c := access.CertCaller(r.TLS.VerifiedChains[0][0], r.RemoteAddr)
		s.policy.Resolve(c)
		return c, nil
	}
	return nil, errNoIdentity
}

// require reports whether the request's caller holds role; when it does
// not, it answers 403, saying who may not do what (e.g. "start a rekey of
// cluster") and which role it needs, and logs the refusal. Every handler
// runs behind it, through routes or routeDomain.
func (s *Server) require(w http.ResponseWriter, r *http.Request, role access.Role, what string) bool {
	c := access.FromContext(r.Context())
	if c.Has(role) {
		return true
	}
	needs := "the admin role"
	if role != access.Admin {
		needs = "the " + shown(string(role)) + " role (or admin)"
	}
	roles := []access.Role(nil)
	if c != nil {
		roles = c.Roles
	}
	msg := fmt.Sprintf("%s may not %s: it needs %s (it has %s)", c.Who(), what, needs, access.RolesString(roles))
	from := r.RemoteAddr
	if c != nil {
		from = c.Remote
	}
	s.lg.Warn("access refused", zap.String("who", c.Who()), zap.String("from", from), zap.String("method", r.Method),
		zap.String(logs.Path, r.URL.Path), zap.String("needs", string(role)), zap.String("roles", access.RolesString(roles)))
	s.writeError(w, r, &forbidden{msg: msg})
	return false
}

// routes registers handlers on a mux, each behind the role it needs. A
// route registered with HandleFunc, saying nothing of its role, is for
// admins only.
type routes struct {
	s   *Server
	mux *http.ServeMux
}

// HandleFunc registers h for admins only.
func (rt routes) HandleFunc(pattern string, h http.HandlerFunc) {
	rt.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if rt.s.require(w, r, access.Admin, r.Method+" "+shown(r.URL.Path)) {
			h(w, r)
		}
	})
}

// need registers h for callers holding role. In what, {x} stands for the
// path value x.
func (rt routes) need(pattern string, role access.Role, what string, h http.HandlerFunc) {
	rt.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if rt.s.require(w, r, role, expand(what, r)) {
			h(w, r)
		}
	})
}

// open registers h for every caller kmd could name.
func (rt routes) open(pattern string, h http.HandlerFunc) { rt.mux.HandleFunc(pattern, h) }

func (rt routes) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.mux.ServeHTTP(w, r) }

// expand replaces each {x} in what by the request's path value x.
func expand(what string, r *http.Request) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(what, '{')
		j := strings.IndexByte(what, '}')
		if i < 0 || j < i {
			b.WriteString(what)
			return b.String()
		}
		b.WriteString(what[:i])
		b.WriteString(shown(r.PathValue(what[i+1 : j])))
		what = what[j+1:]
	}
}

// shown is s for a one-line message: quoted when it holds anything but
// printable characters, or nothing.
func shown(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r < '!' || r == 0x7f || !strconv.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

// defaultPolicy is the policy of a Server given none: no rules.
func defaultPolicy() *access.Policy {
	p, err := access.NewPolicy(nil, nil, os.Geteuid())
	if err != nil {
		panic(err) // no rules, no mistakes
	}
	return p
}
