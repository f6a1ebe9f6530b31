package access

import (
	"context"
	"strings"
	"testing"
)

var testDomains = []string{"S3", "SSO"}

func TestParseRole(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{"admin", "admin", ""},
		{"monitor", "monitor", ""},
		{"service:S3", "service:S3", ""},
		{"service:s3", "", `no domain "s3"`},
		{"service:", "", `no domain ""`},
		{"Admin", "", "want admin, monitor or service:DOMAIN"},
		{"", "", "want admin, monitor or service:DOMAIN"},
		{"root", "", "want admin, monitor or service:DOMAIN"},
	} {
		r, err := ParseRole(c.in, testDomains)
		if c.err == "" {
			if err != nil || string(r) != c.want {
				t.Errorf("ParseRole(%q) = %q, %v; want %q", c.in, r, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseRole(%q) = %q, %v; want an error with %q", c.in, r, err, c.err)
		}
	}
}

func TestCallerRoles(t *testing.T) {
	admin := &Caller{Via: ViaSocket, UID: 0, Roles: []Role{Admin}}
	mon := &Caller{Via: ViaTLS, Subject: "CN=prometheus", Roles: []Role{Monitor}}
	s3 := &Caller{Via: ViaSocket, UID: 1001, Roles: []Role{Service("S3")}}
	var nobody *Caller
	for _, c := range []struct {
		c                  *Caller
		read, useS3, useSO bool
		who                string
	}{
		{admin, true, true, true, "uid 0"},
		{mon, true, false, false, "CN=prometheus"},
		{s3, false, true, false, "uid 1001"},
		{nobody, false, false, false, "unknown"},
		{&Caller{Via: ViaSession, Subject: "uid 0", Roles: []Role{Admin}}, true, true, true, "web session of uid 0"},
	} {
		if got := c.c.CanRead(); got != c.read {
			t.Errorf("%s: CanRead = %v", c.who, got)
		}
		if got := c.c.CanUseEntries("S3"); got != c.useS3 {
			t.Errorf("%s: CanUseEntries(S3) = %v", c.who, got)
		}
		if got := c.c.CanUseEntries("SSO"); got != c.useSO {
			t.Errorf("%s: CanUseEntries(SSO) = %v", c.who, got)
		}
		if got := c.c.Who(); got != c.who {
			t.Errorf("Who = %q, want %q", got, c.who)
		}
	}
	if d, ok := Service("S3").Domain(); !ok || d != "S3" {
		t.Errorf("Service(S3).Domain() = %q, %v", d, ok)
	}
	if _, ok := Monitor.Domain(); ok {
		t.Error("monitor has a domain")
	}
	ctx := WithCaller(context.Background(), mon)
	if FromContext(ctx) != mon || FromContext(context.Background()) != nil {
		t.Error("FromContext does not return what WithCaller stored")
	}
}
