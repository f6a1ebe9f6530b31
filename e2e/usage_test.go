package e2e_test

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUsageErrors checks that every usage error exits 2 with one
// "kmctl: error:" line first on stderr and changes nothing, and that
// failed operations exit 1.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	d.put("S3", "present", []byte("value"))
	d.must("cluster", "rekey", "modify", "--key-rotation", "6W")
	keysBefore, sedBefore := d.keyIDs(), d.sedKeyID()
	viewBefore, sedViewBefore := d.rekeyView("cluster"), d.rekeyView("sed")

	long := strings.Repeat("n", 256)
	cases := [][]string{
		{"frobnicate"},
		{},
		{"cluster"},
		{"cluster", "frobnicate"},
		{"cluster", "rekey", "frobnicate"},
		{"cluster", "status", "--frob"},
		{"cluster", "status", "extra"},
		{"cluster", "status", "-o", "yaml"},
		{"cluster", "status", "-o"},
		{"sed", "status", "-o", "yaml"},
		{"cluster", "rekey", "modify"},
		{"cluster", "rekey", "modify", "--key-rotation", "-1D"},
		{"cluster", "rekey", "modify", "--key-rotation", "6W", "extra"},
		{"cluster", "rekey", "start", "--domain", "NOPE", "--yes"},
		{"cluster", "rekey", "start", "--domain", "s3", "--yes"},
		{"cluster", "rekey", "start", "--domain", "SED", "--yes"},
		{"cluster", "rekey", "start", "--domain", "S3", "--domain", "NOPE", "--yes"},
		{"cluster", "rekey", "start", "--yes", "extra"},
		{"sed", "rekey", "start", "--domain", "S3", "--yes"},
		{"events", "list", "--since", "notatime"},
		{"events", "list", "--since", "2026-13-01T00:00:00Z"},
		{"entry", "get", "S3"},
		{"entry", "get"},
		{"entry", "put", "S3"},
		{"entry", "delete", "S3"},
		{"entry", "list"},
		{"entry", "import"},
		{"entry", "export"},
		{"entry", "get", "S3", "present", "extra"},
		{"entry", "get", "S3", "bad\tname"},
		{"entry", "put", "S3", "bad\x01name"},
		{"entry", "put", "S3", ""},
		{"entry", "put", "S3", long},
		{"entry", "delete", "S3", "bad\nname"},
		{"entry", "get", "S3", "\xff\xfe"},
	}
	for _, v := range []string{"6X", "0W", "-1D", "W", "6", "6w", "", " 6W", "6W ", "1.5W", "+6W", "0x6W", "Never6W", "never"} {
		cases = append(cases,
			[]string{"cluster", "rekey", "modify", "--key-rotation=" + v},
			[]string{"sed", "rekey", "modify", "--key-rotation=" + v})
	}
	for _, args := range cases {
		stdout, stderr, code := d.kmctlIn([]byte("some value"), args...)
		el := errorLines(stderr)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 2 || len(el) != 1 || !strings.HasPrefix(first, "kmctl: error:") {
			t.Errorf("kmctl %s: exit %d with %d error lines, first line %q; want exit 2 with one kmctl: error: line first\n%s",
				cmdline(args), code, len(el), first, stderr)
		}
		if !strings.Contains(stderr, "Usage:") {
			t.Errorf("kmctl %s: no usage on stderr:\n%s", cmdline(args), stderr)
		}
		if stdout != "" {
			t.Errorf("kmctl %s: printed %q on stdout, want nothing", cmdline(args), stdout)
		}
	}

	if k := d.keyIDs(); !maps.Equal(k, keysBefore) || d.sedKeyID() != sedBefore {
		t.Errorf("usage errors changed key ids")
	}
	if v := d.rekeyView("cluster"); v != viewBefore {
		t.Errorf("usage errors changed the cluster schedule: %+v, was %+v", v, viewBefore)
	}
	if v := d.rekeyView("sed"); v != sedViewBefore {
		t.Errorf("usage errors changed the sed schedule: %+v, was %+v", v, sedViewBefore)
	}
	for _, r := range d.clusterStatus().Domains {
		if r.Status != "ACTIVE" {
			t.Errorf("after usage errors %s is %s, want ACTIVE", r.Domain, r.Status)
		}
	}
	if names := d.list("S3"); len(names) != 1 || names[0] != "present" {
		t.Errorf("after usage errors S3 holds %q, want only present", names)
	}
	if v := d.get("S3", "present"); string(v) != "value" {
		t.Errorf("after usage errors S3 present = %q", v)
	}

	t.Run("operation failures exit 1", func(t *testing.T) {
		d := d.in(t)
		for _, args := range [][]string{
			{"entry", "get", "S3", "missing"},
			{"entry", "delete", "S3", "missing"},
			{"entry", "get", "NOPE", "x"},
			{"entry", "list", "NOPE"},
		} {
			stdout, stderr, code := d.kmctl(args...)
			if code != 1 || len(errorLines(stderr)) != 1 || stdout != "" {
				t.Errorf("kmctl %s: exit %d, stdout %q; want exit 1 with one error line, no output; stderr:\n%s", cmdline(args), code, stdout, stderr)
			}
		}
	})

	t.Run("daemon unreachable", func(t *testing.T) {
		sock := filepath.Join(d.root, "nobody.sock")
		for _, args := range [][]string{{"cluster", "status"}, {"entry", "get", "S3", "present"}, {"events", "list", "-o", "json"}} {
			_, stderr, code := runKmctl(t, sock, nil, args...)
			if code != 1 || !strings.Contains(stderr, "cannot reach kmd") {
				t.Errorf("kmctl --socket %s %s: exit %d, want 1 with %q; stderr:\n%s", sock, cmdline(args), code, "cannot reach kmd", stderr)
			}
		}
	})

	t.Run("KMD_SOCKET", func(t *testing.T) {
		out, stderr, code := execKmctlEnv([]string{"KMD_SOCKET=" + d.sock}, "", nil, "cluster", "status", "-o", "json")
		var cs clusterStatus
		if code != 0 || !decodeQuiet(out, &cs) || cs.Total != 17 {
			t.Errorf("KMD_SOCKET=%s kmctl cluster status -o json: exit %d; stderr:\n%s", d.sock, code, stderr)
		}
		// --socket wins over KMD_SOCKET.
		_, stderr, code = execKmctlEnv([]string{"KMD_SOCKET=/nonexistent/kmd.sock"}, d.sock, nil, "cluster", "status")
		if code != 0 {
			t.Errorf("--socket with a wrong KMD_SOCKET: exit %d, want 0; stderr:\n%s", code, stderr)
		}
	})

	t.Run("kmd usage errors", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "kmde2e")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		data := filepath.Join(dir, "data")
		base := []string{"--data-dir", data, "--socket", filepath.Join(dir, "s.sock"), "--log-file", filepath.Join(dir, "kmd.log")}
		cfg := filepath.Join(dir, "kmd.yaml")
		if err := os.WriteFile(cfg, []byte("node_id: 3\n# a comment\nretry_intervall: 5m\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			what string
			env  []string
			args []string
			want []string // in the output
		}{
			{"unknown flag", nil, []string{"--frob"}, []string{"frob"}},
			{"argument", nil, []string{"extra"}, []string{"extra"}},
			{"config unknown key", nil, []string{"--config", cfg}, []string{"retry_intervall", "line 3"}},
			{"config in env, unknown key", []string{"KMD_CONFIG=" + cfg}, nil, []string{"retry_intervall", "line 3"}},
			{"missing config", nil, []string{"--config", filepath.Join(dir, "none.yaml")}, []string{"none.yaml"}},
			{"negative retry interval", nil, []string{"--retry-interval", "-5m"}, []string{"retry-interval"}},
			{"zero retry interval", nil, []string{"--retry-interval=0s"}, []string{"retry-interval"}},
			{"retry interval without unit", nil, []string{"--retry-interval", "15"}, []string{"retry-interval"}},
			{"retry interval in env", []string{"KMD_RETRY_INTERVAL=-5m"}, nil, []string{"KMD_RETRY_INTERVAL"}},
			{"node id", nil, []string{"--node-id", "zero"}, []string{"node-id"}},
			{"node id in env", []string{"KMD_NODE_ID=-1"}, nil, []string{"KMD_NODE_ID"}},
			{"log format", nil, []string{"--log-format", "yaml"}, []string{"log-format"}},
		} {
			out, code, _ := runKMD(t, tc.env, append(slices.Clone(base), tc.args...)...)
			if code != 2 || strings.Count(out, "kmd: error:") != 1 {
				t.Errorf("kmd with %s: exit %d, want 2 with one kmd: error: line; output:\n%s", tc.what, code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("kmd with %s: output does not name %q:\n%s", tc.what, w, out)
				}
			}
			if _, err := os.Stat(data); err == nil {
				t.Errorf("kmd with %s created its data dir", tc.what)
				os.RemoveAll(data)
			}
		}
	})

	t.Run("second kmd on the same data dir", func(t *testing.T) {
		d := d.in(t)
		sock := filepath.Join(d.root, "second.sock")
		out, code, took := runKMD(t, nil, "--data-dir", d.dataDir, "--socket", sock, "--log-file", filepath.Join(d.root, "second.log"))
		if code != 1 {
			t.Errorf("a second kmd on the same data dir: exit %d, want 1; output:\n%s", code, out)
		}
		if took > 5*time.Second {
			t.Errorf("a second kmd took %v to fail, want under 5s", took)
		}
		if pid := strconv.Itoa(d.pid()); !strings.Contains(out, pid) {
			t.Errorf("a second kmd's error does not name the first's pid %s:\n%s", pid, out)
		}
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("the second kmd left a socket %s", sock)
		}
		// The same socket as the first: still refused, and the first keeps
		// its socket.
		out, code, _ = runKMD(t, nil, "--data-dir", d.dataDir, "--socket", d.sock, "--log-file", filepath.Join(d.root, "second.log"))
		if code != 1 {
			t.Errorf("a second kmd on the same data dir and socket: exit %d, want 1; output:\n%s", code, out)
		}
		if got := d.clusterStatus(); got.Total != 17 {
			t.Errorf("the first kmd stopped answering: %+v", got)
		}
		if v := d.get("S3", "present"); string(v) != "value" {
			t.Errorf("after a second kmd S3 present = %q", v)
		}
	})
}

// TestSecondKMDOnSameSocket starts a second kmd, on another data dir, on
// the socket of a running kmd: it must fail at once and leave the first
// kmd's socket alone.
func TestSecondKMDOnSameSocket(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	other := filepath.Join(d.root, "other-data")
	out, code, _, exited := runKMDFor(t, 10*time.Second, nil, "--data-dir", other, "--socket", d.sock,
		"--log-file", filepath.Join(d.root, "other.log"), "--node-id", "7")
	if !exited || code != 1 {
		t.Errorf("a second kmd on the socket of a running kmd: exited by itself %v, status %d; want it to fail at once with status 1; output:\n%s", exited, code, out)
	}
	if _, stderr, code := d.kmctl("sed", "status", "-o", "json"); code != 0 {
		t.Fatalf("the first kmd is unreachable on its socket after the second one ran:\n%s", stderr)
	}
	if n := d.sedStatus().Nodes[0]; n.Node != 1 {
		t.Errorf("the socket answers for node %d, want the first kmd's node 1", n.Node)
	}
}
