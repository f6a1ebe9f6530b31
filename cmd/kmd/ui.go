package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/api/ui"
)

// listenUI listens on the --ui-listen address, which loadConfig checked is
// loopback; a host name (localhost) must also have resolved to loopback.
func listenUI(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, fmt.Errorf("listen on --ui-listen %s: %w; choose another address or port", addr, err)
	}
	if !ui.IsLoopback(ln.Addr()) {
		ln.Close()
		return nil, usageError{fmt.Errorf("--ui-listen %s listens on %s, which is not loopback: want 127.0.0.1:PORT or [::1]:PORT", addr, ln.Addr())}
	}
	return ln, nil
}

// serveUI serves the web page and the API on ln, every request behind a
// web session (web.Gate). Serve's end is sent to serveErr.
func serveUI(ln net.Listener, web *ui.UI, h http.Handler, lg *zap.Logger, serveErr chan<- error) *http.Server {
	srv := &http.Server{
		Handler:           web.Gate(h),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(lg.Named("http-ui")),
	}
	go func() { serveErr <- srv.Serve(ln) }()
	lg.Info("web page listening", zap.String("ui_listen", ln.Addr().String()))
	return srv
}
