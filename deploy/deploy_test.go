package deploy_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/metrics"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// targetLabels are the labels Prometheus gives every series of a target.
var targetLabels = []string{"instance", "job"}

// exported returns every metric name kmd's /metrics can show, with its
// labels: kmd's own families (a histogram's as _bucket, _sum and _count
// too), the Go runtime's and the process's, and Prometheus's own up.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{"up": nil}
	for _, f := range metrics.Families() {
		out[f.Name] = f.Labels
		if f.Type == "histogram" {
			out[f.Name+"_bucket"] = append(slices.Clone(f.Labels), "le")
			out[f.Name+"_sum"] = f.Labels
			out[f.Name+"_count"] = f.Labels
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		out[mf.GetName()] = nil
	}
	return out
}

// knownValues are the values kmd gives a label, where they are a fixed set.
func knownValues() map[string][]string {
	all := append(slices.Clone(domains.ClusterDomains), domains.SEDDomain)
	return map[string][]string{
		"state":  metrics.States,
		"result": {metrics.ResultSucceeded, metrics.ResultFailed},
		"scope":  domains.Scopes,
		"domain": all,
	}
}

var (
	reSelector  = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}`)
	reMatcher   = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
	reLabelList = regexp.MustCompile(`\b(on|ignoring|by|without|group_left|group_right)\s*\(([^)]*)\)`)
	reRange     = regexp.MustCompile(`\[[^\]]*\]|\boffset\s+-?[0-9a-z]+`)
	reIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	reTemplate  = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)
	keywords    = []string{"and", "or", "unless", "bool", "on", "ignoring", "by", "without", "group_left", "group_right", "offset", "inf", "nan"}
)

type matcher struct{ metric, label, op, value string }

// parseExpr picks out of a PromQL expression the metric names it selects,
// the label matchers of its selectors and the labels its on(), by() and
// similar clauses name. It is no PromQL parser, but reads every form the
// rules use.
func parseExpr(expr string) (names []string, ms []matcher, listed []string) {
	for _, m := range reSelector.FindAllStringSubmatch(expr, -1) {
		for part := range strings.SplitSeq(m[2], ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			mm := reMatcher.FindStringSubmatch(part)
			if mm == nil {
				ms = append(ms, matcher{metric: m[1], label: "?" + strings.TrimSpace(part)})
				continue
			}
			ms = append(ms, matcher{metric: m[1], label: mm[1], op: mm[2], value: mm[3]})
		}
	}
	rest := reSelector.ReplaceAllString(expr, "$1 ")
	for _, m := range reLabelList.FindAllStringSubmatch(rest, -1) {
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				listed = append(listed, l)
			}
		}
	}
	rest = reLabelList.ReplaceAllString(rest, " ")
	rest = reRange.ReplaceAllString(rest, " ")
	for _, loc := range reIdent.FindAllStringIndex(rest, -1) {
		id := rest[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(rest[loc[0]-1:loc[0]], "0123456789.") {
			continue // an exponent: 1e3
		}
		if strings.HasPrefix(strings.TrimLeft(rest[loc[1]:], " \t\n"), "(") || slices.Contains(keywords, strings.ToLower(id)) {
			continue // a function, an aggregation or a keyword
		}
		names = append(names, id)
	}
	return names, ms, listed
}

func readRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("prometheus", "kmd-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("prometheus/kmd-alerts.yml: %v", err)
	}
	var rules []rule
	for _, g := range rf.Groups {
		if g.Name == "" {
			t.Error("a rule group without a name")
		}
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestAlertRules checks that every alert rule is complete and selects only
// metrics kmd exports, by labels those metrics have and values they take.
func TestAlertRules(t *testing.T) {
	have := exported(t)
	values := knownValues()
	rules := readRules(t)
	var alerts []string
	for _, r := range rules {
		alerts = append(alerts, r.Alert)
		t.Run(r.Alert, func(t *testing.T) {
			if r.Alert == "" || r.Expr == "" {
				t.Fatalf("rule %+v: want alert and expr", r)
			}
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("for %q: %v", r.For, err)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("want a severity label and summary and description annotations: %+v", r)
			}
			names, ms, listed := parseExpr(r.Expr)
			if len(names) == 0 {
				t.Fatalf("expr %q selects no metric", r.Expr)
			}
			labels := slices.Clone(targetLabels)
			for _, n := range names {
				ls, ok := have[n]
				if !ok {
					t.Errorf("expr names %s, which kmd does not export", n)
				}
				labels = append(labels, ls...)
			}
			for _, m := range ms {
				if strings.HasPrefix(m.label, "?") {
					t.Errorf("matcher %q of %s: not understood", m.label[1:], m.metric)
					continue
				}
				ls := have[m.metric]
				if m.metric == "" {
					ls = labels
				}
				if !slices.Contains(ls, m.label) && !slices.Contains(targetLabels, m.label) {
					t.Errorf("%s{%s…}: %s has no label %s", m.metric, m.label, m.metric, m.label)
				}
				if vs, ok := values[m.label]; ok && (m.op == "=" || m.op == "!=") && !slices.Contains(vs, m.value) {
					t.Errorf("%s{%s%s%q}: kmd's %s is one of %v", m.metric, m.label, m.op, m.value, m.label, vs)
				}
			}
			for _, l := range listed {
				if !slices.Contains(labels, l) {
					t.Errorf("expr groups or matches on %s, a label none of %v has", l, names)
				}
			}
			for _, a := range r.Annotations {
				for _, m := range reTemplate.FindAllStringSubmatch(a, -1) {
					if !slices.Contains(labels, m[1]) {
						t.Errorf("annotation uses $labels.%s, a label none of %v has", m[1], names)
					}
				}
			}
		})
	}
	for _, want := range []string{"KmdRekeyFailing", "KmdMasterKeyOverdue", "KmdDown"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s among %v", want, alerts)
		}
	}
}

// TestParseExpr pins what parseExpr finds, so that TestAlertRules can
// fail.
func TestParseExpr(t *testing.T) {
	for _, tc := range []struct {
		expr          string
		names, listed []string
		matcherLabels []string
	}{
		{`kmd_rekey_consecutive_failures > 0`, []string{"kmd_rekey_consecutive_failures"}, nil, nil},
		{`sum by (domain) (rate(kmd_rekeys_total{result="failed"}[1h])) > 1e3`, []string{"kmd_rekeys_total"}, []string{"domain"}, []string{"result"}},
		{`kmd_master_key_age_seconds > on(instance, scope) group_left() (kmd_key_rotation_seconds > 0)`,
			[]string{"kmd_master_key_age_seconds", "kmd_key_rotation_seconds"}, []string{"instance", "scope"}, nil},
		{`up{job="kmd"} == 0 or absent(kmd_nope offset 5m)`, []string{"up", "kmd_nope"}, nil, []string{"job"}},
		{`{__name__="x", domain=~"S.*"}`, nil, nil, []string{"__name__", "domain"}},
	} {
		names, ms, listed := parseExpr(tc.expr)
		var labels []string
		for _, m := range ms {
			labels = append(labels, m.label)
		}
		if !slices.Equal(names, tc.names) || !slices.Equal(listed, tc.listed) || !slices.Equal(labels, tc.matcherLabels) {
			t.Errorf("parseExpr(%q) = names %v, listed %v, matchers %v; want %v, %v, %v",
				tc.expr, names, listed, labels, tc.names, tc.listed, tc.matcherLabels)
		}
	}
}

// unitLines returns the unit file's Key=Value lines, in order.
func unitLines(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open("kmd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("kmd.service: line %q is no Key=Value", line)
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

func unitValue(t *testing.T, key string) string {
	t.Helper()
	var v string
	n := 0
	for _, kv := range unitLines(t) {
		if kv[0] == key {
			v, n = kv[1], n+1
		}
	}
	if n != 1 {
		t.Fatalf("kmd.service has %d %s lines, want 1", n, key)
	}
	return v
}

// buildKMD builds the real kmd into a temporary directory.
func buildKMD(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kmd")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/kmd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/kmd: %v\n%s", err, out)
	}
	return bin
}

// TestSystemdUnit checks that the unit runs kmd with flags kmd has, on the
// directories systemd makes for it, and, where systemd-analyze is
// installed, that it verifies clean.
func TestSystemdUnit(t *testing.T) {
	kmd := buildKMD(t)
	exec0 := strings.Fields(unitValue(t, "ExecStart"))
	if exec0[0] != "/usr/local/bin/kmd" {
		t.Errorf("ExecStart runs %s, want /usr/local/bin/kmd as README.md installs it", exec0[0])
	}
	help, _ := exec.Command(kmd, "--help").CombinedOutput()
	for i, a := range exec0[1:] {
		if strings.HasPrefix(a, "--") && !regexp.MustCompile(`(?m)^\s+-`+regexp.QuoteMeta(strings.TrimPrefix(a, "--"))+`\b`).Match(help) {
			t.Errorf("ExecStart passes %s (argument %d), a flag `kmd --help` does not list:\n%s", a, i+1, help)
		}
	}
	flags := map[string]string{}
	for i := 1; i+1 < len(exec0); i += 2 {
		flags[exec0[i]] = exec0[i+1]
	}
	if got := flags["--data-dir"]; got != "/var/lib/"+unitValue(t, "StateDirectory") {
		t.Errorf("--data-dir %s is not StateDirectory's /var/lib/%s", got, unitValue(t, "StateDirectory"))
	}
	if got := filepath.Dir(flags["--log-file"]); got != "/var/log/"+unitValue(t, "LogsDirectory") {
		t.Errorf("--log-file %s is not in LogsDirectory's /var/log/%s", flags["--log-file"], unitValue(t, "LogsDirectory"))
	}
	for _, kv := range [][2]string{{"User", "kmd"}, {"Group", "kmd"}, {"NoNewPrivileges", "yes"}, {"ProtectSystem", "strict"},
		{"CapabilityBoundingSet", ""}, {"UMask", "0077"}, {"Restart", "on-failure"}, {"ExecReload", "/bin/kill -HUP $MAINPID"}} {
		if got := unitValue(t, kv[0]); got != kv[1] {
			t.Errorf("%s=%s, want %s", kv[0], got, kv[1])
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: `systemd-analyze verify` skipped")
	}
	// verify wants the binaries to exist: the unit as written, but for
	// the path of the kmd just built.
	b, err := os.ReadFile("kmd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "kmd.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/kmd"), []byte(kmd)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify kmd.service: %v\n%s", err, out)
	}
}

// TestLogrotate checks that the snippet rotates the log file the unit
// names, signals kmd to reopen it, and, where logrotate is installed,
// that logrotate reads it without error.
func TestLogrotate(t *testing.T) {
	b, err := os.ReadFile("kmd.logrotate")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	exec0 := strings.Fields(unitValue(t, "ExecStart"))
	logFile := exec0[slices.Index(exec0, "--log-file")+1]
	if !strings.Contains(conf, "\n"+logFile+" {") {
		t.Errorf("kmd.logrotate does not rotate %s, the unit's --log-file", logFile)
	}
	if !regexp.MustCompile(`(?s)postrotate\s+systemctl kill --signal=HUP --kill-whom=main kmd.service`).MatchString(conf) {
		t.Error("kmd.logrotate does not send kmd.service's main process SIGHUP after rotating")
	}
	logrotate, err := exec.LookPath("logrotate")
	if err != nil {
		t.Skip("logrotate not installed: its check of the snippet skipped")
	}
	// Debug mode reads the configuration and runs nothing. This machine
	// has no user kmd, and the log lives elsewhere: those two change.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kmd.log"), []byte("a line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf = strings.ReplaceAll(conf, " kmd kmd", " root root")
	conf = strings.ReplaceAll(conf, logFile, filepath.Join(dir, "kmd.log"))
	cf := filepath.Join(dir, "kmd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(logrotate, "-d", "-s", filepath.Join(dir, "state"), cf).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("error:")) {
		t.Errorf("logrotate -d: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("Handling 1 logs")) {
		t.Errorf("logrotate -d does not handle the log:\n%s", out)
	}
}
