package ui

import (
	"net"
	"strings"
	"testing"
)

func TestCheckListenAddr(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"127.0.0.1:8443", "127.0.0.1:8443", ""},
		{"127.1.2.3:1", "127.1.2.3:1", ""},
		{"127.255.255.254:65535", "127.255.255.254:65535", ""},
		{"[::1]:8443", "[::1]:8443", ""},
		{"[::ffff:127.0.0.1]:8443", "127.0.0.1:8443", ""},
		{"localhost:8443", "localhost:8443", ""},
		{"0.0.0.0:8443", "", "is not loopback"},
		{"[::]:8443", "", "is not loopback"},
		{"192.168.1.10:8443", "", "is not loopback"},
		{"10.0.0.1:80", "", "is not loopback"},
		{"[fe80::1]:8443", "", "is not loopback"},
		{"[::ffff:10.0.0.1]:8443", "", "is not loopback"},
		{":8443", "", "listens on every interface"},
		{"kmd.example.net:8443", "", "not an IP address or localhost"},
		{"LOCALHOST:8443", "", "not an IP address or localhost"},
		{"[::1%lo]:8443", "", "not an IP address or localhost"},
		{"127.0.0.1", "", "missing port"},
		{"127.0.0.1:", "", "invalid port"},
		{"127.0.0.1:0", "", "invalid port"},
		{"127.0.0.1:65536", "", "invalid port"},
		{"127.0.0.1:-1", "", "invalid port"},
		{"127.0.0.1:http", "", "invalid port"},
		{"127.0.0.1:08443", "", "invalid port"},
		{"127.0.0.1:+80", "", "invalid port"},
		{"::1:8443", "", "too many colons"},
		{"", "", "missing port"},
	} {
		got, err := CheckListenAddr(c.in)
		if c.err == "" {
			if err != nil || got != c.want {
				t.Errorf("CheckListenAddr(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("CheckListenAddr(%q) = %q, want an error saying %q", c.in, got, c.err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.err) || !strings.Contains(msg, "want ") || strings.Contains(msg, "\n") {
			t.Errorf("CheckListenAddr(%q): %q; want one line saying %q and what would be right", c.in, msg, c.err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("192.168.0.1"), Port: 1}, false},
		{&net.UnixAddr{Name: "/run/kmd.sock", Net: "unix"}, false},
	} {
		if got := IsLoopback(c.addr); got != c.want {
			t.Errorf("IsLoopback(%v) = %v, want %v", c.addr, got, c.want)
		}
	}
}
