package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestConfig_UIListen(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		what   string
		args   []string
		getenv func(string) string
		want   string // the address; "" off
		err    string // a usage error saying this
	}{
		{"off by default", nil, env(), "", ""},
		{"flag", []string{"--ui-listen", "127.0.0.1:8443"}, env(), "127.0.0.1:8443", ""},
		{"env", nil, env("KMD_UI_LISTEN", "[::1]:9000"), "[::1]:9000", ""},
		{"flag over env", []string{"--ui-listen", "localhost:1"}, env("KMD_UI_LISTEN", "127.0.0.1:2"), "localhost:1", ""},
		{"flag turns it off", []string{"--ui-listen="}, env("KMD_UI_LISTEN", "127.0.0.1:2"), "", ""},
		{"flag not loopback", []string{"--ui-listen", "0.0.0.0:8443"}, env(), "", "--ui-listen: address \"0.0.0.0:8443\" is not loopback"},
		{"env not loopback", nil, env("KMD_UI_LISTEN", "10.0.0.1:8443"), "", "KMD_UI_LISTEN: address \"10.0.0.1:8443\" is not loopback"},
		{"bad port", []string{"--ui-listen", "127.0.0.1:99999"}, env(), "", "invalid port \"99999\""},
		{"bad env even when the flag is good", []string{"--ui-listen", "127.0.0.1:1"}, env("KMD_UI_LISTEN", "nope"), "", "KMD_UI_LISTEN: invalid address"},
	} {
		cfg, err := loadConfig(c.args, c.getenv, io.Discard)
		if c.err != "" {
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "want a loopback address") {
				t.Errorf("%s: %v; want a usage error saying %q and what would be right", c.what, err, c.err)
			}
			continue
		}
		if err != nil || cfg.UIListen != c.want {
			t.Errorf("%s: ui listen %q, %v; want %q", c.what, cfg.UIListen, err, c.want)
		}
	}
}
