package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// result is one kmctl invocation's outcome.
type result struct {
	code           int
	stdout, stderr string
}

// options of a test invocation.
type runOpts struct {
	stdin          string
	stdinReader    io.Reader // instead of stdin
	stdinTerminal  bool
	stdoutTerminal bool
	ctx            context.Context
	setup          func(*app)
}

// kmctl runs a command line through app.run with the test's hooks.
func kmctl(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	var in io.Reader = strings.NewReader(o.stdin)
	if o.stdinReader != nil {
		in = o.stdinReader
	}
	a := newApp(in, &stdout, &stderr)
	a.getenv = func(string) string { return "" }
	a.stdinTerminal = func() bool { return o.stdinTerminal }
	a.stdoutTerminal = func() bool { return o.stdoutTerminal }
	a.pollInterval = 0
	if o.setup != nil {
		o.setup(a)
	}
	ctx := o.ctx
	if ctx == nil {
		ctx = t.Context()
	}
	code := a.run(ctx, args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// noDaemon is a socket path where nothing listens.
func noDaemon(t *testing.T) string {
	return filepath.Join(t.TempDir(), "absent.sock")
}

// checkUsageError asserts exit 2, nothing on stdout, and on stderr exactly
// one "kmctl: error:" line, first, then a blank line and the usage.
func checkUsageError(t *testing.T, r result, wantReason string) {
	t.Helper()
	if r.code != exitUsage {
		t.Fatalf("exit %d, want 2; stderr:\n%s", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	lines := strings.Split(r.stderr, "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "kmctl: error: ") || lines[1] != "" || !strings.HasPrefix(lines[2], "Usage:") {
		t.Fatalf("stderr is not one error line, a blank line and the usage:\n%s", r.stderr)
	}
	if n := strings.Count(r.stderr, "kmctl: error:"); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, r.stderr)
	}
	if !strings.Contains(lines[0], wantReason) {
		t.Errorf("reason %q does not say %q", lines[0], wantReason)
	}
}

func TestRun_UsageErrors(t *testing.T) {
	sock := noDaemon(t)
	pf := writePEMFixtures(t)
	for _, tc := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"no command", nil, `"kmctl" needs a subcommand`},
		{"unknown command", []string{"nosuch"}, `unknown command "nosuch" for "kmctl"`},
		{"unknown command suggestion", []string{"clster"}, `did you mean "cluster"?`},
		{"unknown subcommand", []string{"cluster", "stat"}, `unknown command "stat" for "kmctl cluster"`},
		{"group without subcommand", []string{"cluster"}, `"kmctl cluster" needs a subcommand: one of keys, migrate, rekey, status`},
		{"nested group without subcommand", []string{"sed", "rekey"}, `"kmctl sed rekey" needs a subcommand: one of cancel, continue, modify, start, view`},
		{"entry without subcommand", []string{"entry"}, `"kmctl entry" needs a subcommand`},
		{"unknown flag", []string{"cluster", "status", "--bogus"}, "unknown flag: --bogus"},
		{"unknown shorthand", []string{"cluster", "status", "-x"}, "unknown shorthand flag: 'x' in -x"},
		{"output yaml", []string{"-o", "yaml", "cluster", "status"}, `invalid argument "yaml" for "-o, --output" flag: want table or json`},
		{"output yaml after", []string{"sed", "status", "--output=yaml"}, "want table or json"},
		{"output without value", []string{"cluster", "status", "-o"}, "flag needs an argument"},
		{"extra argument", []string{"cluster", "status", "extra"}, `unexpected argument "extra"`},
		{"rotation 6X", []string{"cluster", "rekey", "modify", "--key-rotation", "6X"}, `invalid key rotation "6X"`},
		{"rotation 0W", []string{"cluster", "rekey", "modify", "--key-rotation", "0W"}, `invalid key rotation "0W"`},
		{"rotation -1D", []string{"cluster", "rekey", "modify", "--key-rotation=-1D"}, `invalid key rotation "-1D"`},
		{"rotation -1D spaced", []string{"sed", "rekey", "modify", "--key-rotation", "-1D"}, `invalid key rotation "-1D"`},
		{"rotation W", []string{"cluster", "rekey", "modify", "--key-rotation", "W"}, `invalid key rotation "W"`},
		{"rotation 6", []string{"sed", "rekey", "modify", "--key-rotation", "6"}, `invalid key rotation "6"`},
		{"rotation 6w", []string{"cluster", "rekey", "modify", "--key-rotation", "6w"}, "did you mean 6W?"},
		{"rotation empty", []string{"cluster", "rekey", "modify", "--key-rotation", ""}, `invalid key rotation ""`},
		{"rotation empty =", []string{"sed", "rekey", "modify", "--key-rotation="}, `invalid key rotation ""`},
		{"rotation missing", []string{"cluster", "rekey", "modify"}, "missing --key-rotation VALUE"},
		{"rotation missing sed", []string{"sed", "rekey", "modify"}, "missing --key-rotation VALUE"},
		{"rotation without value", []string{"sed", "rekey", "modify", "--key-rotation"}, "flag needs an argument"},
		{"put missing NAME", []string{"entry", "put", "S3"}, "missing argument NAME"},
		{"put missing both", []string{"entry", "put"}, "missing arguments DOMAIN NAME"},
		{"put extra", []string{"entry", "put", "S3", "a", "b"}, `unexpected argument "b"`},
		{"get empty name", []string{"entry", "get", "S3", ""}, "invalid entry name: empty"},
		{"get 256-byte name", []string{"entry", "get", "S3", strings.Repeat("n", 256)}, "256 bytes; want at most 255"},
		{"put control character", []string{"entry", "put", "S3", "a\x01b"}, "non-printable character U+0001"},
		{"delete bad UTF-8", []string{"entry", "delete", "S3", "a\xffb"}, "not valid UTF-8"},
		{"list missing DOMAIN", []string{"entry", "list"}, "missing argument DOMAIN"},
		{"import extra", []string{"entry", "import", "S3", "file"}, `unexpected argument "file"`},
		{"unknown domain", []string{"cluster", "rekey", "start", "--yes", "--domain", "NOPE"},
			`unknown domain "NOPE" for --domain; want one of CELOG, CERTSTORE, CLOUDPOOLS, EMAIL, FTP, IPMI_MGMT, JWT, LHOTSE, NDMP, NETWORK, PSTORE, RICE, S3, SIQ, SNMP, SRS, SSO`},
		{"lower-case domain", []string{"cluster", "rekey", "start", "--domain", "S3", "--domain", "s3"}, "(names are upper case: S3)"},
		{"domain for sed", []string{"sed", "rekey", "start", "--domain", "S3"}, "unknown flag: --domain"},
		{"since yesterday", []string{"events", "list", "--since", "yesterday"}, `invalid --since "yesterday"`},
		{"since date only", []string{"events", "list", "--since=2026-11-22"}, "want an RFC 3339 time"},
		{"version extra", []string{"version", "now"}, `unexpected argument "now"`},
		{"completion missing shell", []string{"completion"}, "want exactly one shell"},
		{"completion powershell", []string{"completion", "powershell"}, `unsupported shell "powershell"`},
		{"help unknown topic", []string{"help", "nosuch"}, `unknown help topic "nosuch"`},

		// kmip server
		{"kmip without subcommand", []string{"kmip"}, `"kmctl kmip" needs a subcommand: one of server`},
		{"kmip server without subcommand", []string{"kmip", "server"},
			`"kmctl kmip server" needs a subcommand: one of create, delete, list, verify, view`},
		{"kmip unknown subcommand", []string{"kmip", "servers"}, `did you mean "server"?`},
		{"kmip server unknown subcommand", []string{"kmip", "server", "remove"}, `unknown command "remove" for "kmctl kmip server"`},
		{"create missing NAME", []string{"kmip", "server", "create"}, "missing argument NAME"},
		{"create extra argument", append(pf.createArgs(), "extra"), `unexpected argument "extra"`},
		{"create missing every flag", []string{"kmip", "server", "create", "kmip1"},
			"missing --host H, --ca-cert-path FILE, --client-cert-path FILE, --client-key-path FILE"},
		{"create missing key", []string{"kmip", "server", "create", "kmip1", "--host", "h", "--ca-cert-path", pf.ca,
			"--client-cert-path", pf.cert}, "missing --client-key-path FILE"},
		{"create empty host", pf.createArgs("--host", ""), "missing --host H"},
		{"create name bad character", append([]string{"kmip", "server", "create", "kmip 1"}, pf.createArgs()[4:]...),
			`invalid KMIP server name "kmip 1": want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"create name 65 characters", append([]string{"kmip", "server", "create", strings.Repeat("k", 65)}, pf.createArgs()[4:]...),
			"want 1-64 letters"},
		{"create name starting with a dot", append([]string{"kmip", "server", "create", ".kmip"}, pf.createArgs()[4:]...),
			"starting with a letter or digit"},
		{"create name Local", append([]string{"kmip", "server", "create", "Local"}, pf.createArgs()[4:]...),
			`invalid KMIP server name "Local": Local is the location of local keys; choose another name`},
		{"create name local", append([]string{"kmip", "server", "create", "local"}, pf.createArgs()[4:]...),
			"Local is the location of local keys"},
		{"create host with port", pf.createArgs("--host", "kmip.example.com:5696"), `invalid --host "kmip.example.com:5696": want a host name or IP address alone (the port goes in --port)`},
		{"create host with space", pf.createArgs("--host", "kmip example"), `invalid --host "kmip example"`},
		{"create host URL", pf.createArgs("--host", "https://kmip"), `invalid --host "https://kmip"`},
		{"create host bracketed", pf.createArgs("--host", "[::1]"), `invalid --host "[::1]"`},
		{"create port 0", pf.createArgs("--port", "0"), "invalid --port 0: want 1-65535"},
		{"create port 65536", pf.createArgs("--port", "65536"), "invalid --port 65536: want 1-65535"},
		{"create port -1", pf.createArgs("--port=-1"), "invalid --port -1: want 1-65535"},
		{"create port not a number", pf.createArgs("--port", "kmip"), `invalid argument "kmip" for "--port" flag`},
		{"create TLS 1.1", pf.createArgs("--minimum-tls-version", "1.1"), `invalid --minimum-tls-version "1.1": want 1.2 or 1.3`},
		{"create TLS name", pf.createArgs("--minimum-tls-version", "TLS1.3"), `invalid --minimum-tls-version "TLS1.3": want 1.2 or 1.3`},
		{"create timeout without unit", pf.createArgs("--connection-timeout", "10"),
			`invalid --connection-timeout "10": want a positive duration such as 10s, 1m or 1m30s`},
		{"create timeout 0s", pf.createArgs("--connection-timeout", "0s"), `invalid --connection-timeout "0s"`},
		{"create timeout negative", pf.createArgs("--connection-timeout=-5s"), `invalid --connection-timeout "-5s"`},
		{"create timeout words", pf.createArgs("--connection-timeout", "ten seconds"), `invalid --connection-timeout "ten seconds"`},
		{"create CA missing", pf.createArgs("--ca-cert-path", pf.missing), `--ca-cert-path "` + pf.missing + `" does not exist`},
		{"create cert is a directory", pf.createArgs("--client-cert-path", pf.subdir),
			`--client-cert-path "` + pf.subdir + `" is a directory; want a PEM file`},
		{"create CA over 1 MiB", pf.createArgs("--ca-cert-path", pf.big), `--ca-cert-path "` + pf.big + `" is over 1 MiB`},
		{"create key empty", pf.createArgs("--client-key-path", pf.empty), `--client-key-path "` + pf.empty + `" is empty; want a PEM file`},
		{"create CA not PEM", pf.createArgs("--ca-cert-path", pf.notPEM),
			`--ca-cert-path "` + pf.notPEM + `" is not PEM; want a PEM file of CERTIFICATE blocks`},
		{"create key not PEM", pf.createArgs("--client-key-path", pf.notPEM),
			`--client-key-path "` + pf.notPEM + `" is not PEM; want an unencrypted private key`},
		{"create cert is a key", pf.createArgs("--client-cert-path", pf.key),
			`--client-cert-path "` + pf.key + `" holds a private key; want certificates only (the key goes in --client-key-path)`},
		{"create cert with its key", pf.createArgs("--client-cert-path", pf.certAndKey), "holds a private key; want certificates only"},
		{"create CA with a CRL", pf.createArgs("--ca-cert-path", pf.caAndCRL),
			`--ca-cert-path "` + pf.caAndCRL + `" holds a X509 CRL block, not only certificates; want a PEM file of CERTIFICATE blocks`},
		{"create CA is a public key", pf.createArgs("--ca-cert-path", pf.pubKey), "holds a PUBLIC KEY block, not only certificates"},
		{"create key is a certificate", pf.createArgs("--client-key-path", pf.cert),
			`--client-key-path "` + pf.cert + `" holds a CERTIFICATE block, not a private key; want a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block`},
		{"create key is a CA bundle", pf.createArgs("--client-key-path", pf.caAndCRL), "holds CERTIFICATE, X509 CRL blocks, not a private key"},
		{"create key encrypted", pf.createArgs("--client-key-path", pf.encKey),
			`--client-key-path "` + pf.encKey + `" holds an encrypted private key; want it unencrypted`},
		{"create key encrypted the old way", pf.createArgs("--client-key-path", pf.legacyEncKey), "holds an encrypted private key"},
		{"list extra argument", []string{"kmip", "server", "list", "kmip1"}, `unexpected argument "kmip1"`},
		{"view missing NAME", []string{"kmip", "server", "view"}, "missing argument NAME"},
		{"view extra argument", []string{"kmip", "server", "view", "a", "b"}, `unexpected argument "b"`},
		{"view empty name", []string{"kmip", "server", "view", ""}, `invalid KMIP server name ""`},
		{"view Local", []string{"kmip", "server", "view", "Local"}, `invalid KMIP server name "Local"`},
		{"delete missing NAME", []string{"kmip", "server", "delete"}, "missing argument NAME"},
		{"delete dot", []string{"kmip", "server", "delete", "."}, `invalid KMIP server name "."`},
		{"verify dash", []string{"kmip", "server", "verify", "-"}, `invalid KMIP server name "-"`},
		{"verify two names", []string{"kmip", "server", "verify", "a", "b"}, `unexpected argument "b": "kmctl kmip server verify" takes at most NAME`},

		// migrate
		{"sed migrate neither", []string{"sed", "migrate", "--yes"}, "want exactly one of --to-server NAME or --to-local"},
		{"sed migrate both", []string{"sed", "migrate", "--to-server", "kmip1", "--to-local"}, "want exactly one of --to-server NAME or --to-local"},
		{"cluster migrate neither", []string{"cluster", "migrate", "--domain", "S3", "--wait"}, "want exactly one of --to-server NAME or --to-local"},
		{"cluster migrate both", []string{"cluster", "migrate", "--to-local", "--to-server=kmip1", "--yes"}, "want exactly one of --to-server NAME or --to-local"},
		{"migrate to-local=false", []string{"cluster", "migrate", "--to-local=false"}, "want exactly one of --to-server NAME or --to-local"},
		{"migrate to-server empty", []string{"cluster", "migrate", "--to-server", ""}, `invalid --to-server ""`},
		{"migrate to-server bad name", []string{"sed", "migrate", "--to-server", "kmip/1"}, `invalid --to-server "kmip/1": want 1-64 letters`},
		{"migrate to-server Local", []string{"sed", "migrate", "--to-server", "Local"}, `invalid --to-server "Local": Local is the location of local keys`},
		{"migrate to-server without value", []string{"sed", "migrate", "--to-server"}, "flag needs an argument"},
		{"migrate unknown domain", []string{"cluster", "migrate", "--to-local", "--domain", "NOPE"}, `unknown domain "NOPE" for --domain`},
		{"migrate lower-case domain", []string{"cluster", "migrate", "--to-server", "kmip1", "--domain", "sso"}, "(names are upper case: SSO)"},
		{"sed migrate domain", []string{"sed", "migrate", "--to-local", "--domain", "S3"}, "unknown flag: --domain"},
		{"migrate extra argument", []string{"cluster", "migrate", "kmip1"}, `unexpected argument "kmip1"`},
		{"migrate to-local with value", []string{"sed", "migrate", "--to-local=maybe"}, `invalid argument "maybe" for "--to-local" flag`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--socket", sock}, tc.args...)
			checkUsageError(t, kmctl(t, runOpts{stdin: "value"}, args...), tc.reason)
		})
	}
}

func TestRun_UsageShowsTheFailingCommand(t *testing.T) {
	r := kmctl(t, runOpts{}, "cluster", "rekey", "modify", "--key-rotation", "6X")
	if !strings.Contains(r.stderr, "\n\nUsage:\n  kmctl cluster rekey modify --key-rotation VALUE [flags]\n") {
		t.Errorf("usage of the wrong command:\n%s", r.stderr)
	}
	r = kmctl(t, runOpts{}, "cluster")
	if strings.Contains(r.stderr, "kmctl cluster [flags]") || !strings.Contains(r.stderr, "kmctl cluster [command]") {
		t.Errorf("group usage should offer only subcommands:\n%s", r.stderr)
	}
}

func TestRun_Unreachable(t *testing.T) {
	sock := noDaemon(t)
	pf := writePEMFixtures(t)
	for _, args := range [][]string{
		{"cluster", "status"},
		{"sed", "status", "-o", "json"},
		{"cluster", "rekey", "view"},
		{"sed", "rekey", "view"},
		{"cluster", "rekey", "modify", "--key-rotation", "6W"},
		{"sed", "rekey", "modify", "--key-rotation", "Never"},
		{"cluster", "rekey", "start", "--yes", "--domain", "S3"},
		{"sed", "rekey", "start", "--yes", "--wait"},
		{"entry", "put", "S3", "name"},
		{"entry", "get", "S3", "name"},
		{"entry", "delete", "S3", "name"},
		{"entry", "list", "S3"},
		{"entry", "import", "S3"},
		{"entry", "export", "S3"},
		{"events", "list"},
		{"events", "list", "--since", "2026-11-22T09:00:00+01:00"},
		{"kmip", "server", "list"},
		{"kmip", "server", "view", "kmip1"},
		{"kmip", "server", "delete", "kmip1"},
		{"kmip", "server", "verify"},
		{"kmip", "server", "verify", "kmip1", "-o", "json"},
		pf.createArgs(),
		{"cluster", "migrate", "--to-server", "kmip1", "--domain", "S3", "--yes"},
		{"sed", "migrate", "--to-local", "--yes", "--wait"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := kmctl(t, runOpts{stdin: "value"}, append(args, "--socket", sock)...)
			want := "kmctl: error: cannot reach kmd at " + sock + ": "
			if r.code != exitFail || !strings.HasPrefix(r.stderr, want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", r.code, r.stderr, want)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[1], "hint: ") || !strings.Contains(lines[1], "KMD_SOCKET") {
				t.Errorf("want the error and one hint line:\n%s", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
}

func TestRun_SocketFromEnvironment(t *testing.T) {
	sock := noDaemon(t)
	r := kmctl(t, runOpts{setup: func(a *app) {
		a.getenv = func(k string) string {
			if k == "KMD_SOCKET" {
				return sock
			}
			return ""
		}
	}}, "cluster", "status")
	if r.code != exitFail || !strings.Contains(r.stderr, "cannot reach kmd at "+sock+":") {
		t.Errorf("KMD_SOCKET ignored: exit %d\n%s", r.code, r.stderr)
	}
	r = kmctl(t, runOpts{}, "cluster", "status")
	if !strings.Contains(r.stderr, "cannot reach kmd at "+defaultSocket+":") {
		t.Errorf("default socket not used:\n%s", r.stderr)
	}
}

func TestRun_VersionUnreachable(t *testing.T) {
	r := kmctl(t, runOpts{}, "version", "--socket", noDaemon(t))
	if r.code != exitFail || r.stdout != "kmctl dev\n" || !strings.HasPrefix(r.stderr, "kmctl: error: cannot reach kmd") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = kmctl(t, runOpts{}, "version", "-o", "json", "--socket", noDaemon(t))
	if r.code != exitFail || r.stdout != "{\n  \"kmctl\": \"dev\"\n}\n" {
		t.Errorf("json: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestRun_Help(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "cluster", "rekey", "start"}, {"cluster", "rekey", "start", "--help"},
		{"help", "kmip"}, {"kmip", "server", "--help"}, {"help", "kmip", "server", "create"}, {"kmip", "server", "verify", "-h"},
		{"help", "sed", "migrate"}, {"cluster", "migrate", "--help"}} {
		r := kmctl(t, runOpts{}, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Usage:") || r.stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	r := kmctl(t, runOpts{}, "--help")
	for _, want := range []string{"KMD_SOCKET", "0  success", "1  the operation failed", "2  usage error"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("root help does not say %q", want)
		}
	}
}

func TestRun_EntryPutTooLarge(t *testing.T) {
	sock := noDaemon(t)
	r := kmctl(t, runOpts{stdin: strings.Repeat("v", 64<<10+1)}, "entry", "put", "S3", "big", "--socket", sock)
	want := "kmctl: error: value is 65537 bytes or more; entries hold at most 65536 bytes (64 KiB)\n"
	if r.code != exitFail || r.stderr != want || r.stdout != "" {
		t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
	// Exactly 64 KiB is sent: here, to a daemon that is not there.
	r = kmctl(t, runOpts{stdin: strings.Repeat("v", 64<<10)}, "entry", "put", "S3", "big", "--socket", sock)
	if r.code != exitFail || !strings.Contains(r.stderr, "cannot reach kmd") {
		t.Errorf("64 KiB: exit %d, stderr %q; want it sent", r.code, r.stderr)
	}
}

func TestRun_RekeyStartWithoutTerminal(t *testing.T) {
	for _, scope := range []string{"cluster", "sed"} {
		r := kmctl(t, runOpts{stdin: "yes\n"}, scope, "rekey", "start", "--wait", "--socket", noDaemon(t))
		want := "kmctl: error: refusing to rekey without confirmation: stdin is not a terminal\nhint: pass --yes to confirm non-interactively\n"
		if r.code != exitFail || r.stderr != want || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", scope, r.code, r.stdout, r.stderr, want)
		}
	}
}

func TestRun_RekeyStartCancelled(t *testing.T) {
	for _, answer := range []string{"no\n", "", "\n", "y\n", "YES\n", "yes please\n", " yes\n", "yess"} {
		for _, scope := range []string{"cluster", "sed"} {
			// The socket leads nowhere: contacting kmd would fail with 1.
			r := kmctl(t, runOpts{stdin: answer, stdinTerminal: true}, scope, "rekey", "start", "--socket", noDaemon(t))
			if r.code != exitOK || !strings.HasPrefix(r.stdout, confirmPrompt) || !strings.HasSuffix(r.stdout, "Rekey cancelled.\n") || r.stderr != "" {
				t.Errorf("%s, answer %q: exit %d, stdout %q, stderr %q; want 0 and Rekey cancelled.", scope, answer, r.code, r.stdout, r.stderr)
			}
		}
	}
	r := kmctl(t, runOpts{stdin: "no\n", stdinTerminal: true}, "cluster", "rekey", "start", "--socket", noDaemon(t))
	if want := "Are you sure you want to rekey the master passphrase? (yes/[no]): Rekey cancelled.\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}

func TestRun_RekeyStartConfirmedContactsKmd(t *testing.T) {
	for _, answer := range []string{"yes\n", "yes\r\n", "yes"} {
		r := kmctl(t, runOpts{stdin: answer, stdinTerminal: true}, "cluster", "rekey", "start", "--socket", noDaemon(t))
		if r.code != exitFail || !strings.Contains(r.stderr, "cannot reach kmd") {
			t.Errorf("answer %q: exit %d, stderr %q; want the rekey asked of kmd", answer, r.code, r.stderr)
		}
	}
}

func TestRun_Completion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := kmctl(t, runOpts{}, "completion", shell)
		if r.code != exitOK || len(r.stdout) < 100 || !strings.Contains(r.stdout, "kmctl") || r.stderr != "" {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", shell, r.code, len(r.stdout), r.stderr)
		}
	}
}

func TestRun_DynamicCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "cluster", "rekey", "start", "--domain", ""}, []string{"CELOG", "S3", "SSO"}},
		{[]string{"__complete", "entry", "get", ""}, []string{"S3", "SED"}},
		{[]string{"__complete", "-o", ""}, []string{"table", "json"}},
		{[]string{"__complete", "completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"__complete", "help", "cluster", ""}, []string{"rekey", "status"}},
		{[]string{"__complete", "cl"}, []string{"cluster"}},
	} {
		r := kmctl(t, runOpts{}, tc.args...)
		for _, w := range tc.want {
			if r.code != exitOK || !strings.Contains(r.stdout, w) {
				t.Errorf("%v: exit %d, stdout %q; want %s offered", tc.args, r.code, r.stdout, w)
			}
		}
	}
}

func TestMain_RunWrapper(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"completion", "fish"}, io.MultiReader(), &out, &errb); code != exitOK || out.Len() == 0 {
		t.Errorf("run: exit %d, %d bytes, stderr %q", code, out.Len(), errb.String())
	}
}

func TestIsUsage(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errors.New(`unknown command "x" for "kmctl"` + "\n\nDid you mean this?\n\tcluster\n"), true},
		{usagef("bad"), true},
		{fmt.Errorf("wrapped: %w", usagef("bad")), true},
		{userInput(fmt.Errorf("x: %w", errors.New("plain"))), false},
		{errors.New("rekey already in progress for S3"), false},
	} {
		if got := isUsage(tc.err); got != tc.want {
			t.Errorf("isUsage(%q) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if got := oneLine("unknown command \"x\" for \"kmctl\"\n\nDid you mean this?\n\tcluster\n"); got != `unknown command "x" for "kmctl"; Did you mean this?; cluster` {
		t.Errorf("oneLine: %q", got)
	}
}

// Ctrl-C while kmctl waits for a line on a terminal ends it at once.
func TestRun_InterruptedWhileReadingStdin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantStdout string
	}{
		{"confirmation", []string{"cluster", "rekey", "start"}, confirmPrompt + "\n"},
		{"entry put", []string{"entry", "put", "S3", "name"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe() // a terminal nobody types on
			defer pw.Close()
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(20*time.Millisecond, cancel)
			r := kmctl(t, runOpts{ctx: ctx, stdinReader: pr, stdinTerminal: true}, append(tc.args, "--socket", noDaemon(t))...)
			if r.code != exitFail || !strings.HasSuffix(r.stderr, "kmctl: error: interrupted\n") || r.stdout != tc.wantStdout {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1 and interrupted", r.code, r.stdout, r.stderr)
			}
		})
	}
}
