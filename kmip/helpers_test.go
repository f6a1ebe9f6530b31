package kmip

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/kmd-project/kmd/kmip/kmiptestserver"
	"github.com/kmd-project/kmd/provider/providertest"
)

func TestMain(m *testing.M) {
	// kmipserver logs every connection through slog's default logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// testConfig points at srv with kmd's defaults, as node 1.
func testConfig(srv *kmiptestserver.Server) ServerConfig {
	return ServerConfig{
		Name:       "kmip1",
		Addrs:      []string{srv.Addr},
		CACert:     srv.CACert,
		ClientCert: srv.ClientCert,
		ClientKey:  srv.ClientKey,
		NodeID:     1,
	}
}

// newSource returns a Source for cfg, closed at the end of the test.
func newSource(t testing.TB, cfg ServerConfig) *Source {
	t.Helper()
	src, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// noLeak fails t if any error's text holds the material of any key on
// the server or any of extra.
func noLeak(t testing.TB, srv *kmiptestserver.Server, extra [][]byte, errs ...error) {
	t.Helper()
	materials := extra
	for _, m := range srv.Keys() {
		materials = append(materials, m)
	}
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, m := range materials {
			if len(m) < 8 {
				continue
			}
			if how := providertest.Leaks(err.Error(), m); how != "" {
				t.Errorf("error %q contains key material (%s)", err, how)
			}
		}
	}
}
