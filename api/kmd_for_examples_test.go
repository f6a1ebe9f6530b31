package api_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api/server"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/logs"
)

// startKMD runs a real kmd (registry, event journal and API server) in
// temporary directories and returns its socket and a function that stops it
// and removes its files. It panics if kmd cannot start: examples have no
// *testing.T.
func startKMD() (socket string, stop func()) {
	// Unix socket paths are limited to 108 bytes: keep this one short.
	dir, err := os.MkdirTemp("", "kmd")
	if err != nil {
		panic(err)
	}
	dataDir := filepath.Join(dir, "data")
	lg := zap.NewNop()
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		panic(err)
	}
	journal, err := logs.OpenJournal(logs.JournalOptions{Dir: dataDir, Logger: lg})
	if err != nil {
		panic(err)
	}
	reg, err := domains.Open(context.Background(), domains.Config{
		DataDir: dataDir, TickMax: time.Hour, BatchSize: 10, Events: journal, Log: lg,
	})
	if err != nil {
		panic(err)
	}
	socket = filepath.Join(dir, "kmd.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: server.New(reg, journal, lg, "example").Handler(), ReadHeaderTimeout: 10 * time.Second,
		ConnContext: access.ConnContext}
	go srv.Serve(ln)
	return socket, func() {
		srv.Close()
		reg.Close()
		journal.Close()
		os.RemoveAll(dir)
	}
}
