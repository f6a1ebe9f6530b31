package access

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"strings"
)

// Rule gives a role to callers: the unix users UIDs and the members of
// Groups on the socket, and the client certificates whose subject is one
// of Subjects on the HTTPS listener. It is one item of the config file's
// access: list.
type Rule struct {
	Role     string   `yaml:"role"`
	UIDs     []int    `yaml:"uids"`
	Groups   []string `yaml:"groups"`   // names or numeric gids
	Subjects []string `yaml:"subjects"` // RFC 2253, e.g. CN=s3-gateway,O=Acme
}

// Policy maps callers to their roles.
type Policy struct {
	self  int
	rules []rule
}

// rule is a Rule checked and resolved.
type rule struct {
	role     Role
	uids     []int
	gids     []int
	subjects []string // as a certificate's subject is written
	cns      []string // subjects that are just CN=x: any subject with that common name
}

// NewPolicy checks rules and returns the policy they make. domains are the
// valid domains of service roles; selfUID is kmd's own user, admin on the
// socket as root is. Every mistake is reported, one line each, naming the
// rule by its position from 1.
func NewPolicy(rules []Rule, domains []string, selfUID int) (*Policy, error) {
	p := &Policy{self: selfUID}
	var errs []error
	for i, r := range rules {
		fail := func(format string, args ...any) {
			what := fmt.Sprintf("access rule %d", i+1)
			if r.Role != "" {
				what += " (" + r.Role + ")"
			}
			errs = append(errs, fmt.Errorf("%s: %s", what, fmt.Sprintf(format, args...)))
		}
		role, err := ParseRole(r.Role, domains)
		if r.Role == "" {
			fail("no role; want role: admin, monitor or service:DOMAIN")
		} else if err != nil {
			fail("%v", err)
		}
		if len(r.UIDs) == 0 && len(r.Groups) == 0 && len(r.Subjects) == 0 {
			fail("names no one; want uids, groups or subjects")
		}
		pr := rule{role: role}
		for _, uid := range r.UIDs {
			if uid < 0 {
				fail("uid %d: want a uid of 0 or more", uid)
				continue
			}
			pr.uids = append(pr.uids, uid)
		}
		for _, g := range r.Groups {
			gid, err := LookupGroup(g)
			if err != nil {
				fail("%v", err)
				continue
			}
			pr.gids = append(pr.gids, gid)
		}
		for _, s := range r.Subjects {
			name, err := parseSubject(s)
			if err != nil {
				fail("invalid subject %q: %v; %s", s, err, subjectWant)
				continue
			}
			if cn, ok := cnOnly(name); ok {
				pr.cns = append(pr.cns, cn)
			} else {
				pr.subjects = append(pr.subjects, name.String())
			}
		}
		p.rules = append(p.rules, pr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// LookupGroup returns the gid of group, given by name or as a number; the
// group must exist on this system.
func LookupGroup(group string) (int, error) {
	if group == "" {
		return 0, errors.New("empty group: want a group name or gid")
	}
	var g *user.Group
	var err error
	if n, nerr := strconv.Atoi(group); nerr == nil {
		if n < 0 {
			return 0, fmt.Errorf("gid %d: want a gid of 0 or more", n)
		}
		g, err = user.LookupGroupId(group)
	} else {
		g, err = user.LookupGroup(group)
	}
	if errors.As(err, new(user.UnknownGroupError)) || errors.As(err, new(user.UnknownGroupIdError)) {
		return 0, fmt.Errorf("group %q does not exist on this system; want the name or gid of an existing group", group)
	}
	if err != nil {
		return 0, fmt.Errorf("group %q: %v", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q has the gid %q, not a number", group, g.Gid)
	}
	return gid, nil
}

// Resolve sets c.Roles to the roles the policy gives c. Socket callers get
// the roles of the rules naming their uid or one of their groups, and admin
// when they are root or kmd's own user; TLS callers get the roles of the
// rules naming their certificate's subject: the same name (ParseSubject
// compares them), or, for a rule subject that is just CN=x, any subject
// whose common name is x. Other callers (web sessions) keep the roles they
// were given.
func (p *Policy) Resolve(c *Caller) {
	if c == nil || (c.Via != ViaSocket && c.Via != ViaTLS) {
		return
	}
	var roles []Role
	add := func(r Role) {
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	if c.Via == ViaSocket && (c.UID == 0 || c.UID == p.self) {
		add(Admin)
	}
	cn, hasCN := "", false
	if c.Via == ViaTLS {
		cn, hasCN = subjectCN(c.Subject)
	}
	for _, r := range p.rules {
		var match bool
		switch c.Via {
		case ViaSocket:
			match = slices.Contains(r.uids, c.UID) || slices.ContainsFunc(r.gids, func(g int) bool { return slices.Contains(c.GIDs, g) })
		case ViaTLS:
			match = slices.Contains(r.subjects, c.Subject) || (hasCN && slices.Contains(r.cns, cn))
		}
		if match {
			add(r.role)
		}
	}
	c.Roles = roles
}

// RolesString lists roles for a message: "service:S3, monitor", or
// "no role".
func RolesString(roles []Role) string {
	if len(roles) == 0 {
		return "no role"
	}
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
