// Package ui serves kmd's web page — both status tables, Rekey Now, the
// rotation schedules, live rekey progress and recent events — and its
// sign-in: an admin asks for a one-time link (kmctl ui url), opening it
// sets an expiring HttpOnly, SameSite=Strict session cookie, and every
// state-changing request of a session carries its CSRF token.
//
// Sessions and links live in memory only and are kept as SHA-256 hashes of
// their tokens, so the map of them, if it ever leaked, signs nobody in. A
// CSRF token is not stored at all: it is an HMAC of the session token.
package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
)

// Defaults of Options.
const (
	DefaultLinkTTL    = 5 * time.Minute
	DefaultSessionTTL = 8 * time.Hour
)

// CookieName is the session cookie; CSRFHeader carries a session's CSRF
// token on state-changing requests.
const (
	CookieName = "kmd_session"
	CSRFHeader = "X-CSRF-Token"
)

// tokenBytes is the size of every token: 256 bits from crypto/rand.
const tokenBytes = 32

// Errors of Verify.
var (
	// ErrNoSession: the request carries no session cookie, or one that is
	// unknown or expired. Answer 401.
	ErrNoSession = errors.New("no valid web-page session: run kmctl ui url and open the link it prints")
	// ErrCSRF: a state-changing request of a valid session lacks its CSRF
	// token, carries a wrong one, or comes from another origin. Answer 403.
	ErrCSRF = errors.New("missing or wrong " + CSRFHeader + " header, or a request from another origin: reload the web page")
)

// Recorder records a security-relevant action for the audit trail: action
// (ui.link.create, ui.signin), its target and its outcome ("ok", or what
// went wrong). ctx carries the caller (access.FromContext) when one is known.
type Recorder func(ctx context.Context, action, target, outcome string)

// Options configure a UI.
type Options struct {
	// Addr is the --ui-listen address (host:port) the sign-in links point
	// to; empty: the web page is off and no link is made.
	Addr string
	// LinkTTL and SessionTTL bound a link's and a session's life; zero:
	// DefaultLinkTTL, DefaultSessionTTL.
	LinkTTL, SessionTTL time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Log gets a line per link made and per sign-in, never a token; nil:
	// none.
	Log *zap.Logger
	// Record, when set, gets every link creation and sign-in for the audit
	// trail.
	Record Recorder
}

// UI is the web page, its sign-in links and sessions. It is safe for
// concurrent use.
type UI struct {
	addr                string
	linkTTL, sessionTTL time.Duration
	now                 func() time.Time
	lg                  *zap.Logger
	record              Recorder

	mu       sync.Mutex
	links    map[[sha256.Size]byte]*link    // by SHA-256 of the link token
	sessions map[[sha256.Size]byte]*session // by SHA-256 of the cookie
}

// link is a sign-in link not yet expired. A used one is kept until it
// expires, so that its replay is told apart from a typo.
type link struct {
	subject string // Who() of the admin who made it
	expires time.Time
	used    bool
}

// session is a signed-in browser.
type session struct {
	subject string
	expires time.Time
}

// New returns a UI.
func New(o Options) *UI {
	u := &UI{
		addr: o.Addr, linkTTL: o.LinkTTL, sessionTTL: o.SessionTTL, now: o.Now, lg: o.Log, record: o.Record,
		links:    map[[sha256.Size]byte]*link{},
		sessions: map[[sha256.Size]byte]*session{},
	}
	if u.linkTTL <= 0 {
		u.linkTTL = DefaultLinkTTL
	}
	if u.sessionTTL <= 0 {
		u.sessionTTL = DefaultSessionTTL
	}
	if u.now == nil {
		u.now = time.Now
	}
	if u.lg == nil {
		u.lg = zap.NewNop()
	}
	if u.record == nil {
		u.record = func(context.Context, string, string, string) {}
	}
	return u
}

// Enabled reports whether the web page is on (kmd has a --ui-listen).
func (u *UI) Enabled() bool { return u.addr != "" }

// newToken returns a fresh random token, URL-safe.
func newToken() string {
	b := make([]byte, tokenBytes)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hash(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// csrfToken is the CSRF token of the session whose cookie is token.
func csrfToken(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("kmd web page CSRF token"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// pruneLocked drops expired links and sessions.
func (u *UI) pruneLocked(now time.Time) {
	for k, l := range u.links {
		if !now.Before(l.expires) {
			delete(u.links, k)
		}
	}
	for k, s := range u.sessions {
		if !now.Before(s.expires) {
			delete(u.sessions, k)
		}
	}
}

// makeLink makes a one-time sign-in token for subject and returns it and
// its expiry.
func (u *UI) makeLink(subject string) (string, time.Time) {
	tok := newToken()
	now := u.now()
	exp := now.Add(u.linkTTL)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.pruneLocked(now)
	u.links[hash(tok)] = &link{subject: subject, expires: exp}
	return tok, exp
}

// Why a link did not sign in.
var (
	errLinkUnknown = errors.New("this sign-in link is not known to kmd: it was mistyped, or kmd restarted since it was made")
	errLinkUsed    = errors.New("this sign-in link was already used: each link signs in once")
	errLinkExpired = errors.New("this sign-in link expired")
)

// signIn consumes a link token and opens a session: it returns the session
// cookie's token and the session.
func (u *UI) signIn(linkToken string) (string, session, error) {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	l, ok := u.links[hash(linkToken)]
	switch {
	case !ok:
		return "", session{}, errLinkUnknown
	case l.used:
		return "", session{}, errLinkUsed
	case !now.Before(l.expires):
		delete(u.links, hash(linkToken))
		return "", session{}, errLinkExpired
	}
	l.used = true
	u.pruneLocked(now)
	tok := newToken()
	s := session{subject: l.subject, expires: now.Add(u.sessionTTL)}
	u.sessions[hash(tok)] = &s
	return tok, s, nil
}

// lookup returns the live session of a cookie token.
func (u *UI) lookup(token string) (session, bool) {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.sessions[hash(token)]
	if !ok {
		return session{}, false
	}
	if !now.Before(s.expires) {
		delete(u.sessions, hash(token))
		return session{}, false
	}
	return *s, true
}

// signOut ends the session of a cookie token.
func (u *UI) signOut(token string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.sessions, hash(token))
}

// sessionToken returns the request's session cookie value, or "".
func sessionToken(r *http.Request) string {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// safeMethod reports whether a method changes nothing, so needs no CSRF
// token.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// SameOrigin reports whether a request's Origin header, when it has one,
// names the host it was sent to (scheme included). Browsers send Origin
// with every cross-origin request and every POST, PUT and DELETE, so a
// state-changing request from another site's page fails this.
func SameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return strings.EqualFold(o, scheme+r.Host)
}

// Verify checks a request's session: a valid session cookie and, for a
// state-changing request (anything but GET, HEAD, OPTIONS), its CSRF token
// in the X-CSRF-Token header and no foreign Origin. It returns the session's
// caller — an admin, named after who made the link — or ErrNoSession or
// ErrCSRF.
func (u *UI) Verify(r *http.Request) (*access.Caller, error) {
	tok := sessionToken(r)
	if tok == "" {
		return nil, ErrNoSession
	}
	s, ok := u.lookup(tok)
	if !ok {
		return nil, ErrNoSession
	}
	if !safeMethod(r.Method) {
		got := r.Header.Get(CSRFHeader)
		if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(tok))) != 1 || !SameOrigin(r) {
			return nil, ErrCSRF
		}
	}
	return &access.Caller{Via: access.ViaSession, Subject: s.subject, Remote: r.RemoteAddr, Roles: []access.Role{access.Admin}}, nil
}

// Authenticate returns the caller of a request made by a signed-in
// browser: a valid session cookie and, unless the method is safe, a valid
// CSRF token. Otherwise it reports false.
func (u *UI) Authenticate(r *http.Request) (*access.Caller, bool) {
	c, err := u.Verify(r)
	return c, err == nil
}
