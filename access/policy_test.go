package access

import (
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// ownGroup is the name and gid of the test's own group, which exists.
func ownGroup(t *testing.T) (string, int) {
	t.Helper()
	g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
	if err != nil {
		t.Skipf("the test's own group %d has no name: %v", os.Getegid(), err)
	}
	return g.Name, os.Getegid()
}

// missingGID is a gid no group has.
func missingGID(t *testing.T) string {
	t.Helper()
	for gid := 3999999; gid > 3999000; gid-- {
		if _, err := user.LookupGroupId(strconv.Itoa(gid)); err != nil {
			return strconv.Itoa(gid)
		}
	}
	t.Skip("no free gid found")
	return ""
}

func TestNewPolicy_Refused(t *testing.T) {
	group, _ := ownGroup(t)
	gid := missingGID(t)
	for _, c := range []struct {
		what  string
		rules []Rule
		errs  []string // one line each, in order
	}{
		{"unknown role", []Rule{{Role: "monitr", UIDs: []int{1}}},
			[]string{`access rule 1 (monitr): invalid role "monitr": want admin, monitor or service:DOMAIN`}},
		{"service of no domain", []Rule{{Role: "service:FOO", UIDs: []int{1}}},
			[]string{`access rule 1 (service:FOO): invalid role "service:FOO": no domain "FOO"; want service:DOMAIN with one of S3, SSO`}},
		{"no role", []Rule{{UIDs: []int{1}}},
			[]string{"access rule 1: no role; want role: admin, monitor or service:DOMAIN"}},
		{"empty rule", []Rule{{Role: "monitor"}},
			[]string{"access rule 1 (monitor): names no one; want uids, groups or subjects"}},
		{"empty lists", []Rule{{Role: "monitor", UIDs: []int{}, Groups: []string{}, Subjects: []string{}}},
			[]string{"access rule 1 (monitor): names no one"}},
		{"negative uid", []Rule{{Role: "monitor", UIDs: []int{-1}}},
			[]string{"access rule 1 (monitor): uid -1: want a uid of 0 or more"}},
		{"unknown group name", []Rule{{Role: "service:S3", Groups: []string{"kmd-no-such-group"}}},
			[]string{`access rule 1 (service:S3): group "kmd-no-such-group" does not exist on this system; want the name or gid of an existing group`}},
		{"unknown gid", []Rule{{Role: "service:S3", Groups: []string{gid}}},
			[]string{`access rule 1 (service:S3): group "` + gid + `" does not exist`}},
		{"negative gid", []Rule{{Role: "service:S3", Groups: []string{"-5"}}},
			[]string{"access rule 1 (service:S3): gid -5: want a gid of 0 or more"}},
		{"empty group", []Rule{{Role: "service:S3", Groups: []string{""}}},
			[]string{"access rule 1 (service:S3): empty group: want a group name or gid"}},
		{"bad subject", []Rule{{Role: "monitor", Subjects: []string{"prometheus"}}},
			[]string{`access rule 1 (monitor): invalid subject "prometheus": "prometheus" has no =VALUE; want an RFC 2253 name`}},
		{"every mistake, by rule", []Rule{
			{Role: "admin", UIDs: []int{0}},
			{Role: "root", Groups: []string{group}, Subjects: []string{"CN="}},
			{Role: "monitor", Subjects: []string{"CN=ok"}},
			{},
		}, []string{
			`access rule 2 (root): invalid role "root"`,
			`access rule 2 (root): invalid subject "CN=": empty value for CN`,
			"access rule 4: no role",
			"access rule 4: names no one",
		}},
	} {
		p, err := NewPolicy(c.rules, testDomains, 4242)
		if err == nil {
			t.Errorf("%s: NewPolicy accepted %+v", c.what, c.rules)
			continue
		}
		if p != nil {
			t.Errorf("%s: NewPolicy returned a policy with its error", c.what)
		}
		got := strings.Split(err.Error(), "\n")
		if len(got) != len(c.errs) {
			t.Errorf("%s: %d lines, want %d:\n%s", c.what, len(got), len(c.errs), err)
			continue
		}
		for i, want := range c.errs {
			if !strings.HasPrefix(got[i], want) {
				t.Errorf("%s: line %d is %q, want it to start with %q", c.what, i+1, got[i], want)
			}
		}
	}
}

func TestPolicy_Resolve(t *testing.T) {
	group, gid := ownGroup(t)
	const self = 4242
	p, err := NewPolicy([]Rule{
		{Role: "monitor", UIDs: []int{1000}, Subjects: []string{"CN=prometheus"}},
		{Role: "service:S3", UIDs: []int{1001, 1000}, Groups: []string{group}, Subjects: []string{"O=Acme, CN=s3-gateway"}},
		{Role: "service:SSO", Groups: []string{strconv.Itoa(gid)}, Subjects: []string{"CN=sso,OU=idp,O=Acme"}},
		{Role: "admin", Subjects: []string{"CN=ops"}},
		{Role: "monitor", UIDs: []int{1000}},
	}, testDomains, self)
	if err != nil {
		t.Fatal(err)
	}
	other := gid + 1
	for _, c := range []struct {
		what string
		c    Caller
		want []Role
	}{
		{"root on the socket", Caller{Via: ViaSocket, UID: 0, GIDs: []int{other}}, []Role{Admin}},
		{"kmd's own user", Caller{Via: ViaSocket, UID: self, GIDs: []int{other}}, []Role{Admin}},
		{"an unmapped uid", Caller{Via: ViaSocket, UID: 65534, GIDs: []int{other}}, nil},
		{"a uid in two rules, each role once", Caller{Via: ViaSocket, UID: 1000, GIDs: []int{other}}, []Role{Monitor, Service("S3")}},
		{"a uid", Caller{Via: ViaSocket, UID: 1001, GIDs: []int{other}}, []Role{Service("S3")}},
		{"a group by name and by gid", Caller{Via: ViaSocket, UID: 2000, GIDs: []int{other, gid}}, []Role{Service("S3"), Service("SSO")}},
		{"a uid is not a gid", Caller{Via: ViaSocket, UID: gid + 7000, GIDs: []int{1001}}, nil},
		{"a subject", Caller{Via: ViaTLS, Subject: "CN=s3-gateway,O=Acme"}, []Role{Service("S3")}},
		{"a subject with more than the rule's", Caller{Via: ViaTLS, Subject: "CN=s3-gateway,OU=x,O=Acme"}, nil},
		{"a CN-only rule, exact", Caller{Via: ViaTLS, Subject: "CN=prometheus"}, []Role{Monitor}},
		{"a CN-only rule, more attributes", Caller{Via: ViaTLS, Subject: "CN=prometheus,O=Other"}, []Role{Monitor}},
		{"CN compares whole", Caller{Via: ViaTLS, Subject: "CN=prometheus2"}, nil},
		{"a subject's case counts", Caller{Via: ViaTLS, Subject: "CN=Prometheus"}, nil},
		{"a multi-attribute rule", Caller{Via: ViaTLS, Subject: "CN=sso,OU=idp,O=Acme"}, []Role{Service("SSO")}},
		{"an admin certificate", Caller{Via: ViaTLS, Subject: "CN=ops"}, []Role{Admin}},
		{"uid 0 means nothing over TLS", Caller{Via: ViaTLS, UID: 0, Subject: "CN=nobody"}, nil},
		{"a subject means nothing on the socket", Caller{Via: ViaSocket, UID: 3000, Subject: "CN=ops"}, nil},
		{"sessions keep their roles", Caller{Via: ViaSession, Subject: "uid 0", Roles: []Role{Admin}}, []Role{Admin}},
	} {
		caller := c.c
		caller.Roles = slices.Clone(caller.Roles)
		if caller.Via != ViaSession {
			caller.Roles = []Role{Admin} // stale roles are replaced
		}
		p.Resolve(&caller)
		if !slices.Equal(caller.Roles, c.want) {
			t.Errorf("%s: roles %v, want %v", c.what, caller.Roles, c.want)
		}
	}
	p.Resolve(nil) // no panic

	// No rules: root and kmd's own user only.
	none, err := NewPolicy(nil, testDomains, self)
	if err != nil {
		t.Fatal(err)
	}
	for uid, want := range map[int]bool{0: true, self: true, 1000: false} {
		c := &Caller{Via: ViaSocket, UID: uid}
		none.Resolve(c)
		if c.Has(Admin) != want {
			t.Errorf("no rules, uid %d: admin %v, want %v", uid, c.Has(Admin), want)
		}
	}
}

func TestRolesString(t *testing.T) {
	if got := RolesString(nil); got != "no role" {
		t.Errorf("RolesString(nil) = %q", got)
	}
	if got := RolesString([]Role{Monitor, Service("S3")}); got != "monitor, service:S3" {
		t.Errorf("RolesString = %q", got)
	}
}
