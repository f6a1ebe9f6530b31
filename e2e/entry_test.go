package e2e_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestEntries checks that values go through entry put/get byte for byte,
// that the 64 KiB limit holds, that list is sorted, delete deletes, and
// that export and import round-trip.
func TestEntries(t *testing.T) {
	t.Parallel()
	d := startKMD(t)

	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	max64 := make([]byte, 64<<10)
	rand.Read(max64)

	t.Run("binary round trip", func(t *testing.T) {
		d := d.in(t)
		for _, tc := range []struct {
			name  string
			value []byte
		}{
			{"all-bytes", allBytes},
			{"empty", []byte{}},
			{"newline", []byte("line\n")},
			{"crlf-nul", []byte("\r\n\x00\r\n")},
			{"64KiB", max64},
			{"utf8 name ü/ä x", []byte("ünïcödé")},
		} {
			d.put("FTP", tc.name, tc.value)
			if got := d.get("FTP", tc.name); !bytes.Equal(got, tc.value) {
				t.Errorf("entry get FTP %q: %d bytes %x…, want %d bytes %x…", tc.name, len(got), prefix(got), len(tc.value), prefix(tc.value))
			}
		}
		// Replacing keeps only the new value.
		d.put("FTP", "newline", []byte("replaced"))
		if got := d.get("FTP", "newline"); string(got) != "replaced" {
			t.Errorf("entry get after replace: %q, want %q", got, "replaced")
		}
	})

	// "." and ".." are valid names (1–255 bytes of printable UTF-8); as
	// path segments they must not be taken for dot-segments.
	t.Run("dot names", func(t *testing.T) {
		d := d.in(t)
		for _, name := range []string{".", "..", "...", "./x", "x/..", "a/../b"} {
			if out, stderr, code := d.kmctl("entry", "get", "SIQ", name); code != 1 {
				t.Errorf("entry get SIQ %q before any put: exit %d, stdout %q, want exit 1 (not found); stderr:\n%s", name, code, out, stderr)
			}
			value := []byte("value of " + name)
			if _, stderr, code := d.kmctlIn(value, "entry", "put", "SIQ", name); code != 0 {
				t.Errorf("entry put SIQ %q: exit %d, want 0; stderr:\n%s", name, code, stderr)
				continue
			}
			if out, stderr, code := d.kmctl("entry", "get", "SIQ", name); code != 0 || out != string(value) {
				t.Errorf("entry get SIQ %q: exit %d, %q, want 0, %q; stderr:\n%s", name, code, out, value, stderr)
			}
			if _, stderr, code := d.kmctl("entry", "delete", "SIQ", name); code != 0 {
				t.Errorf("entry delete SIQ %q: exit %d, want 0; stderr:\n%s", name, code, stderr)
			}
		}
		if names := d.list("SIQ"); len(names) != 0 {
			t.Errorf("SIQ holds %q after every dot name was deleted, want nothing", names)
		}
	})

	t.Run("over 64 KiB refused", func(t *testing.T) {
		d := d.in(t)
		over := append(slices.Clone(max64), 0x42)
		// Over an existing entry: refused, the old value stays.
		_, stderr, code := d.kmctlIn(over, "entry", "put", "FTP", "64KiB")
		if code != 1 || len(errorLines(stderr)) != 1 {
			t.Errorf("entry put of 64 KiB + 1 over an entry: exit %d, want 1 with one kmctl: error: line; stderr:\n%s", code, stderr)
		}
		if got := d.get("FTP", "64KiB"); !bytes.Equal(got, max64) {
			t.Errorf("the refused put changed the entry")
		}
		// A new entry: refused, not created.
		_, stderr, code = d.kmctlIn(over, "entry", "put", "FTP", "too-big")
		if code != 1 {
			t.Errorf("entry put of 64 KiB + 1: exit %d, want 1; stderr:\n%s", code, stderr)
		}
		if _, _, code := d.kmctl("entry", "get", "FTP", "too-big"); code != 1 {
			t.Errorf("entry get of the refused entry: exit %d, want 1 (not found)", code)
		}
		if slices.Contains(d.list("FTP"), "too-big") {
			t.Errorf("the refused entry is listed")
		}
	})

	t.Run("list sorted", func(t *testing.T) {
		d := d.in(t)
		if names := d.list("NDMP"); len(names) != 0 {
			t.Fatalf("entry list of an empty domain: %q, want nothing", names)
		}
		names := []string{"zeta", "alpha", "Beta", "a/b", "a b", "ümlaut", "0", "~tilde", "a.b", "alpha2", "A"}
		for i, n := range names {
			d.put("NDMP", n, []byte(fmt.Sprint(i)))
		}
		want := slices.Clone(names)
		slices.Sort(want)
		if got := d.list("NDMP"); !slices.Equal(got, want) {
			t.Errorf("entry list NDMP:\n%q\nwant (sorted)\n%q", got, want)
		}
	})

	t.Run("delete", func(t *testing.T) {
		d := d.in(t)
		d.put("NDMP", "doomed", []byte("x"))
		d.must("entry", "delete", "NDMP", "doomed")
		if _, stderr, code := d.kmctl("entry", "get", "NDMP", "doomed"); code != 1 || len(errorLines(stderr)) != 1 {
			t.Errorf("entry get of a deleted entry: exit %d, want 1 with an error line; stderr:\n%s", code, stderr)
		}
		if _, _, code := d.kmctl("entry", "delete", "NDMP", "doomed"); code != 1 {
			t.Errorf("entry delete of a deleted entry: exit %d, want 1", code)
		}
		if slices.Contains(d.list("NDMP"), "doomed") {
			t.Errorf("a deleted entry is listed")
		}
	})

	t.Run("export import round trip", func(t *testing.T) {
		d := d.in(t)
		want := genEntries("s3/item-", 190)
		want["all-bytes"] = allBytes
		want["empty"] = []byte{}
		want["64KiB"] = max64
		want["name with spaces"] = []byte("v")
		want["ünïcödé/ключ"] = []byte{0xff, 0xfe, 0x00, '\n'}
		want["quote\"back\\slash"] = []byte(`{"json":"inside"}`)
		for i := range 4 {
			want[fmt.Sprintf("random-%d", i)] = randomBytes(100 + i)
		}
		if len(want) != 200 {
			t.Fatalf("test bug: %d entries, want 200", len(want))
		}
		out := d.mustIn(importLines(want), "entry", "import", "S3")
		if !strings.Contains(out, "200") {
			t.Errorf("entry import: %q; want the count, 200", out)
		}
		if got := d.clusterStatus().row(t, "S3").Entries; got != 200 {
			t.Errorf("cluster status S3 entries %d, want 200", got)
		}
		s3 := d.must("entry", "export", "S3")
		if got := parseExport(t, s3); !equalEntries(got, want) {
			t.Errorf("entry export S3 differs from what was imported (%d entries, want %d)", len(got), len(want))
		}
		d.mustIn([]byte(s3), "entry", "import", "SNMP")
		snmp := d.must("entry", "export", "SNMP")
		a, b := lines(s3), lines(snmp)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Errorf("export of SNMP after importing S3's export: %d lines differing from S3's %d", len(b), len(a))
		}
		// Spot-check through entry get too.
		d.checkGets("SNMP", []string{"all-bytes", "empty", "64KiB", "ünïcödé/ключ", "s3/item-000007"}, want)
	})

	t.Run("import is all or nothing", func(t *testing.T) {
		d := d.in(t)
		for _, tc := range []struct {
			what, bad string
		}{
			{"bad name", `{"name":"bad\tname","value":"eA=="}`},
			{"bad base64", `{"name":"x3","value":"!!!"}`},
			{"not JSON", `name=x3 value=eA==`},
			{"unknown field", `{"name":"x3","value":"eA==","mode":1}`},
			{"duplicate name", `{"name":"x1","value":"eA=="}`},
			{"too large", fmt.Sprintf(`{"name":"x3","value":%q}`, base64.StdEncoding.EncodeToString(make([]byte, 64<<10+1)))},
		} {
			in := `{"name":"x1","value":"eA=="}` + "\n" + `{"name":"x2","value":"eQ=="}` + "\n" + tc.bad + "\n" + `{"name":"x4","value":"eg=="}` + "\n"
			_, stderr, code := d.kmctlIn([]byte(in), "entry", "import", "CELOG")
			if code == 0 || len(errorLines(stderr)) != 1 || !strings.Contains(stderr, "line 3") {
				t.Errorf("entry import with a %s on line 3: exit %d, want non-zero with one error naming line 3; stderr:\n%s", tc.what, code, stderr)
			}
			if names := d.list("CELOG"); len(names) != 0 {
				t.Errorf("entry import with a %s on line 3 imported %q, want nothing", tc.what, names)
			}
		}
	})
}

func equalEntries(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
