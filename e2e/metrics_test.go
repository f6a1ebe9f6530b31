package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics sends GET /metrics over kmd's unix socket, as Prometheus
// (or curl --unix-socket) would, and parses the answer.
func (d *daemon) scrapeMetrics() ([]byte, map[string]*dto.MetricFamily) {
	d.t.Helper()
	c := &http.Client{Timeout: cmdTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.sock)
		},
	}}
	resp, err := c.Get("http://kmd/metrics")
	if err != nil {
		d.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatalf("GET /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		d.t.Fatalf("GET /metrics: %s, Content-Type %q:\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		d.t.Fatalf("parse GET /metrics: %v\n%s", err, body)
	}
	return body, mfs
}

// metricValue returns the gauge or counter of name whose labels include
// kv (name, value pairs), and whether there is exactly one.
func metricValue(mfs map[string]*dto.MetricFamily, name string, kv ...string) (float64, bool) {
	var found []float64
next:
	for _, m := range mfs[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if got[kv[i]] != kv[i+1] {
				continue next
			}
		}
		found = append(found, m.GetGauge().GetValue()+m.GetCounter().GetValue())
	}
	if len(found) != 1 {
		return 0, false
	}
	return found[0], true
}

// TestMetricsOverSocket scrapes the real kmd's /metrics on its socket
// before and after a rekey done with kmctl, and checks the values against
// `cluster status -o json`.
func TestMetricsOverSocket(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	entries := map[string][]byte{}
	for i := range 40 {
		entries[fmt.Sprintf("user-%02d", i)] = []byte("metrics-secret-value")
	}
	d.importEntries("FTP", entries)
	old := d.clusterStatus().row(t, "FTP")

	body, mfs := d.scrapeMetrics()
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if v, ok := metricValue(mfs, "kmd_entries", "domain", "FTP", "key_id", old.KeyID); !ok || v != 40 {
		t.Errorf("kmd_entries{domain=FTP,key_id=%s} = %v (found %v), want 40", old.KeyID, v, ok)
	}
	if v, ok := metricValue(mfs, "kmd_rekeys_total", "domain", "FTP", "result", "succeeded"); !ok || v != 0 {
		t.Errorf("FTP rekeys succeeded = %v (found %v) before any rekey", v, ok)
	}
	if v, ok := metricValue(mfs, "kmd_rekey_state", "scope", "sed", "domain", "SED", "state", "ACTIVE"); !ok || v != 1 {
		t.Errorf("SED ACTIVE = %v (found %v), want 1", v, ok)
	}
	if mfs["go_goroutines"] == nil || mfs["process_start_time_seconds"] == nil {
		t.Error("no Go or process metrics")
	}

	d.must("cluster", "rekey", "start", "--domain", "FTP", "--yes", "--wait")
	now := d.clusterStatus().row(t, "FTP")
	body, mfs = d.scrapeMetrics()
	if now.KeyID == old.KeyID {
		t.Fatalf("FTP key unchanged after the rekey: %s", now.KeyID)
	}
	for _, c := range []struct {
		name string
		kv   []string
		want float64
	}{
		{"kmd_rekeys_total", []string{"domain", "FTP", "result", "succeeded"}, 1},
		{"kmd_rekeys_total", []string{"domain", "FTP", "result", "failed"}, 0},
		{"kmd_entries_reencrypted_total", []string{"domain", "FTP"}, 40},
		{"kmd_entries", []string{"domain", "FTP", "key_id", now.KeyID}, 40},
		{"kmd_rekey_state", []string{"domain", "FTP", "state", "ACTIVE"}, 1},
		{"kmd_rekey_consecutive_failures", []string{"domain", "FTP"}, 0},
		{"kmd_master_key_created_timestamp_seconds", []string{"domain", "FTP"}, float64(now.KeyCreated.Unix())},
		{"kmd_rekeys_total", []string{"domain", "S3", "result", "succeeded"}, 0},
	} {
		if v, ok := metricValue(mfs, c.name, c.kv...); !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.kv, v, ok, c.want)
		}
	}
	if _, ok := metricValue(mfs, "kmd_entries", "domain", "FTP", "key_id", old.KeyID); ok {
		t.Errorf("the destroyed key %s still has kmd_entries", old.KeyID)
	}
	if n := mfs["kmd_rekey_duration_seconds"]; n == nil || histogramCount(n, "FTP") != 1 {
		t.Errorf("FTP rekey duration: want one sample")
	}
	if bytes.Contains(body, []byte("metrics-secret-value")) || bytes.Contains(body, []byte("user-0")) {
		t.Error("the metrics hold an entry's value or name")
	}
}

func histogramCount(mf *dto.MetricFamily, domain string) uint64 {
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "domain" && l.GetValue() == domain {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}
