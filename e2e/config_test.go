package e2e_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfigPrecedence checks that a flag wins over a KMD_* variable, which
// wins over the config file.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "kmde2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "kmd.yaml")
	if err := os.WriteFile(cfg, []byte("# kmd test configuration\nnode_id: 3\nlog_format: console\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		opts kmdOptions
		want int
		sig  syscall.Signal // to stop kmd
	}{
		{"flag over env over file", kmdOptions{args: []string{"--config", cfg, "--node-id", "5"}, env: []string{"KMD_NODE_ID=4"}}, 5, 0},
		{"env over file", kmdOptions{args: []string{"--config", cfg}, env: []string{"KMD_NODE_ID=4"}}, 4, 0},
		{"file", kmdOptions{args: []string{"--config", cfg}}, 3, 0},
		{"file named by KMD_CONFIG", kmdOptions{env: []string{"KMD_CONFIG=" + cfg}}, 3, 0},
		{"default, socket in the data dir, stopped by SIGINT", kmdOptions{defaultSocket: true}, 1, syscall.SIGINT},
	} {
		t.Run(tc.what, func(t *testing.T) {
			tc.opts.bare = true
			d := startKMDOpts(t, tc.opts)
			n := d.sedStatus().Nodes[0]
			if n.Node != tc.want {
				t.Errorf("sed status -o json: node %d, want %d", n.Node, tc.want)
			}
			ls := lines(d.must("sed", "status"))
			if len(ls) < 3 || !strings.HasPrefix(ls[2], " "+pad(strconv.Itoa(tc.want), 5)+"LOCAL") {
				t.Errorf("sed status table does not show node %d:\n%s", tc.want, strings.Join(ls, "\n"))
			}
			if tc.sig == 0 {
				tc.sig = syscall.SIGTERM
			}
			d.stopWith(tc.sig)
			// log_format: console from the file applies too (JSON without it).
			b, err := os.ReadFile(d.logFile)
			if err != nil || len(b) == 0 {
				t.Fatalf("log file %s: %v, %d bytes", d.logFile, err, len(b))
			}
			if json := b[0] == '{'; json != (tc.want == 1) {
				t.Errorf("log format: first line %q; want console format from the config file, JSON without it", lines(string(b))[0])
			}
		})
	}
}

// TestLogFileFallback checks that kmd logs to stderr, saying so once, when
// its log file cannot be opened, and that SIGHUP reopens the log file.
func TestLogFileFallback(t *testing.T) {
	t.Parallel()
	t.Run("log file cannot be opened", func(t *testing.T) {
		d := startKMD(t, "--log-file", "/nonexistent-kmd-e2e/dir/kmd.log")
		d.must("cluster", "rekey", "modify", "--key-rotation", "6W")
		d.stop()
		b, err := os.ReadFile(d.outFile)
		if err != nil {
			t.Fatal(err)
		}
		out := string(b)
		n := 0
		for _, l := range lines(out) {
			if strings.Contains(l, "/nonexistent-kmd-e2e/dir/kmd.log") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("kmd named its unusable log file on %d lines of stderr, want one:\n%s", n, out)
		}
		if len(lines(out)) < 5 {
			t.Errorf("kmd logged %d lines to stderr, want its log there:\n%s", len(lines(out)), out)
		}
		if _, err := os.Stat(d.logFile); err == nil {
			t.Errorf("kmd wrote the harness's log file though --log-file pointed elsewhere")
		}
	})

	t.Run("SIGHUP reopens the log file", func(t *testing.T) {
		d := startKMD(t)
		moved := d.logFile + ".1"
		if err := os.Rename(d.logFile, moved); err != nil {
			t.Fatal(err)
		}
		d.signal(syscall.SIGHUP)
		if !waitUntil(10*time.Second, func() bool {
			b, err := os.ReadFile(d.logFile)
			return err == nil && len(b) > 0
		}) {
			t.Fatalf("no new log file %s after SIGHUP", d.logFile)
		}
		d.must("cluster", "rekey", "modify", "--key-rotation", "6W")
		d.stop()
		b, _ := os.ReadFile(d.logFile)
		if !strings.Contains(string(b), "6W") {
			t.Errorf("the reopened log file lacks what was logged after SIGHUP:\n%s", b)
		}
		old, _ := os.ReadFile(moved)
		if strings.Contains(string(old), "6W") {
			t.Errorf("kmd kept logging to the moved log file after SIGHUP")
		}
	})
}
