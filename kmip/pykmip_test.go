package kmip

import (
	"os"
	"testing"

	"github.com/kmd-project/kmd/provider"
	"github.com/kmd-project/kmd/provider/providertest"
)

// TestSource_PyKMIP runs the conformance suite and Verify against a real
// PyKMIP server, when one is given in the environment as
// scripts/pykmip-up.sh prints it:
//
//	eval "$(scripts/pykmip-up.sh /tmp/pykmip)" && export PYKMIP_ADDR PYKMIP_CA PYKMIP_CLIENT_CERT PYKMIP_CLIENT_KEY
//	go test -run PyKMIP ./kmip/
func TestSource_PyKMIP(t *testing.T) {
	addr := os.Getenv("PYKMIP_ADDR")
	if addr == "" {
		t.Skip("PYKMIP_ADDR not set; see scripts/pykmip-up.sh")
	}
	cfg := ServerConfig{
		Name:       "pykmip",
		Addrs:      []string{addr},
		CACert:     os.Getenv("PYKMIP_CA"),
		ClientCert: os.Getenv("PYKMIP_CLIENT_CERT"),
		ClientKey:  os.Getenv("PYKMIP_CLIENT_KEY"),
		NodeID:     1,
	}
	rep, err := newSource(t, cfg).Verify(t.Context())
	t.Logf("verify: %+v", rep)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	providertest.RunKeySource(t, func(t *testing.T) provider.KeySource { return newSource(t, cfg) })
}
