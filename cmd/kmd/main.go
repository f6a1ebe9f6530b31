// Command kmd is the key-manager daemon: it keeps one encrypted provider
// store per domain, rekeys their master keys on demand and on schedule, and
// serves the entries and admin API on a unix socket and, with --listen, over
// HTTPS with client certificates; its web page is served there and on a
// loopback address (--ui-listen).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/api/ui"
	"github.com/kmd-project/kmd/audit"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
	"github.com/kmd-project/kmd/metrics"
	"github.com/kmd-project/kmd/provider"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	setProcs(os.Getenv)
	setGC(os.Getenv)
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr), os.Stderr))
}

// exitCode is the one place that turns an error into an exit status:
// 0 fine, 2 bad flags/config, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errShowVersion):
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kmd: error: %s\nrun 'kmd --help' for usage\n", oneLine(err))
		return 2
	default:
		fmt.Fprintf(stderr, "kmd: error: %s\n", oneLine(err))
		return 1
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, errShowVersion) {
		fmt.Fprintf(stdout, "kmd %s\n", version)
		return nil
	}
	if err != nil {
		return err
	}
	// Access settings are checked before anything is touched.
	policy, err := access.NewPolicy(cfg.Access, serviceDomains(), os.Geteuid())
	if err != nil {
		return usageError{err}
	}
	tlsCfg, err := tlsConfig(cfg, time.Now())
	if err != nil {
		return usageError{err}
	}
	gid, err := socketGID(cfg)
	if err != nil {
		return usageError{err}
	}
	logger, err := logs.New(logs.Options{File: cfg.LogFile, Format: cfg.LogFormat})
	if err != nil {
		return usageError{err}
	}
	defer logger.Close()
	lg := logger.Zap()
	hupCtx, stopHup := context.WithCancel(context.Background())
	defer stopHup()
	go logger.ReopenOnSIGHUP(hupCtx)

	// The lock first: nothing in the data dir is touched while another kmd
	// holds it.
	lock, err := domains.LockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	journal, err := logs.OpenJournal(logs.JournalOptions{Dir: cfg.DataDir, Hook: cfg.EventHook, Logger: lg})
	if err != nil {
		lock.Unlock()
		return err
	}
	defer journal.Close()
	trail, err := audit.Open(audit.Options{Dir: cfg.DataDir, Logger: lg})
	if err != nil {
		lock.Unlock()
		return err
	}
	defer func() {
		if err := trail.Close(); err != nil {
			lg.Error("close audit trail", zap.Error(err))
		}
	}()
	rekeys := metrics.NewRekeys()
	reg, err := domains.Open(ctx, domains.Config{
		DataDir: cfg.DataDir, NodeID: cfg.NodeID, RetryInterval: cfg.RetryInterval,
		Events: journal, Log: lg, Lock: lock, OnRekeyEnd: rekeys.Observe,
	})
	if err != nil {
		lock.Unlock()
		return err
	}
	defer func() {
		if err := reg.Close(); err != nil {
			lg.Error("close domains", zap.Error(err))
		}
	}()

	// The web page: its routes in front of the API on every listener, and
	// its own loopback listener where everything needs a session. On the
	// socket and --listen every request is first given its caller
	// (Identify), the page's routes included; on --ui-listen, web.Gate does
	// that from the session.
	web := ui.New(ui.Options{Addr: cfg.UIListen, Log: lg.Named("ui"), Record: trail.Recorder()})
	apiServer := server.New(reg, journal, lg, version, server.WithPolicy(policy), server.WithAudit(trail)).
		WithMetrics(metrics.Handler(reg, rekeys, lg))
	pageAndAPI := web.Mount(apiServer.Handler())
	handler := apiServer.Identify(pageAndAPI)
	var uiLn net.Listener
	if cfg.UIListen != "" {
		if uiLn, err = listenUI(cfg.UIListen); err != nil {
			return err
		}
	}
	ln, err := listenUnix(cfg.Socket, gid)
	if err != nil {
		if uiLn != nil {
			uiLn.Close()
		}
		return err
	}
	listeners := []net.Listener{ln}
	listen := ""
	if tlsCfg != nil {
		tln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		listen = tln.Addr().String()
		listeners = append(listeners, tls.NewListener(tln, tlsCfg))
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute, // --listen is on the network: no idle connection is kept forever
		ErrorLog:          zap.NewStdLog(lg.Named("http")),
		ConnContext:       access.ConnContext, // the socket peer's credentials
	}
	serveErr := make(chan error, len(listeners)+1)
	for _, l := range listeners {
		go func() { serveErr <- srv.Serve(l) }()
	}
	var uiSrv *http.Server
	if uiLn != nil {
		uiSrv = serveUI(uiLn, web, pageAndAPI, lg, serveErr) // web.Gate names every caller there
	}
	lg.Info("kmd started", zap.String("version", version), zap.String("data_dir", cfg.DataDir),
		zap.String("socket", cfg.Socket), zap.String("socket_group", cfg.SocketGroup), zap.String("listen", listen),
		zap.Int(logs.Node, cfg.NodeID), zap.Duration("retry_interval", cfg.RetryInterval), zap.Int("procs", runtime.GOMAXPROCS(0)), zap.Int("gogc", gcPercentNow()))
	if err := provider.PageCacheError(); err != nil {
		lg.Warn("SQLite pages are allocated one by one: GETs may wait longer during a rekey", zap.Error(err))
	}

	select {
	case <-ctx.Done():
		lg.Info("kmd stopping")
	case err := <-serveErr:
		lg.Error("serve", zap.Error(err))
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		lg.Warn("shutdown", zap.Error(err))
	}
	if uiSrv != nil {
		if err := uiSrv.Shutdown(sctx); err != nil {
			lg.Warn("shutdown web page", zap.Error(err))
		}
	}
	os.Remove(cfg.Socket)
	// reg.Close (deferred) cancels rekeys: a batch in flight rolls back and
	// the rekey resumes at the next start.
	return nil
}

// listenUnix listens on path with mode 0600 from the first instant, or,
// given a group (gid >= 0), 0660 once it belongs to that group. We hold
// the data dir's lock, so a socket file already there is a dead kmd's.
func listenUnix(path string, gid int) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket path %s exists and is not a socket; remove it or choose another --socket", path)
		}
		// Our data dir's lock says nothing of a socket elsewhere: a live
		// one belongs to another kmd (or anything else) and stays.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is in use by another process; stop it or choose another --socket", path)
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("give socket %s to group %d: %w", path, gid, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
