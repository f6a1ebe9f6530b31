package access

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// The test binary run with peerHelperEnv set connects to the socket it
// names, waits until the other end closes, and exits: a peer of another
// uid for TestReadPeer_OtherUser.
const peerHelperEnv = "KMD_ACCESS_TEST_PEER_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(peerHelperEnv); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(3)
		}
		io.Copy(io.Discard, c)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// listen listens on a unix socket in a fresh directory.
func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kmdpeer") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, sock
}

func TestReadPeer_Self(t *testing.T) {
	ln, sock := listen(t)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	p, err := ReadPeer(sc)
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != os.Geteuid() || p.GID != os.Getegid() || p.PID != os.Getpid() || p.Socket != sock {
		t.Errorf("peer %+v; want uid %d, gid %d, pid %d, socket %s", p, os.Geteuid(), os.Getegid(), os.Getpid(), sock)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.GIDs) == 0 || p.GIDs[0] != os.Getegid() {
		t.Errorf("groups %v: want the primary group %d first", p.GIDs, os.Getegid())
	}
	for _, g := range groups {
		if !slices.Contains(p.GIDs, g) {
			t.Errorf("groups %v lack the supplementary group %d", p.GIDs, g)
		}
	}

	// Through an http.Server's ConnContext.
	ctx := ConnContext(context.Background(), sc)
	got, err := PeerFromContext(ctx)
	if err != nil || got.UID != p.UID || got.PID != p.PID {
		t.Errorf("PeerFromContext = %+v, %v; want %+v", got, err, p)
	}
	caller := SocketCaller(got)
	if caller.Via != ViaSocket || caller.UID != p.UID || caller.PID != p.PID || caller.Remote != "unix:"+sock || !slices.Equal(caller.GIDs, p.GIDs) {
		t.Errorf("SocketCaller = %+v", caller)
	}
}

func TestReadPeer_OtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another user")
	}
	// The helper must be able to run the test binary and reach the socket.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "peer")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	ln, sock := listen(t)
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(sock, 0o777)

	const uid, gid = 65534, 65533
	supp := []uint32{100, 50, 65533}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), peerHelperEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: supp}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc, err := ln.AcceptUnix()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	p, err := ReadPeer(sc)
	sc.Close() // the helper exits
	if werr := cmd.Wait(); werr != nil {
		t.Errorf("peer helper: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != uid || p.GID != gid || p.PID != cmd.Process.Pid {
		t.Errorf("peer %+v; want uid %d, gid %d, pid %d", p, uid, gid, cmd.Process.Pid)
	}
	// The kernel keeps supplementary groups sorted.
	if want := []int{65533, 50, 100}; !slices.Equal(p.GIDs, want) {
		t.Errorf("groups %v, want %v (primary first, then the process's supplementary groups, once each)", p.GIDs, want)
	}
}

func TestProcGroups_Fallback(t *testing.T) {
	// The pid's process is not uid's: its groups are not taken.
	if _, ok := procGroups(os.Getpid(), os.Geteuid()+1); ok {
		t.Error("procGroups took the groups of a process of another uid")
	}
	if _, ok := procGroups(0, 0); ok {
		t.Error("procGroups read pid 0")
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := procGroups(os.Getpid(), os.Geteuid()); !ok || len(g) != len(groups) {
		t.Errorf("procGroups of this process = %v, %v; want %v", g, ok, groups)
	}
	// The user database: root is in group 0.
	if g := userGroups(0); !slices.Contains(g, 0) {
		t.Errorf("userGroups(0) = %v, want group 0 among them", g)
	}
	if g := userGroups(2147480000); g != nil {
		t.Errorf("userGroups of an unknown uid = %v, want none", g)
	}
}

func TestPeerFromContext(t *testing.T) {
	if _, err := PeerFromContext(context.Background()); !errors.Is(err, ErrNoPeer) {
		t.Errorf("no peer: %v, want ErrNoPeer", err)
	}
	// A TCP connection carries no peer.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	c, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := PeerFromContext(ConnContext(context.Background(), c)); !errors.Is(err, ErrNoPeer) {
		t.Errorf("TCP connection: %v, want ErrNoPeer", err)
	}
	p := &Peer{UID: 7}
	if got, err := PeerFromContext(WithPeer(context.Background(), p)); err != nil || got != p {
		t.Errorf("WithPeer: %v, %v", got, err)
	}
	// A closed connection: its credentials cannot be read, and the error says so.
	ln, sock := listen(t)
	cc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
	if _, err := PeerFromContext(ConnContext(context.Background(), sc)); err == nil || errors.Is(err, ErrNoPeer) {
		t.Errorf("closed connection: %v, want the error reading its credentials", err)
	}
}
