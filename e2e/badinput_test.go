package e2e_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// badRow is one bad input and what kmd or kmctl must answer. Exactly one
// of args (a kmctl command line; "{certs}" stands for the directory of the
// test's certificate files), config (a kmd config file's content) or req
// (a raw API request over the socket) is set.
type badRow struct {
	what   string // what is wrong with the input
	args   []string
	stdin  []byte
	config string
	req    *rawRequest

	exit   int    // kmctl's or kmd's exit status
	status int    // the API's HTTP status
	code   string // the API's error code; "" for net/http's own plain-text refusal
	says   string // in the one error line (or the API's message)
}

type rawRequest struct {
	method, path string
	header       map[string]string
	body         []byte
}

// TestBadInput feeds kmd and kmctl one bad input after another — kmctl
// flags and values, raw API requests, kmd config files and KMIP
// certificate files — on one running kmd with entries in S3 and a rotation
// schedule. It proves, for each, that the answer is the expected exit
// status (2 usage, 1 refusal) or HTTP status and code, that the complaint
// is ONE line naming what is wrong, and that nothing changed: both status
// tables (key ids, states, locations, entry counts), both schedules, the
// KMIP servers, every entry of S3 byte for byte, and every file of the data
// dir (name, size and mtime; directories by name).
//
// Left out of the comparison: the sizes and mtimes of SQLite's -wal and
// -shm files (their names stay in). The -shm file is the WAL index, which
// readers write to; the -wal file is SQLite's write-ahead journal, and a
// refused conditional write (If-None-Match: * on an existing entry is an
// INSERT … ON CONFLICT DO NOTHING) appends a frame to it that changes no
// row. What the stores hold is compared instead through status (entry
// counts, key ids) and S3's export, and the .db files' sizes and mtimes
// stay in. kmd's log lives outside the data dir and legitimately records
// refusals; events.jsonl stays in (a refusal raises no event). audit.log
// legitimately records refusals too: its name stays in, and instead of
// its size and mtime its records whose outcome is ok are compared, so a
// refusal may add refused records but no record of something done.
//
// Overlap with TestUsageErrors: it covers kmctl's argument-count and
// rotation-value errors broadly (35 command lines plus 14 rotation values
// in both scopes) and checks key ids, schedules and S3 after them all;
// this table keeps only a few of those (bad rotation, bad domain, bad -o)
// as representatives, and adds per-input snapshots, the API, config files
// and certificate files. TestUsageErrors' kmd flag checks (unknown key,
// bad retry interval, bad node id, bad log format via flags and env) are
// here as config-file rows run against the running kmd's own data dir.
func TestBadInput(t *testing.T) {
	t.Parallel()
	d := startKMD(t)
	seed := genEntries("bad/", 20)
	seed["exists"] = []byte("present value")
	d.importEntries("S3", seed)
	d.must("cluster", "rekey", "modify", "--key-rotation", "6W")
	certs := writeBadCerts(t, d.root)
	closed := strconv.Itoa(closedTCPPort(t))
	bigValue := bytes.Repeat([]byte("v"), 64<<10+1)

	rows := []badRow{
		// kmctl flags and values.
		{what: "rotation with a lower-case unit", args: []string{"cluster", "rekey", "modify", "--key-rotation", "6w"}, exit: 2, says: `"6w"`},
		{what: "rotation of zero", args: []string{"sed", "rekey", "modify", "--key-rotation", "0W"}, exit: 2, says: `"0W"`},
		{what: "rotation too long", args: []string{"cluster", "rekey", "modify", "--key-rotation", "1001Y"}, exit: 2, says: "1001Y"},
		{what: "modify without --key-rotation", args: []string{"sed", "rekey", "modify"}, exit: 2, says: "missing --key-rotation"},
		{what: "unknown domain", args: []string{"cluster", "rekey", "start", "--domain", "S4", "--yes"}, exit: 2, says: `unknown domain "S4"`},
		{what: "lower-case domain", args: []string{"cluster", "rekey", "start", "--domain", "sso", "--yes"}, exit: 2, says: "upper case: SSO"},
		{what: "rekey start without --yes and no terminal", args: []string{"cluster", "rekey", "start", "--domain", "S3"}, exit: 1, says: "without confirmation"},
		{what: "sed rekey start without --yes", args: []string{"sed", "rekey", "start"}, exit: 1, says: "without confirmation"},
		{what: "migrate without --yes", args: []string{"cluster", "migrate", "--to-local", "--domain", "S3"}, exit: 1, says: "without confirmation"},
		{what: "bad -o", args: []string{"kmip", "server", "list", "-o", "xml"}, exit: 2, says: "xml"},
		{what: "--to-server and --to-local together", args: []string{"sed", "migrate", "--to-server", "k1", "--to-local", "--yes"}, exit: 2, says: "exactly one of --to-server NAME or --to-local"},
		{what: "migrate without a target", args: []string{"cluster", "migrate", "--yes"}, exit: 2, says: "exactly one of --to-server NAME or --to-local"},
		{what: "--to-server Local", args: []string{"cluster", "migrate", "--to-server", "Local", "--yes"}, exit: 2, says: "location of local keys"},
		{what: "--to-server an unknown server", args: []string{"cluster", "migrate", "--to-server", "nosuch", "--yes"}, exit: 1, says: "nosuch"},
		{what: "--domain on sed migrate", args: []string{"sed", "migrate", "--to-local", "--domain", "S3", "--yes"}, exit: 2, says: "--domain"},
		{what: "--stage-period Never", args: []string{"cluster", "rekey", "start", "--stage-period", "Never", "--yes"}, exit: 2, says: "Never is not allowed"},
		{what: "migrate to local where keys already are", args: []string{"cluster", "migrate", "--to-local", "--domain", "S3", "--yes"}, exit: 1, says: "already at Local"},
		{what: "value over 64 KiB", args: []string{"entry", "put", "S3", "exists"}, stdin: bigValue, exit: 1, says: "64 KiB"},
		{what: "import with a bad second line", args: []string{"entry", "import", "S3"},
			stdin: []byte(`{"name":"new1","value":"AA=="}` + "\n" + `{"name":"new2","value":"not base64!"}` + "\n"), exit: 1, says: "line 2"},
		{what: "import with a name twice", args: []string{"entry", "import", "S3"},
			stdin: []byte(`{"name":"exists","value":"AA=="}` + "\n" + `{"name":"exists","value":"AQ=="}` + "\n"), exit: 1, says: "line 2: name \"exists\" is already on an earlier line"},
		{what: "events --since not a time", args: []string{"events", "list", "--since", "yesterday"}, exit: 2, says: "yesterday"},
		{what: "view an unknown KMIP server", args: []string{"kmip", "server", "view", "nosuch"}, exit: 1, says: "nosuch"},
		{what: "delete an unknown KMIP server", args: []string{"kmip", "server", "delete", "nosuch"}, exit: 1, says: "nosuch"},
		{what: "KMIP server name with a slash", args: []string{"kmip", "server", "view", "a/b"}, exit: 2, says: `"a/b"`},
		{what: "entry of an unknown domain", args: []string{"entry", "put", "NOPE", "x"}, stdin: []byte("v"), exit: 1, says: "NOPE"},

		// kmip server create: flags and certificate files.
		{what: "create without --host", args: kmipCreate("k1", "", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "missing --host H"},
		{what: "create with host:port in --host", args: kmipCreate("k1", "127.0.0.1:5696", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "the port goes in --port"},
		{what: "create with --port 0", args: kmipCreate("k1", "127.0.0.1", "0", "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "invalid --port 0"},
		{what: "create with TLS 1.1", args: append(kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), "--minimum-tls-version", "1.1"), exit: 2, says: "1.2 or 1.3"},
		{what: "create with a bad timeout", args: append(kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), "--connection-timeout", "10"), exit: 2, says: "--connection-timeout"},
		{what: "create named Local", args: kmipCreate("Local", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "Local"},
		{what: "CA file missing", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/none.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "does not exist"},
		{what: "CA file is a directory", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "is a directory"},
		{what: "CA file is a dangling symlink", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/dangling.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "does not exist"},
		{what: "CA path through a file", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem/x", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "cannot be read"},
		{what: "CA file is empty", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/empty.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "is empty"},
		{what: "CA file is not PEM", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/notpem.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "is not PEM"},
		{what: "CA file is a key", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/client.key", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "holds a private key"},
		{what: "CA file's certificate does not parse", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/garbage.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "certs/garbage.pem holds a CERTIFICATE block that does not parse as X.509"},
		{what: "CA certificate expired", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca-expired.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 2, says: "certs/ca-expired.pem (CN=expired CA) expired at"},
		{what: "client certificate expired", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/expired.pem", "{certs}/expired.key"), exit: 2, says: "certs/expired.pem (CN=kmd expired) expired at"},
		{what: "client certificate not yet valid", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/future.pem", "{certs}/future.key"), exit: 2, says: "certs/future.pem (CN=kmd future) is not valid before"},
		{what: "client certificate for servers only", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/serveronly.pem", "{certs}/serveronly.key"), exit: 2, says: "certs/serveronly.pem (CN=kmd serveronly) is not for client authentication"},
		{what: "key of another certificate", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/other.key"), exit: 2, says: "certs/other.key does not match client certificate"},
		{what: "client key encrypted", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/encrypted.key"), exit: 2, says: "encrypted"},
		{what: "client key file is a certificate", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.pem"), exit: 2, says: "not a private key"},
		{what: "client certificate file is a key", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.key", "{certs}/client.key"), exit: 2, says: "holds a private key"},
		{what: "good files, nobody listening", args: kmipCreate("k1", "127.0.0.1", closed, "{certs}/ca.pem", "{certs}/client.pem", "{certs}/client.key"), exit: 1, says: "k1"},

		// Raw API requests over the socket.
		{what: "If-Match not quoted", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/exists", header: map[string]string{"If-Match": "1"}, body: []byte("v")}, status: 400, code: "bad_request", says: "If-Match"},
		{what: "If-Match with a leading zero", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/exists", header: map[string]string{"If-Match": `"01"`}, body: []byte("v")}, status: 400, code: "bad_request", says: "If-Match"},
		{what: "If-Match of another version", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/exists", header: map[string]string{"If-Match": `"99"`}, body: []byte("v")}, status: 412, code: "version"},
		{what: "If-None-Match on an existing entry", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/exists", header: map[string]string{"If-None-Match": "*"}, body: []byte("v")}, status: 412, code: "version"},
		{what: "If-None-Match not *", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/new", header: map[string]string{"If-None-Match": `"1"`}, body: []byte("v")}, status: 400, code: "bad_request", says: "If-None-Match"},
		{what: "If-Match and If-None-Match together", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/new", header: map[string]string{"If-Match": `"1"`, "If-None-Match": "*"}, body: []byte("v")}, status: 400, code: "bad_request", says: "send one"},
		{what: "DELETE with If-Match of another version", req: &rawRequest{method: "DELETE", path: "/v1/domains/S3/entries/exists", header: map[string]string{"If-Match": `"7"`}}, status: 412, code: "version"},
		{what: "value over 64 KiB", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/exists", body: bigValue}, status: 413, code: "too_large", says: "64 KiB"},
		{what: "name of 256 bytes", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/" + strings.Repeat("n", 256), body: []byte("v")}, status: 400, code: "invalid_name", says: "256 bytes"},
		{what: "name with a NUL", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/a%00b", body: []byte("v")}, status: 400, code: "invalid_name", says: "non-printable"},
		{what: "name not UTF-8", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/%FF%FE", body: []byte("v")}, status: 400, code: "invalid_name", says: "UTF-8"},
		{what: "empty name", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/", body: []byte("v")}, status: 400, code: "invalid_name", says: "empty"},
		// net/http refuses a request line it cannot parse before kmd sees
		// it, in plain text: the one API answer that is not JSON.
		{what: "bad %-escape in the name", req: &rawRequest{method: "PUT", path: "/v1/domains/S3/entries/a%zzb", body: []byte("v")}, status: 400, says: "400 Bad Request"},
		{what: "unknown domain", req: &rawRequest{method: "PUT", path: "/v1/domains/NOPE/entries/x", body: []byte("v")}, status: 404, code: "unknown_domain", says: "NOPE"},
		{what: "lower-case domain", req: &rawRequest{method: "GET", path: "/v1/domains/s3/entries/exists"}, status: 404, code: "unknown_domain", says: "s3"},
		{what: "POST to an entry", req: &rawRequest{method: "POST", path: "/v1/domains/S3/entries/exists", body: []byte("v")}, status: 404, code: "no_endpoint", says: "POST"},
		{what: "DELETE of the status", req: &rawRequest{method: "DELETE", path: "/v1/status/cluster"}, status: 404, code: "no_endpoint", says: "DELETE"},
		{what: "unknown path", req: &rawRequest{method: "GET", path: "/v1/keys"}, status: 404, code: "no_endpoint", says: "/v1/keys"},
		{what: "list limit 0", req: &rawRequest{method: "GET", path: "/v1/domains/S3/entries?limit=0"}, status: 400, code: "bad_request", says: "limit"},
		{what: "events since not a time", req: &rawRequest{method: "GET", path: "/v1/events?since=today"}, status: 400, code: "bad_request", says: "today"},
		{what: "status of an unknown scope", req: &rawRequest{method: "GET", path: "/v1/status/nodes"}, status: 404, code: "unknown_domain", says: "nodes"},
		{what: "rekey start: malformed JSON", req: &rawRequest{method: "POST", path: "/v1/rekey/cluster", body: []byte(`{"domains":[`)}, status: 400, code: "bad_request", says: "want"},
		{what: "rekey start: unknown field", req: &rawRequest{method: "POST", path: "/v1/rekey/cluster", body: []byte(`{"domain":["S3"]}`)}, status: 400, code: "bad_request", says: `"domain"`},
		{what: "rekey start: wrong type", req: &rawRequest{method: "POST", path: "/v1/rekey/cluster", body: []byte(`{"domains":"S3"}`)}, status: 400, code: "bad_request", says: "want"},
		{what: "rekey start: data after the JSON", req: &rawRequest{method: "POST", path: "/v1/rekey/cluster", body: []byte(`{"domains":["S3"]} {}`)}, status: 400, code: "bad_request", says: "after the JSON"},
		{what: "rekey start: unknown domain", req: &rawRequest{method: "POST", path: "/v1/rekey/cluster", body: []byte(`{"domains":["S3","NOPE"]}`)}, status: 404, code: "unknown_domain", says: "NOPE"},
		{what: "rekey start: cluster domain in the sed scope", req: &rawRequest{method: "POST", path: "/v1/rekey/sed", body: []byte(`{"domains":["S3"]}`)}, status: 404, code: "unknown_domain", says: "S3"},
		{what: "modify: bad rotation", req: &rawRequest{method: "PUT", path: "/v1/rekey/cluster", body: []byte(`{"key_rotation":"6X"}`)}, status: 400, code: "invalid_value", says: "6X"},
		{what: "modify: rotation as a number", req: &rawRequest{method: "PUT", path: "/v1/rekey/sed", body: []byte(`{"key_rotation":6}`)}, status: 400, code: "bad_request", says: "key_rotation"},
		{what: "modify: body over 1 MiB", req: &rawRequest{method: "PUT", path: "/v1/rekey/cluster", body: append(append([]byte(`{"key_rotation":"`), bytes.Repeat([]byte("6"), 1<<20)...), `W"}`...)}, status: 400, code: "bad_request", says: "over 1048576 bytes (1 MiB)"},
		{what: "modify: empty body", req: &rawRequest{method: "PUT", path: "/v1/rekey/cluster"}, status: 400, code: "bad_request", says: "want"},
		{what: "KMIP create: no host", req: &rawRequest{method: "POST", path: "/v1/kmip/servers/", body: []byte(`{"name":"k1"}`)}, status: 400, code: "bad_request", says: "missing host"},
		{what: "KMIP create: port out of range", req: &rawRequest{method: "POST", path: "/v1/kmip/servers/", body: []byte(`{"name":"k1","host":"h","port":70000}`)}, status: 400, code: "bad_request", says: "70000"},
		{what: "KMIP create: name with a path", req: &rawRequest{method: "POST", path: "/v1/kmip/servers/", body: []byte(`{"name":"../x","host":"h","ca_cert_pem":"a","client_cert_pem":"b","client_key_pem":"c"}`)}, status: 400, code: "invalid_value", says: "../x"},
		{what: "KMIP create: PEMs that are not PEM", req: &rawRequest{method: "POST", path: "/v1/kmip/servers/", body: []byte(`{"name":"k1","host":"127.0.0.1","ca_cert_pem":"a","client_cert_pem":"b","client_key_pem":"c"}`)}, status: 400, code: "invalid_value", says: "not PEM"},
		{what: "migrate: both targets", req: &rawRequest{method: "POST", path: "/v1/migrate/cluster", body: []byte(`{"to_server":"k1","to_local":true}`)}, status: 400, code: "bad_request", says: "exactly one"},
		{what: "migrate: unknown server", req: &rawRequest{method: "POST", path: "/v1/migrate/sed", body: []byte(`{"to_server":"nosuch"}`)}, status: 404, code: "not_found", says: "nosuch"},
		{what: "migrate: domains in the sed scope", req: &rawRequest{method: "POST", path: "/v1/migrate/sed", body: []byte(`{"to_local":true,"domains":["SED"]}`)}, status: 400, code: "bad_request", says: "do not name domains"},
		{what: "import: value not base64", req: &rawRequest{method: "POST", path: "/v1/domains/S3/import", body: []byte(`{"name":"a","value":"AA=="}` + "\n" + `{"name":"b","value":"%%"}`)}, status: 400, code: "bad_request", says: "line 2"},
		{what: "import: bad name", req: &rawRequest{method: "POST", path: "/v1/domains/S3/import", body: []byte(`{"name":"a","value":"AA=="}` + "\n\n" + `{"name":"b\u0007","value":""}`)}, status: 400, code: "invalid_name", says: "line 3"},

		// kmd config files (kmd --config, on the running kmd's data dir).
		{what: "config: unknown key", config: "node_id: 2\nretry_intervall: 5m\n", exit: 2, says: `unknown key "retry_intervall"`},
		{what: "config: retry interval 0s", config: "retry_interval: 0s\n", exit: 2, says: "retry_interval"},
		{what: "config: retry interval without a unit", config: "retry_interval: 15\n", exit: 2, says: `"15"`},
		{what: "config: negative retry interval", config: "retry_interval: -1h\n", exit: 2, says: "positive"},
		{what: "config: bad log format", config: "log_format: text\n", exit: 2, says: "json or console"},
		{what: "config: node id 0", config: "node_id: 0\n", exit: 2, says: "node id"},
		{what: "config: not YAML", config: "data_dir: [unclosed\n", exit: 2, says: "config file"},
		{what: "config: a list, not a mapping", config: "- data_dir\n- socket\n", exit: 2, says: "line 1: not a mapping of settings"},
		{what: "config: a value that is a list", config: "log_file: [a, b]\n", exit: 2, says: "single value"},
		{what: "config: empty data dir", config: "data_dir: ''\n", exit: 2, says: "empty data dir"},
		{what: "config: a key twice", config: "node_id: 2\nnode_id: 3\n", exit: 2, says: "node_id"},
		{what: "config: a second YAML document", config: "node_id: 2\n---\nbogus: 1\n", exit: 2, says: "more than one YAML document"},
		{what: "config: flag spelling of a key", config: "retry-interval: 5m\n", exit: 2, says: `"retry-interval"`},
		{what: "config: path with a NUL byte", config: "log_file: \"/tmp/a\\0b\"\n", exit: 2, says: "NUL"},
	}

	cfgDir := filepath.Join(d.root, "configs")
	if err := os.Mkdir(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	snap := takeSnapshot(t, d)
	for i, row := range rows {
		t.Run(fmt.Sprintf("%02d %s", i, row.what), func(t *testing.T) {
			d := d.in(t)
			switch {
			case row.args != nil:
				checkKmctlRow(t, d, row, certs)
			case row.req != nil:
				checkAPIRow(t, d, row)
			default:
				checkConfigRow(t, d, row, filepath.Join(cfgDir, fmt.Sprintf("%02d.yaml", i)))
			}
			after := takeSnapshot(t, d)
			if diff := snap.diff(after); diff != "" {
				t.Errorf("refused, but something changed:\n%s", diff)
			}
			snap = after
		})
	}
	if t.Failed() {
		return
	}
	d.checkExport("S3", seed)
	tally(t, "bad-inputs", len(rows))
}

func kmipCreate(name, host, port, ca, cert, key string) []string {
	args := []string{"kmip", "server", "create", name, "--port", port,
		"--ca-cert-path", ca, "--client-cert-path", cert, "--client-key-path", key, "--connection-timeout", "3s"}
	if host != "" {
		args = append(args, "--host", host)
	}
	return args
}

// checkKmctlRow runs a kmctl row: the exit status, exactly one
// "kmctl: error:" line that says what is wrong, the usage after a usage
// error and not after a refusal, and nothing on stdout.
func checkKmctlRow(t *testing.T, d *daemon, row badRow, certs string) {
	t.Helper()
	args := make([]string, len(row.args))
	for i, a := range row.args {
		args[i] = strings.ReplaceAll(a, "{certs}", certs)
	}
	stdout, stderr, code := d.kmctlIn(row.stdin, args...)
	el := errorLines(stderr)
	if code != row.exit || len(el) != 1 || !strings.Contains(el[0], row.says) {
		t.Fatalf("kmctl %s: exit %d with error lines %q; want exit %d and one error line saying %q; stderr:\n%s",
			cmdline(args), code, el, row.exit, row.says, stderr)
	}
	t.Logf("exit %d: %s", code, el[0])
	first, _, _ := strings.Cut(stderr, "\n")
	if first != el[0] {
		t.Errorf("kmctl %s: the error line is not the first line of stderr:\n%s", cmdline(args), stderr)
	}
	if usage := strings.Contains(stderr, "Usage:"); usage != (row.exit == 2) {
		t.Errorf("kmctl %s: exit %d and usage shown %v; want the usage after a usage error only:\n%s", cmdline(args), code, usage, stderr)
	}
	if stdout != "" {
		t.Errorf("kmctl %s: printed %d bytes on stdout, want nothing", cmdline(args), len(stdout))
	}
}

// checkAPIRow sends a raw request: the status, {"error","code"} JSON with
// the code, and a one-line message saying what is wrong.
func checkAPIRow(t *testing.T, d *daemon, row badRow) {
	t.Helper()
	status, hdr, body := rawHTTP(t, d.sock, row.req)
	var eb struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	what := row.req.method + " " + cmdline([]string{row.req.path})
	if row.code == "" {
		if status != row.status || !strings.Contains(string(body), row.says) {
			t.Fatalf("%s: %d %q; want %d saying %q", what, status, prefix(body), row.status, row.says)
		}
		return
	}
	if err := json.Unmarshal(body, &eb); err != nil || status != row.status || eb.Code != row.code {
		t.Fatalf("%s: %d %q (%v); want %d with code %s", what, status, prefix(body), err, row.status, row.code)
	}
	t.Logf("%d %s: %s", status, eb.Code, eb.Error)
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	if eb.Error == "" || strings.ContainsAny(eb.Error, "\r\n") || !strings.Contains(eb.Error, row.says) {
		t.Errorf("%s: message %q; want one line saying %q", what, eb.Error, row.says)
	}
}

// checkConfigRow starts kmd with the config file on the running kmd's own
// data dir and another socket: kmd must exit at once with the status and
// one "kmd: error:" line, before it touches the data dir (it would
// otherwise fail on the data dir's lock, with status 1) or makes a socket.
func checkConfigRow(t *testing.T, d *daemon, row badRow, cfg string) {
	t.Helper()
	if err := os.WriteFile(cfg, []byte(row.config), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(d.root, "bad.sock")
	out, code, _ := runKMD(t, nil, "--config", cfg, "--data-dir", d.dataDir, "--socket", sock,
		"--log-file", filepath.Join(d.root, "bad.log"))
	var el []string
	for _, l := range lines(out) {
		if strings.HasPrefix(l, "kmd: error:") {
			el = append(el, l)
		}
	}
	if code != row.exit || len(el) != 1 || !strings.Contains(el[0], row.says) || !strings.Contains(el[0], cfg) {
		t.Fatalf("kmd --config (%q): exit %d with error lines %q; want exit %d and one error line naming the file and saying %q; output:\n%s",
			row.config, code, el, row.exit, row.says, out)
	}
	t.Logf("exit %d: %s", code, el[0])
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("kmd --config (%q) made its socket", row.config)
	}
}

// rawHTTP sends req over the unix socket as written (path escapes
// included) and returns the status, headers and body.
func rawHTTP(t *testing.T, sock string, req *rawRequest) (int, http.Header, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(cmdTimeout))
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: kmd\r\nConnection: close\r\nContent-Length: %d\r\n", req.method, req.path, len(req.body))
	for k, v := range req.header {
		fmt.Fprintf(&head, "%s: %s\r\n", k, v)
	}
	head.WriteString("\r\n")
	// kmd may answer before it has read a large body: write it alongside.
	go func() {
		conn.Write([]byte(head.String()))
		conn.Write(req.body)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", req.method, cmdline([]string{req.path}), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.method, cmdline([]string{req.path}), err)
	}
	return resp.StatusCode, resp.Header, b
}

// snapshot is the state a refused input must leave alone: the API's
// answers for both status tables (key ids, states, locations, entries),
// both schedules, the KMIP servers and S3's export (values included;
// compared, never printed), and the data dir's files with their sizes
// and mtimes (directories by name only: a refused KMIP create makes and
// removes a directory for the server's files, which changes its parent's
// mtime and nothing else). It is read over the socket rather than with
// kmctl, to keep a snapshot per row cheap.
type snapshot map[string]string

func takeSnapshot(t *testing.T, d *daemon) snapshot {
	t.Helper()
	s := snapshot{}
	for _, p := range []string{"/v1/status/cluster", "/v1/status/sed", "/v1/rekey/cluster", "/v1/rekey/sed",
		"/v1/kmip/servers/", "/v1/domains/S3/export"} {
		status, _, body := rawHTTP(t, d.sock, &rawRequest{method: "GET", path: p})
		if status != http.StatusOK {
			t.Fatalf("snapshot: GET %s: %d %s", p, status, prefix(body))
		}
		s[p] = string(body)
	}
	var files []string
	err := filepath.WalkDir(d.dataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.dataDir, path)
		if e.IsDir() {
			files = append(files, rel+"/")
			return nil
		}
		if strings.HasSuffix(path, "-shm") || strings.HasSuffix(path, "-wal") || rel == "audit.log" {
			files = append(files, rel)
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		files = append(files, fmt.Sprintf("%s %d %s", rel, fi.Size(), fi.ModTime().UTC().Format(time.RFC3339Nano)))
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of %s: %v", d.dataDir, err)
	}
	slices.Sort(files)
	s["files"] = strings.Join(files, "\n")
	s["audit.log, records of things done"] = auditDone(t, d)
	return s
}

// auditDone returns the lines of the data dir's audit.log whose outcome is
// ok, read from the file.
func auditDone(t *testing.T, d *daemon) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dataDir, "audit.log"))
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	var done []string
	for line := range strings.Lines(string(b)) {
		var r auditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("snapshot: audit.log line %q: %v", line, err)
		}
		if r.Outcome == "ok" {
			done = append(done, strings.TrimSuffix(line, "\n"))
		}
	}
	return strings.Join(done, "\n")
}

// diff says what differs; S3's export only by name, as it holds values.
func (a snapshot) diff(b snapshot) string {
	var out []string
	for _, k := range sortedKeys(a) {
		if a[k] == b[k] {
			continue
		}
		if strings.HasSuffix(k, "/export") {
			out = append(out, k+": the entries changed")
			continue
		}
		out = append(out, fmt.Sprintf("%s was:\n%s\nnow:\n%s", k, a[k], b[k]))
	}
	return strings.Join(out, "\n")
}

// closedTCPPort returns a loopback port nothing listens on.
func closedTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// writeBadCerts writes the certificate files of the table into
// <root>/certs and returns that directory: a good CA and client pair, and
// files wrong in every way the rows need.
func writeBadCerts(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(root, "certs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	serial := int64(1)
	issue := func(tpl *x509.Certificate, parent *x509.Certificate, key *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
		serial++
		tpl.SerialNumber = big.NewInt(serial)
		tpl.BasicConstraintsValid = true
		if parent == nil {
			parent = tpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, parent, key.Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	caTpl := func(cn string, from, to time.Time) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: from, NotAfter: to, IsCA: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	caKey := newKey()
	ca, caPEM := issue(caTpl("bad-input CA", now.Add(-time.Hour), now.Add(24*time.Hour)), nil, caKey, caKey)
	write("ca.pem", caPEM)
	oldCAKey := newKey()
	_, oldCAPEM := issue(caTpl("expired CA", now.Add(-48*time.Hour), now.Add(-24*time.Hour)), nil, oldCAKey, oldCAKey)
	write("ca-expired.pem", oldCAPEM)

	leaf := func(name string, from, to time.Time, usage x509.ExtKeyUsage) {
		k := newKey()
		_, p := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "kmd " + name}, NotBefore: from, NotAfter: to,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}, ca, k, caKey)
		write(name+".pem", p)
		write(name+".key", keyPEM(k))
	}
	leaf("client", now.Add(-time.Hour), now.Add(24*time.Hour), x509.ExtKeyUsageClientAuth)
	leaf("expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour), x509.ExtKeyUsageClientAuth)
	leaf("future", now.Add(24*time.Hour), now.Add(48*time.Hour), x509.ExtKeyUsageClientAuth)
	leaf("serveronly", now.Add(-time.Hour), now.Add(24*time.Hour), x509.ExtKeyUsageServerAuth)
	write("other.key", keyPEM(newKey()))
	write("encrypted.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"},
		Bytes:   bytes.Repeat([]byte{0x5a}, 48)}))
	write("garbage.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER at all")}))
	write("notpem.pem", []byte("this is not a certificate\n"))
	write("empty.pem", nil)
	if err := os.Symlink(filepath.Join(dir, "gone.pem"), filepath.Join(dir, "dangling.pem")); err != nil {
		t.Fatal(err)
	}
	return dir
}
