package kmip

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/kmip/kmiptestserver"
)

func stepResults(rep VerifyReport) string {
	var parts []string
	for _, s := range rep.Steps {
		parts = append(parts, s.Name+"="+s.Result)
	}
	return strings.Join(parts, " ")
}

func TestVerify_Report(t *testing.T) {
	srv := kmiptestserver.Start(t)
	src := newSource(t, testConfig(srv))
	rep, err := src.Verify(t.Context())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK || !rep.Reachable || rep.Server != "kmip1" || rep.Addr != srv.Addr || rep.Error != "" {
		t.Errorf("report = %+v", rep)
	}
	if rep.TLSVersion != "TLS 1.3" || rep.KMIPVersion != "1.4" {
		t.Errorf("TLS %q, KMIP %q; want TLS 1.3, 1.4", rep.TLSVersion, rep.KMIPVersion)
	}
	if got, want := stepResults(rep), "create=ok activate=ok locate=ok get=ok revoke=ok destroy=ok"; got != want {
		t.Errorf("steps: %s, want %s", got, want)
	}
	if !strings.HasPrefix(rep.ProbeKey, "kmd/1/verify/") || rep.ProbeID == "" {
		t.Errorf("probe key %q (%q)", rep.ProbeKey, rep.ProbeID)
	}
	if len(srv.Keys()) != 0 || len(srv.Lookup(rep.ProbeKey)) != 0 {
		t.Errorf("the probe key is left on the server")
	}
	// Field names are part of kmctl's JSON output.
	b, _ := json.Marshal(rep)
	for _, f := range []string{`"server":`, `"addr":`, `"reachable":true`, `"tls_version":"TLS 1.3"`, `"kmip_version":"1.4"`, `"steps":[{"name":"create","result":"ok"}`, `"ok":true`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("JSON %s lacks %s", b, f)
		}
	}
	// Verify connects afresh each time.
	before := srv.Count("DiscoverVersions")
	if _, err := src.Verify(t.Context()); err != nil {
		t.Fatalf("second Verify: %v", err)
	}
	if srv.Count("DiscoverVersions") != before+1 {
		t.Errorf("the second Verify reused the connection")
	}
}

func TestVerify_ProbeFailures(t *testing.T) {
	cases := []struct {
		op    string
		steps string
	}{
		{"Create", "create=failed activate=skipped locate=skipped get=skipped revoke=skipped destroy=skipped"},
		{"Activate", "create=ok activate=failed locate=ok get=ok revoke=skipped destroy=ok"},
		{"Locate", "create=ok activate=ok locate=failed get=ok revoke=ok destroy=ok"},
		{"Get", "create=ok activate=ok locate=ok get=failed revoke=ok destroy=ok"},
		{"Revoke", "create=ok activate=ok locate=ok get=ok revoke=failed destroy=failed"},
		{"Destroy", "create=ok activate=ok locate=ok get=ok revoke=ok destroy=failed"},
	}
	for _, c := range cases {
		t.Run(c.op, func(t *testing.T) {
			srv := kmiptestserver.Start(t)
			srv.FailOn(c.op, errors.New("injected"))
			rep, err := newSource(t, testConfig(srv)).Verify(t.Context())
			if !errors.Is(err, ErrServer) {
				t.Fatalf("Verify: %v, want ErrServer", err)
			}
			if !rep.Reachable || rep.OK || rep.Error != err.Error() {
				t.Errorf("report: reachable %v, ok %v, error %q", rep.Reachable, rep.OK, rep.Error)
			}
			if got := stepResults(rep); got != c.steps {
				t.Errorf("steps: %s\nwant:  %s", got, c.steps)
			}
			if !strings.Contains(err.Error(), "kmip verify kmip1: probe "+strings.ToLower(c.op)) {
				t.Errorf("error %q does not name the step", err)
			}
			for _, s := range rep.Steps {
				if (s.Result == StepFailed) != (s.Error != "") {
					t.Errorf("step %+v: an error exactly when failed", s)
				}
			}
			noLeak(t, srv, nil, err)
		})
	}
}

func TestVerify_Unreachable(t *testing.T) {
	srv := kmiptestserver.Start(t)
	cfg := testConfig(srv)
	cfg.Addrs = []string{closedAddr(t)}
	rep, err := newSource(t, cfg).Verify(t.Context())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Verify: %v, want ErrUnreachable", err)
	}
	if rep.Reachable || rep.OK || rep.TLSVersion != "" || rep.KMIPVersion != "" || !strings.Contains(rep.Error, "connection refused") {
		t.Errorf("report = %+v", rep)
	}
	if got := stepResults(rep); strings.Count(got, "=skipped") != len(probeSteps) {
		t.Errorf("steps: %s, want all skipped", got)
	}
}
