package ui

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

const wantAddr = "want a loopback address and a port, such as 127.0.0.1:8443, [::1]:8443 or localhost:8443"

// CheckListenAddr checks a --ui-listen address: plain HTTP is only safe on
// loopback, so the host must be an address in 127.0.0.0/8, ::1 or
// localhost, and the port 1 to 65535. It returns the address in canonical
// form (host:port, IPv6 in brackets).
func CheckListenAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("invalid address %q: %v; %s", addr, strings.TrimPrefix(err.Error(), "address "+addr+": "), wantAddr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("invalid port %q in %q: want a number from 1 to 65535; %s", port, addr, wantAddr)
	}
	switch {
	case host == "localhost":
	case host == "":
		return "", fmt.Errorf("address %q listens on every interface: the web page's plain HTTP is served on loopback only; %s", addr, wantAddr)
	default:
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.Zone() != "" {
			return "", fmt.Errorf("invalid host %q in %q: not an IP address or localhost; %s", host, addr, wantAddr)
		}
		if ip = ip.Unmap(); !ip.IsLoopback() {
			return "", fmt.Errorf("address %q is not loopback: the web page's plain HTTP is served on loopback only; %s", addr, wantAddr)
		}
		host = ip.String()
	}
	return net.JoinHostPort(host, port), nil
}

// IsLoopback reports whether a listener's address is a loopback one: after
// listening on localhost, the name must have resolved to loopback.
func IsLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
