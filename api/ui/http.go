package ui

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api"
)

// Paths of the web page.
const (
	PathPage    = "/ui/"
	PathSignIn  = "/ui/signin"
	PathSession = "/ui/session"
	PathSignOut = "/ui/signout"
)

//go:embed static
var static embed.FS

// Security headers of every answer: nothing but kmd's own files is loaded,
// no page frames this one, no address leaks in a Referer.
func secure(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// Mount returns h with the web page's routes in front of it: /ui/… (the
// page, its files, sign-in, session, sign-out) and POST /v1/ui/links. Every
// other request goes to h unchanged (its path uncleaned).
func (u *UI) Mount(h http.Handler) http.Handler {
	page := u.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/ui" || strings.HasPrefix(p, PathPage):
			page.ServeHTTP(w, r)
		case p == api.PathUILinks:
			u.ServeLink(w, r)
		case p == "/" && safeMethod(r.Method) && access.FromContext(r.Context()) != nil:
			http.Redirect(w, r, PathPage, http.StatusSeeOther)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// Gate guards the --ui-listen listener, where no request has any other
// identity: a request with a valid session (and, if it changes anything,
// its CSRF token) goes on to h as the session's caller; the sign-in link
// goes on as it is; anything else is answered 401 (no or expired session)
// or 403 (CSRF) with no data. A Host header that names no loopback
// address (DNS rebinding) is refused too.
func (u *UI) Gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		if !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, api.CodeForbidden,
				fmt.Sprintf("host %q is not this loopback listener's: open the link kmctl ui url prints", r.Host))
			return
		}
		if r.URL.Path == PathSignIn {
			h.ServeHTTP(w, r)
			return
		}
		c, err := u.Verify(r)
		if err != nil {
			u.refuse(w, r, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(access.WithCaller(r.Context(), c)))
	})
}

// refuse answers a request Verify refused: the sign-in prompt for the
// page itself, a JSON error for anything else.
func (u *UI) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusUnauthorized, api.CodeUnauthorized
	if errors.Is(err, ErrCSRF) {
		status, code = http.StatusForbidden, api.CodeForbidden
	}
	if p := r.URL.Path; status == http.StatusUnauthorized && (p == "/" || p == "/ui" || p == PathPage) {
		servePage(w, status, "Sign in", "Sign in with ", "kmctl ui url",
			": run it as an admin on the kmd host and open the one-time link it prints within "+durationText(u.linkTTL)+".")
		return
	}
	writeError(w, status, code, err.Error())
}

// loopbackHost reports whether a Host header names loopback: localhost or
// a loopback address, with any port.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Handler serves the web page's paths under /ui/. The page and its files
// need a caller allowed to read (one a listener's identity middleware or
// Gate put in the context, or a session); without one they answer 401 and
// the sign-in page.
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathSignIn, u.serveSignIn)
	mux.HandleFunc("GET "+PathSession, u.serveSession)
	mux.HandleFunc("POST "+PathSignOut, u.serveSignOut)
	mux.HandleFunc("GET /ui/{$}", u.serveFile("index.html"))
	mux.HandleFunc("GET /ui/app.js", u.serveFile("app.js"))
	mux.HandleFunc("GET /ui/app.css", u.serveFile("app.css"))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		servePage(w, http.StatusNotFound, "Not found", "The web page has no "+r.URL.Path+"; it is at ", PathPage, ".")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		mux.ServeHTTP(w, r)
	})
}

// caller returns the request's caller: the one in its context, else its
// session's.
func (u *UI) caller(r *http.Request) (*access.Caller, error) {
	if c := access.FromContext(r.Context()); c != nil {
		return c, nil
	}
	return u.Verify(r)
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

func (u *UI) serveFile(name string) http.HandlerFunc {
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		panic(err) // embedded at build time
	}
	ctype := contentTypes[name[strings.LastIndexByte(name, '.'):]]
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := u.caller(r)
		if err != nil {
			u.refuse(w, r, err)
			return
		}
		if !c.CanRead() {
			servePage(w, http.StatusForbidden, "Forbidden", c.Who()+" may not read kmd's status; the web page needs the role ", "admin", ".")
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Write(b)
	}
}

// serveSignIn consumes a sign-in link: it sets the session cookie and
// sends the browser to the page, or says why the link did not work.
func (u *UI) serveSignIn(w http.ResponseWriter, r *http.Request) {
	linkTok := r.URL.Query().Get("token")
	if linkTok == "" {
		servePage(w, http.StatusBadRequest, "Sign in", "This address lacks its token: open the whole link that ", "kmctl ui url", " prints.")
		return
	}
	tok, s, err := u.signIn(linkTok)
	if err != nil {
		u.lg.Info("web sign-in refused", zap.String("remote", r.RemoteAddr), zap.Error(err))
		// AUDIT: a refused sign-in.
		u.record(r.Context(), "ui.signin", "web page", "refused: "+err.Error())
		msg := err.Error()
		if errors.Is(err, errLinkExpired) {
			msg = fmt.Sprintf("this sign-in link expired: a link is valid for %s", durationText(u.linkTTL))
		}
		servePage(w, http.StatusUnauthorized, "Sign in", upperFirst(msg)+". Make a new one with ", "kmctl ui url", ".")
		return
	}
	c := &access.Caller{Via: access.ViaSession, Subject: s.subject, Remote: r.RemoteAddr, Roles: []access.Role{access.Admin}}
	u.lg.Info("web sign-in", zap.String("who", c.Who()), zap.String("remote", r.RemoteAddr), zap.Time("expires", s.expires))
	// AUDIT: a sign-in; the context carries the new session's caller.
	u.record(access.WithCaller(r.Context(), c), "ui.signin", "web page", "ok")
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: tok, Path: "/",
		MaxAge: int(u.sessionTTL / time.Second), Expires: s.expires.UTC(),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, PathPage, http.StatusSeeOther)
}

// SessionInfo is the answer of GET /ui/session: who the page acts as, and
// the CSRF token its state-changing requests carry ("" when the caller is
// no session, e.g. a client certificate on --listen).
type SessionInfo struct {
	Who     string     `json:"who"`
	CSRF    string     `json:"csrf"`
	Expires *time.Time `json:"expires"`
}

func (u *UI) serveSession(w http.ResponseWriter, r *http.Request) {
	c, err := u.caller(r)
	if err != nil {
		u.refuse(w, r, err)
		return
	}
	info := SessionInfo{Who: c.Who()}
	if c.Via == access.ViaSession {
		tok := sessionToken(r)
		if s, ok := u.lookup(tok); ok {
			info.CSRF = csrfToken(tok)
			exp := s.expires.UTC().Truncate(time.Second)
			info.Expires = &exp
		}
	}
	writeJSON(w, http.StatusOK, info)
}

// serveSignOut ends the request's session (a state-changing request: it
// needs the CSRF token) and clears the cookie.
func (u *UI) serveSignOut(w http.ResponseWriter, r *http.Request) {
	if _, err := u.Verify(r); err != nil {
		u.refuse(w, r, err)
		return
	}
	u.signOut(sessionToken(r))
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// ServeLink serves POST /v1/ui/links: it makes a one-time sign-in link for
// the calling admin. A web session may not make links (a session would
// otherwise outlive itself).
func (u *UI) ServeLink(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusNotFound, api.CodeNoEndpoint, fmt.Sprintf("no such endpoint: %s %s; links are made with POST", r.Method, r.URL.Path))
		return
	}
	// The caller is put in the context by the listener's identity
	// middleware (server.Identify); without one, nobody is known to ask.
	c := access.FromContext(r.Context())
	refused := func(status int, code, msg string) {
		u.lg.Info("web link refused", zap.String("who", c.Who()), zap.String("remote", r.RemoteAddr), zap.String("reason", msg))
		// AUDIT: a refused link creation.
		u.record(r.Context(), "ui.link.create", "web page", "refused: "+msg)
		writeError(w, status, code, msg)
	}
	switch {
	case c == nil:
		refused(http.StatusForbidden, api.CodeForbidden, "kmd cannot tell who asks for a sign-in link, so it makes none")
		return
	case c.Via == access.ViaSession:
		refused(http.StatusForbidden, api.CodeForbidden, "a web session cannot make sign-in links: run kmctl ui url on the kmd host")
		return
	case !c.Has(access.Admin):
		refused(http.StatusForbidden, api.CodeForbidden, c.Who()+" may not make sign-in links: that needs the role admin")
		return
	case !u.Enabled():
		refused(http.StatusConflict, api.CodeConflict, "the web page is off: start kmd with --ui-listen 127.0.0.1:PORT")
		return
	}
	subject := c.Who()
	tok, exp := u.makeLink(subject)
	link := url.URL{Scheme: "http", Host: u.addr, Path: PathSignIn, RawQuery: url.Values{"token": {tok}}.Encode()}
	u.lg.Info("web link created", zap.String("who", subject), zap.String("remote", r.RemoteAddr), zap.Time("expires", exp))
	// AUDIT: a link creation.
	u.record(r.Context(), "ui.link.create", "web page", "ok")
	writeJSON(w, http.StatusCreated, api.UILink{URL: link.String(), Expires: exp.UTC().Truncate(time.Second)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	writeJSON(w, status, api.ErrorBody{Error: msg, Code: code})
}

// pageTmpl is the small page of sign-in prompts and refusals: no script,
// no style, nothing from kmd's state.
var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kmd — {{.Title}}</title></head>
<body><h1>kmd — Key Management</h1><p id="message">{{.Before}}<code>{{.Code}}</code>{{.After}}</p></body></html>
`))

// servePage answers a small HTML page: text before, code, text after.
func servePage(w http.ResponseWriter, status int, title, before, code, after string) {
	secure(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	pageTmpl.Execute(w, struct{ Title, Before, Code, After string }{title, before, code, after})
}

// durationText says a link's life for people: "5 minutes".
func durationText(d time.Duration) string {
	switch {
	case d == time.Minute:
		return "1 minute"
	case d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
