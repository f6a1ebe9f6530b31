package metrics_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/metrics"
)

// TestREADMEListsTheMetrics: the README's metrics table names every family
// kmd exports, and nothing else.
func TestREADMEListsTheMetrics(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The Metrics section only: kmd_ names elsewhere are other things (the
	// web page's cookie, say).
	text := string(b)
	start := strings.Index(text, "### Metrics")
	if start < 0 {
		t.Fatal("README.md has no Metrics section")
	}
	text = text[start:]
	if end := strings.Index(text, "\n## "); end >= 0 {
		text = text[:end]
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(kmd_[a-z_]+)").FindAllStringSubmatch(text, -1) {
		listed[m[1]] = true
	}
	var names []string
	for _, f := range metrics.Families() {
		names = append(names, f.Name)
		if !listed[f.Name] {
			t.Errorf("README.md does not list %s", f.Name)
		}
	}
	for n := range listed {
		if !slices.Contains(names, n) {
			t.Errorf("README.md lists %s, which kmd does not export", n)
		}
	}
}
