package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kmd-project/kmd/api/ui"
)

// FuzzConfigFile fuzzes kmd's YAML config file (kmd --config FILE). It
// proves that loading never panics; that a refused file is a usage error
// (kmd exits 2) with a one-line message naming the file; that a file with a
// key kmd does not know, in any of its YAML documents, is refused; and that
// an accepted file gives valid settings, each one the file's value for its
// key: a positive node id and retry interval, a known log format, usable
// paths.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		"",
		"# nothing but a comment\n",
		"data_dir: /var/lib/kmd\nretry_interval: 15m\nlog_format: json\nevent_hook: /usr/local/bin/hook\n",
		"node_id: 3\nsocket: /run/kmd.sock\nlog_file: '-'\nlog_format: console\n",
		"retry_intervall: 5m\n",
		"retry_interval: 0s\n", "retry_interval: -5m\n", "retry_interval: 15\n", "retry_interval: 1ns\n",
		"node_id: 0\n", "node_id: -1\n", "node_id: +5\n", "node_id: 0x10\n", "node_id: 99999999999999999999\n",
		"log_format: yaml\n", "log_format: JSON\n",
		"data_dir: ''\n", "data_dir: ~\n", "data_dir:\n", "data_dir: \"a\\0b\"\n", "socket: \"\\0\"\n",
		"data_dir: [a, b]\n", "data_dir: {a: b}\n", "data_dir: &a /x\nsocket: *a\n",
		"data_dir: /x\ndata_dir: /y\n",
		"data_dir: /x\n---\nbogus: 1\n",
		"---\n---\n",
		"- data_dir\n", "just a string\n", "42\n", "{", "data_dir: /x\n\tsocket: /y\n",
		"? [a, b]\n: c\n", "1: x\n", "DATA_DIR: /x\n", "data-dir: /x\n",
		"!!binary data_dir: /x\n", "data_dir: !!int 5\n",
		"\xff\xfe", "data_dir: \"\xff\"\n",
		"access:\n  - role: monitor\n    uids: [1001]\n    subjects: [\"CN=prometheus\"]\n",
		"access:\n  - role: service:S3\n    groups: [0]\n", "access:\n  - {role: admin, uids: [x]}\n",
		"access: [{role: monitor}]\n", "access: {}\n", "access: &a [{role: admin, uids: [1]}]\n",
		"access:\n  - role: monitor\n    subjects: [\"CN=\"]\n", "access:\n  - role: monitor\n    uid: [1]\n",
		"socket_group: 0\n", "socket_group: no-such-group-kmd\n", "listen: :8443\n", "listen: 8443\n",
		"tls_cert: /c\ntls_key: /k\ntls_client_ca: /ca\n",
		"ui_listen: 127.0.0.1:8443\n", "ui_listen: '[::1]:8443'\n", "ui_listen: localhost:80\n", "ui_listen: ''\n",
		"ui_listen: 0.0.0.0:8443\n", "ui_listen: 192.168.1.2:8443\n", "ui_listen: 127.0.0.1:0\n", "ui_listen: 127.0.0.1\n",
		"ui_listen: '[::ffff:127.0.0.1]:8443'\n", "ui_listen: 8443\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "kmd.yaml")
	known := map[string]bool{}
	for _, s := range settings {
		known[strings.ReplaceAll(s.flag, "-", "_")] = true
	}
	known[accessKey] = true
	noEnv := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfig([]string{"--config", path}, noEnv, io.Discard)
		if err != nil {
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("refused config is not a usage error (exit 2): %v", err)
			}
			if msg := oneLine(err); !strings.Contains(msg, path) || !strings.HasPrefix(msg, "config file") {
				t.Fatalf("refused config: message %q does not name the config file", msg)
			}
			return
		}

		// Every key of every document is known.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		var first map[string]yaml.Node
		for doc := 0; ; doc++ {
			var m map[string]yaml.Node
			if err := dec.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("accepted config whose document %d does not decode as a mapping: %v", doc+1, err)
			}
			for k := range m {
				if !known[k] {
					t.Fatalf("accepted config with the unknown key %q in document %d", k, doc+1)
				}
			}
			if doc == 0 {
				first = m
			}
		}

		// The settings are valid.
		switch {
		case c.NodeID < 1:
			t.Fatalf("accepted config gives node id %d", c.NodeID)
		case c.RetryInterval <= 0:
			t.Fatalf("accepted config gives retry interval %v", c.RetryInterval)
		case c.LogFormat != "json" && c.LogFormat != "console":
			t.Fatalf("accepted config gives log format %q", c.LogFormat)
		case c.DataDir == "" || c.Socket == "":
			t.Fatalf("accepted config gives data dir %q, socket %q", c.DataDir, c.Socket)
		}
		if c.UIListen != "" {
			if canon, err := ui.CheckListenAddr(c.UIListen); err != nil || canon != c.UIListen {
				t.Fatalf("accepted config gives ui listen address %q (%v), not a canonical loopback one", c.UIListen, err)
			}
		}
		for _, p := range []string{c.DataDir, c.Socket, c.LogFile} {
			if strings.ContainsRune(p, 0) {
				t.Fatalf("accepted config gives a path with a NUL byte: %q", p)
			}
		}

		// And each is the file's value.
		for k, n := range first {
			want := n.Value
			switch k {
			case "data_dir":
				if c.DataDir != want {
					t.Fatalf("data_dir %q gave %q", want, c.DataDir)
				}
			case "socket":
				if want != "" && c.Socket != want {
					t.Fatalf("socket %q gave %q", want, c.Socket)
				}
			case "node_id":
				if n, _ := strconv.Atoi(want); c.NodeID != n {
					t.Fatalf("node_id %q gave %d", want, c.NodeID)
				}
			case "retry_interval":
				if d, _ := time.ParseDuration(want); c.RetryInterval != d {
					t.Fatalf("retry_interval %q gave %v", want, c.RetryInterval)
				}
			case "log_file":
				if c.LogFile != want {
					t.Fatalf("log_file %q gave %q", want, c.LogFile)
				}
			case "log_format":
				if c.LogFormat != want {
					t.Fatalf("log_format %q gave %q", want, c.LogFormat)
				}
			case "ui_listen":
				canon, _ := ui.CheckListenAddr(want)
				if c.UIListen != canon {
					t.Fatalf("ui_listen %q gave %q", want, c.UIListen)
				}
			case "event_hook":
				if c.EventHook != want {
					t.Fatalf("event_hook %q gave %q", want, c.EventHook)
				}
			}
		}
	})
}
