package server_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/api/server"
)

func importLine(name string, value []byte) string {
	b, _ := json.Marshal(api.ImportLine{Name: name, Value: value})
	return string(b)
}

func TestImport_AllGood(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	want := map[string][]byte{"db/user": []byte("kmd"), "db/password": allBytes(), "empty": {}}
	var body strings.Builder
	for _, n := range []string{"db/user", "db/password", "empty"} {
		body.WriteString(importLine(n, want[n]) + "\n")
	}
	res, err := k.c.Import(ctx, "S3", strings.NewReader(body.String()))
	if err != nil || res.Imported != 3 {
		t.Fatalf("imported %d %v, want 3", res.Imported, err)
	}
	for n, v := range want {
		got, ver, err := k.c.Get(ctx, "S3", n)
		if err != nil || !bytes.Equal(got, v) || ver != 1 {
			t.Errorf("%s: %q v%d %v", n, got, ver, err)
		}
	}
	// Importing again replaces: every entry moves to version 2.
	if res, err := k.c.Import(ctx, "S3", strings.NewReader(body.String())); err != nil || res.Imported != 3 {
		t.Fatalf("second import: %d %v", res.Imported, err)
	}
	if _, ver, _ := k.c.Get(ctx, "S3", "db/user"); ver != 2 {
		t.Errorf("version %d after a second import, want 2", ver)
	}
}

func TestImport_BlankLinesSkipped(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	body := "\n" + importLine("a", []byte("1")) + "\n\n   \n\t\n" + importLine("b", []byte("2")) + "\r\n\n" + importLine("c", []byte("3"))
	res, err := k.c.Import(ctx, "S3", strings.NewReader(body))
	if err != nil || res.Imported != 3 {
		t.Fatalf("imported %d %v, want 3", res.Imported, err)
	}
	if names, _ := k.c.ListAll(ctx, "S3"); !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Fatalf("names %q", names)
	}
	res, err = k.c.Import(ctx, "S3", strings.NewReader("\n \n"))
	if err != nil || res.Imported != 0 {
		t.Fatalf("blank body: %d %v", res.Imported, err)
	}
}

// One bad line imports nothing, and the error names the line.
func TestImport_BadLineImportsNothing(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	if _, err := k.c.Put(ctx, "S3", "existing", []byte("kept"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// reset puts S3 back as it was, so that a failed case does not fail
	// the next ones.
	reset := func(t *testing.T) {
		names, _ := k.c.ListAll(ctx, "S3")
		if slices.Equal(names, []string{"existing"}) {
			if got, v, _ := k.c.Get(ctx, "S3", "existing"); string(got) == "kept" && v == 1 {
				return
			}
		}
		for _, n := range names {
			k.c.Delete(ctx, "S3", n, api.PutOptions{})
		}
		if _, err := k.c.Put(ctx, "S3", "existing", []byte("kept"), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	line1 := importLine("new", []byte("one"))
	line3 := importLine("existing", []byte("overwritten"))
	b64 := base64.StdEncoding.EncodeToString([]byte("two"))
	tooBig := importLine("big", make([]byte, api.MaxValueSize+1))
	for _, tc := range []struct {
		name, line2 string
		status      int
		code        string
	}{
		{"bad base64", `{"name":"two","value":"not base64!"}`, 400, api.CodeBadRequest},
		{"base64 of another alphabet", `{"name":"two","value":"-_-_"}`, 400, api.CodeBadRequest},
		{"unknown field", `{"name":"two","value":"` + b64 + `","mode":"0600"}`, 400, api.CodeBadRequest},
		{"empty name", `{"name":"","value":"` + b64 + `"}`, 400, api.CodeInvalidName},
		{"missing name", `{"value":"` + b64 + `"}`, 400, api.CodeInvalidName},
		{"non-printable name", `{"name":"a\u0007","value":"` + b64 + `"}`, 400, api.CodeInvalidName},
		{"name of 256 bytes", importLine(strings.Repeat("n", 256), nil), 400, api.CodeInvalidName},
		{"duplicate name", `{"name":"new","value":"` + b64 + `"}`, 400, api.CodeBadRequest},
		// SPEC: 413 for a value over 64 KiB, wherever it comes from.
		{"value over 64 KiB", tooBig, 413, api.CodeTooLarge},
		{"not JSON", `name=two value=` + b64, 400, api.CodeBadRequest},
		{"JSON array", `["two","` + b64 + `"]`, 400, api.CodeBadRequest},
		{"JSON string", `"two"`, 400, api.CodeBadRequest},
		{"number value", `{"name":"two","value":42}`, 400, api.CodeBadRequest},
		{"truncated", `{"name":"two","value":"` + b64, 400, api.CodeBadRequest},
		// One line, one entry: a second object on the line is not silently
		// dropped.
		{"two objects on a line", `{"name":"two","value":"` + b64 + `"} {"name":"three","value":"` + b64 + `"}`, 400, api.CodeBadRequest},
		{"trailing garbage", `{"name":"two","value":"` + b64 + `"} x`, 400, api.CodeBadRequest},
		{"line over 128 KiB", `{"name":"two","value":"` + strings.Repeat("A", 140<<10) + `"}`, 400, api.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { reset(t) })
			body := line1 + "\n" + tc.line2 + "\n" + line3 + "\n"
			_, err := k.c.Import(ctx, "S3", strings.NewReader(body))
			ae := wantAPIError(t, err, tc.status, tc.code, nil)
			if !strings.HasPrefix(ae.Message, "line 2: ") {
				t.Errorf("message %q does not start with \"line 2: \"", ae.Message)
			}
			names, err := k.c.ListAll(ctx, "S3")
			if err != nil || !slices.Equal(names, []string{"existing"}) {
				t.Fatalf("after a failed import: %q %v, want only existing", names, err)
			}
			if got, v, err := k.c.Get(ctx, "S3", "existing"); err != nil || string(got) != "kept" || v != 1 {
				t.Fatalf("existing: %q v%d %v, want kept v1", got, v, err)
			}
		})
	}
}

// Line numbers count the blank lines too, whatever the error.
func TestImport_LineNumbersCountBlankLines(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	good := importLine("a", []byte("1"))
	for _, tc := range []struct{ name, bad string }{
		{"not JSON", "nope"},
		{"line over 128 KiB", `{"name":"b","value":"` + strings.Repeat("A", 140<<10) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := good + "\n\n\n" + tc.bad + "\n"
			_, err := k.c.Import(t.Context(), "S3", strings.NewReader(body))
			ae := wantAPIError(t, err, http.StatusBadRequest, api.CodeBadRequest, api.ErrBadRequest)
			if !strings.HasPrefix(ae.Message, "line 4: ") {
				t.Errorf("message %q, want it to start with \"line 4: \"", ae.Message)
			}
		})
	}
}

// exportLines reads a raw export: every line but the last, which must be
// api.ExportEnd.
func exportLines(t *testing.T, k *kmd, domain string) []api.ImportLine {
	t.Helper()
	status, hdr, body := k.do(t, "GET", "/v1/domains/"+domain+"/export", nil, nil)
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/x-ndjson" || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("export: %d %s %s", status, hdr.Get("Content-Type"), hdr.Get("Cache-Control"))
	}
	if !bytes.HasSuffix(body, []byte("\n"+api.ExportEnd+"\n")) && !bytes.Equal(body, []byte(api.ExportEnd+"\n")) {
		t.Fatalf("export does not end with the %s line: ...%q", api.ExportEnd, body[max(0, len(body)-100):])
	}
	var out []api.ImportLine
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if sc.Text() == api.ExportEnd {
			break
		}
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var l api.ImportLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("export line %.100q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func TestExport_RoundTrip(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()

	if got := exportLines(t, k, "S3"); len(got) != 0 {
		t.Fatalf("empty domain exported %d lines", len(got))
	}

	want := map[string][]byte{
		"bin":                    allBytes(),
		"empty":                  {},
		"max":                    bytes.Repeat([]byte{0xA5}, api.MaxValueSize),
		"ключ/パス ✓":              []byte("unicode name"),
		strings.Repeat("<", 255): []byte("a name JSON escapes to 6 bytes a byte"),
		"newline\\n":             []byte("v\n"),
	}
	// More than one page of the server's listing (1000).
	var bulk strings.Builder
	for i := range 1203 {
		n, v := fmt.Sprintf("bulk/%04d", i), fmt.Appendf(nil, "value %d", i)
		want[n] = v
		bulk.WriteString(importLine(n, v) + "\n")
	}
	if res, err := k.c.Import(ctx, "S3", strings.NewReader(bulk.String())); err != nil || res.Imported != 1203 {
		t.Fatalf("bulk import: %d %v", res.Imported, err)
	}
	for n, v := range want {
		if strings.HasPrefix(n, "bulk/") {
			continue
		}
		if _, err := k.c.Put(ctx, "S3", n, v, api.PutOptions{}); err != nil {
			t.Fatalf("put %q: %v", n, err)
		}
	}

	lines := exportLines(t, k, "S3")
	if len(lines) != len(want) {
		t.Fatalf("exported %d lines, want %d", len(lines), len(want))
	}
	for i, l := range lines {
		if i > 0 && lines[i-1].Name >= l.Name {
			t.Fatalf("export not sorted at %q", l.Name)
		}
		if !bytes.Equal(l.Value, want[l.Name]) {
			t.Fatalf("export of %q: %d bytes differ", l.Name, len(l.Value))
		}
	}

	var exp bytes.Buffer
	if err := k.c.Export(ctx, "S3", &exp); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(exp.Bytes(), []byte(api.ExportEnd)) {
		t.Fatal("client.Export passed the end line on")
	}
	res, err := k.c.Import(ctx, "SIQ", bytes.NewReader(exp.Bytes()))
	if err != nil || res.Imported != len(want) {
		t.Fatalf("import into SIQ: %d %v, want %d", res.Imported, err, len(want))
	}
	var again bytes.Buffer
	if err := k.c.Export(ctx, "SIQ", &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(exp.Bytes(), again.Bytes()) {
		t.Fatal("SIQ exports differently from S3")
	}
	for _, n := range []string{"bin", "empty", "max", "ключ/パス ✓", strings.Repeat("<", 255), "bulk/1202"} {
		got, _, err := k.c.Get(ctx, "SIQ", n)
		if err != nil || !bytes.Equal(got, want[n]) {
			t.Fatalf("SIQ %q: %d bytes %v", n, len(got), err)
		}
	}
}

// An import holds its domain's read lock, which a rekey's SWITCH waits
// for; a client that stalls mid-upload holds it only until the import's
// idle timeout, and its import fails whole.
func TestImport_StalledClientLetsGo(t *testing.T) {
	defer server.SetImportIdle(500 * time.Millisecond)()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	before, err := k.c.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", k.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	line := importLine("stalled", []byte("v")) + "\n"
	fmt.Fprintf(conn, "POST /v1/domains/S3/import HTTP/1.1\r\nHost: kmd\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(line), line)
	// The first line is in; now the client sends nothing more.
	if _, err := k.c.StartRekey(ctx, api.ScopeCluster, []string{"S3"}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "nothing received for 500ms") {
		t.Fatalf("stalled import = %d %s, want 400 naming the pause", resp.StatusCode, body)
	}
	waitFor(t, "the rekey of S3 to end", func() bool {
		st, err := k.c.ClusterStatus(ctx)
		if err != nil {
			return false
		}
		for i, d := range st.Domains {
			if d.Domain == "S3" {
				return d.Rekey == nil && d.Status == "ACTIVE" && d.KeyID != before.Domains[i].KeyID
			}
		}
		return false
	})
	if _, _, err := k.c.Get(ctx, "S3", "stalled"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("the stalled import left its first entry: %v", err)
	}
}
