package main

import (
	"context"
	"net"
	"syscall"

	"github.com/kmd-project/kmd/access"
)

// peerCaller puts the socket peer's identity (SO_PEERCRED) in the
// connection's context, so that the audit trail can say who made each
// request. It grants no role.
//
// Stopgap until the access layer lands: its ConnContext and per-request
// middleware identify callers (with groups and roles) and replace this
// file.
func peerCaller(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if cerr != nil || err != nil {
		return ctx
	}
	return access.WithCaller(ctx, &access.Caller{Via: access.ViaSocket, UID: int(cred.Uid), PID: int(cred.Pid),
		GIDs: []int{int(cred.Gid)}, Remote: "unix:" + uc.LocalAddr().String()})
}
