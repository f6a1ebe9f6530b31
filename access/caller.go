// Package access says who is calling kmd and what they may do: the roles
// admin, monitor and service:DOMAIN, the caller identities they are given
// to (unix peer credentials, client-certificate subjects, web sessions),
// and the request context that carries them to the handlers.
package access

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Role is what a caller may do.
type Role string

const (
	// Admin may do everything.
	Admin Role = "admin"
	// Monitor may read status, rekey views, events and metrics.
	Monitor Role = "monitor"
	// servicePrefix + DOMAIN may use that domain's entries.
	servicePrefix = "service:"
)

// Service is the role of a service using the entries of domain.
func Service(domain string) Role { return Role(servicePrefix + domain) }

// Domain returns the domain of a service role, and whether r is one.
func (r Role) Domain() (string, bool) {
	d, ok := strings.CutPrefix(string(r), servicePrefix)
	return d, ok && d != ""
}

// ParseRole parses a role as written in the config file. domains are the
// valid domains of service roles.
func ParseRole(s string, domains []string) (Role, error) {
	switch r := Role(s); {
	case r == Admin, r == Monitor:
		return r, nil
	case strings.HasPrefix(s, servicePrefix):
		d, _ := r.Domain()
		if !slices.Contains(domains, d) {
			return "", fmt.Errorf("invalid role %q: no domain %q; want service:DOMAIN with one of %s", s, d, strings.Join(domains, ", "))
		}
		return r, nil
	default:
		return "", fmt.Errorf("invalid role %q: want admin, monitor or service:DOMAIN", s)
	}
}

// Via names how a caller came in.
type Via string

const (
	ViaSocket  Via = "socket"  // the unix socket; UID, GIDs and PID are set
	ViaTLS     Via = "tls"     // the --listen HTTPS listener; Subject is set
	ViaSession Via = "session" // a web-page session; Subject names who opened it
)

// Caller is who made a request, as kmd knows them.
type Caller struct {
	Via Via
	// Socket callers: the peer's credentials (SO_PEERCRED) and groups.
	UID, PID int
	GIDs     []int
	// TLS callers: the client certificate's subject (RFC 2253). Session
	// callers: who opened the session.
	Subject string
	// Remote is where the request came from: the peer address, or
	// "unix:" and the socket path.
	Remote string
	// Roles are the roles the caller holds.
	Roles []Role
}

// Who names the caller for logs and the audit trail.
func (c *Caller) Who() string {
	if c == nil {
		return "unknown"
	}
	switch c.Via {
	case ViaSocket:
		return fmt.Sprintf("uid %d", c.UID)
	case ViaSession:
		return "web session of " + c.Subject
	default:
		return c.Subject
	}
}

// Has reports whether the caller holds role r; an admin holds every role.
func (c *Caller) Has(r Role) bool {
	if c == nil {
		return false
	}
	return slices.Contains(c.Roles, Admin) || slices.Contains(c.Roles, r)
}

// CanRead reports whether the caller may read status, views, events and
// metrics.
func (c *Caller) CanRead() bool { return c.Has(Monitor) }

// CanUseEntries reports whether the caller may read and write the entries
// of domain.
func (c *Caller) CanUseEntries(domain string) bool { return c.Has(Service(domain)) }

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller ctx carries, or nil.
func FromContext(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}
