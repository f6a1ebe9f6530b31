package access

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a unix-socket connection, as
// the kernel saw it when it connected (SO_PEERCRED).
type Peer struct {
	UID, GID, PID int
	// GIDs are the peer's groups: its primary group first, then its
	// supplementary groups.
	GIDs []int
	// Socket is the path of the socket it connected to.
	Socket string
}

// ReadPeer reads the credentials of the peer of c. Its groups are those
// of the peer process (/proc/PID/status), or, when that process cannot be
// read (it is gone, or its pid now names another process), those the user
// database gives its uid.
func ReadPeer(c *net.UnixConn) (*Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("peer credentials (SO_PEERCRED): %w", cerr)
	}
	p := &Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid), Socket: c.LocalAddr().String()}
	groups, ok := procGroups(p.PID, p.UID)
	if !ok {
		groups = userGroups(p.UID)
	}
	p.GIDs = []int{p.GID}
	for _, g := range groups {
		if !slices.Contains(p.GIDs, g) {
			p.GIDs = append(p.GIDs, g)
		}
	}
	return p, nil
}

// procGroups reads the supplementary groups of process pid from
// /proc/PID/status, if that process's effective uid is still uid.
func procGroups(pid, uid int) ([]int, bool) {
	if pid <= 0 {
		return nil, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, false
	}
	var groups []int
	uidOK, groupsOK := false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), ":")
		switch key {
		case "Uid": // real, effective, saved, filesystem
			f := strings.Fields(val)
			uidOK = len(f) > 1 && f[1] == strconv.Itoa(uid)
		case "Groups":
			groupsOK = true
			for _, f := range strings.Fields(val) {
				g, err := strconv.Atoi(f)
				if err != nil {
					return nil, false
				}
				groups = append(groups, g)
			}
		}
	}
	return groups, uidOK && groupsOK
}

// userGroups returns the groups the user database gives uid, none when it
// does not know uid.
func userGroups(uid int) []int {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var groups []int
	for _, id := range ids {
		if g, err := strconv.Atoi(id); err == nil {
			groups = append(groups, g)
		}
	}
	return groups
}

type peerKey struct{}

type peerInfo struct {
	p   *Peer
	err error
}

// ConnContext is the http.Server.ConnContext of kmd's listeners: for a
// unix-socket connection it reads the peer's credentials once, when the
// connection is accepted, and returns ctx carrying them (or the error
// reading them) for PeerFromContext. Other connections are left as they
// are.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	p, err := ReadPeer(uc)
	return context.WithValue(ctx, peerKey{}, peerInfo{p, err})
}

// WithPeer returns ctx carrying p as the connection's peer, as
// ConnContext does.
func WithPeer(ctx context.Context, p *Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, peerInfo{p: p})
}

// ErrNoPeer: the request came in on no unix-socket connection.
var ErrNoPeer = errors.New("not a unix-socket connection")

// PeerFromContext returns the peer of the connection a request came in
// on: ErrNoPeer when it is not a unix-socket connection, or the error that
// kept its credentials from being read.
func PeerFromContext(ctx context.Context) (*Peer, error) {
	pi, ok := ctx.Value(peerKey{}).(peerInfo)
	switch {
	case !ok:
		return nil, ErrNoPeer
	case pi.err != nil:
		return nil, pi.err
	case pi.p == nil:
		return nil, ErrNoPeer
	}
	return pi.p, nil
}

// SocketCaller is the caller a socket peer stands for, without roles.
func SocketCaller(p *Peer) *Caller {
	return &Caller{Via: ViaSocket, UID: p.UID, PID: p.PID, GIDs: slices.Clone(p.GIDs), Remote: "unix:" + p.Socket}
}
