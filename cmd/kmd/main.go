// Command kmd is the key-manager daemon: it keeps one encrypted provider
// store per domain, rekeys their master keys on demand and on schedule, and
// serves the entries and admin API on a unix socket, and its web page on a
// loopback address (--ui-listen).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/api/ui"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
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
	reg, err := domains.Open(ctx, domains.Config{
		DataDir: cfg.DataDir, NodeID: cfg.NodeID, RetryInterval: cfg.RetryInterval,
		Events: journal, Log: lg, Lock: lock,
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
	// its own loopback listener where everything needs a session.
	web := ui.New(ui.Options{Addr: cfg.UIListen, Log: lg.Named("ui")})
	handler := web.Mount(server.New(reg, journal, lg, version).Handler())
	var uiLn net.Listener
	if cfg.UIListen != "" {
		if uiLn, err = listenUI(cfg.UIListen); err != nil {
			return err
		}
	}
	ln, err := listenUnix(cfg.Socket)
	if err != nil {
		if uiLn != nil {
			uiLn.Close()
		}
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(lg.Named("http")),
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	var uiSrv *http.Server
	if uiLn != nil {
		uiSrv = serveUI(uiLn, web, handler, lg, serveErr)
	}
	lg.Info("kmd started", zap.String("version", version), zap.String("data_dir", cfg.DataDir),
		zap.String("socket", cfg.Socket), zap.Int(logs.Node, cfg.NodeID), zap.Duration("retry_interval", cfg.RetryInterval))

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

// listenUnix listens on path with mode 0600 from the first instant. We hold
// the data dir's lock, so a socket file already there is a dead kmd's.
func listenUnix(path string) (net.Listener, error) {
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
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
