package metrics_test

import (
	"os"
	"regexp"
	"slices"
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
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(kmd_[a-z_]+)").FindAllStringSubmatch(string(b), -1) {
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
