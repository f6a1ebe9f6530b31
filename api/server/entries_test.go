package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kmd-project/kmd/api"
)

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestEntries_ValuesRoundTripByteForByte(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	max := bytes.Repeat(allBytes(), api.MaxValueSize/256)
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"all 256 byte values", allBytes()},
		{"empty", []byte{}},
		{"one NUL", []byte{0}},
		{"CRLF and NUL", []byte("a\r\n\x00b\n")},
		{"invalid UTF-8", []byte{0xff, 0xfe, 0xc0, 0x80}},
		{"exactly 64 KiB", max},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := k.c.Put(ctx, "S3", tc.name, tc.value, api.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v != 1 {
				t.Errorf("version %d, want 1", v)
			}
			got, gv, err := k.c.Get(ctx, "S3", tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.value) || gv != 1 {
				t.Fatalf("got %d bytes at version %d, want the %d bytes put at version 1", len(got), gv, len(tc.value))
			}
			status, hdr, body := k.do(t, "GET", api.EntryPath("S3", tc.name), nil, nil)
			if status != http.StatusOK || !bytes.Equal(body, tc.value) {
				t.Fatalf("raw GET: %d, %d bytes", status, len(body))
			}
			for h, want := range map[string]string{"ETag": `"1"`, "Content-Type": "application/octet-stream",
				"Cache-Control": "no-store", "Content-Length": fmt.Sprint(len(tc.value))} {
				if got := hdr.Get(h); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestEntries_ValueOver64KiB(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	if _, err := k.c.Put(ctx, "S3", "cert", []byte("old"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{api.MaxValueSize + 1, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			_, err := k.c.Put(ctx, "S3", "cert", make([]byte, size), api.PutOptions{})
			ae := wantAPIError(t, err, http.StatusRequestEntityTooLarge, api.CodeTooLarge, api.ErrTooLarge)
			if !strings.Contains(ae.Message, "64 KiB") {
				t.Errorf("message %q does not give the limit", ae.Message)
			}
			_, err = k.c.Put(ctx, "S3", "new", make([]byte, size), api.PutOptions{})
			wantAPIError(t, err, http.StatusRequestEntityTooLarge, api.CodeTooLarge, api.ErrTooLarge)
			got, v, err := k.c.Get(ctx, "S3", "cert")
			if err != nil || string(got) != "old" || v != 1 {
				t.Fatalf("after a refused write: %q v%d %v, want old v1", got, v, err)
			}
			_, _, err = k.c.Get(ctx, "S3", "new")
			wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
		})
	}
	status, _, body := k.do(t, "PUT", api.EntryPath("S3", "raw"), nil, make([]byte, api.MaxValueSize+1))
	wantErrorBody(t, status, body, http.StatusRequestEntityTooLarge, api.CodeTooLarge)
}

func TestEntries_NamesArePathEscaped(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	for _, name := range []string{
		"a/b", "/leading", "trailing/", "a//b", "a/../b", "./x", "with space", " ", "100%", "%2F", "%",
		"?q=1&r=2#frag", "+plus+", "ключ/パスワード ✓", "emoji 🔑", "a\\b", `"quoted"`, "<tag>&amp;",
		"...", "a.", "~user", strings.Repeat("x", 255), strings.Repeat("é", 127),
	} {
		t.Run(name, func(t *testing.T) {
			value := []byte("value of " + name)
			if _, err := k.c.Put(ctx, "S3", name, value, api.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			got, v, err := k.c.Get(ctx, "S3", name)
			if err != nil || !bytes.Equal(got, value) || v != 1 {
				t.Fatalf("got %q v%d %v", got, v, err)
			}
			page, err := k.c.List(ctx, "S3", "", 0)
			if err != nil || !slices.Contains(page.Names, name) {
				t.Fatalf("list %q %v: %q missing", page.Names, err, name)
			}
			if err := k.c.Delete(ctx, "S3", name, api.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// "." and ".." are valid names (printable UTF-8) that, sent as plain path
// segments, routers and clients clean away: a GET of "." used to answer the
// entry list as the value, a PUT of ".." went to /v1/domains/S3.
func TestEntries_DotNames(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	// Another entry, so that a list answered in place of the entry shows.
	if _, err := k.c.Put(ctx, "S3", "other", []byte("x"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".", ".."} {
		t.Run(name, func(t *testing.T) {
			value := []byte("dot value")
			if _, err := k.c.Put(ctx, "S3", name, value, api.PutOptions{}); err != nil {
				t.Fatalf("put: %v", err)
			}
			got, v, err := k.c.Get(ctx, "S3", name)
			if err != nil || !bytes.Equal(got, value) || v != 1 {
				t.Fatalf("get: %q v%d %v, want %q v1", got, v, err, value)
			}
			if err := k.c.Delete(ctx, "S3", name, api.PutOptions{}); err != nil {
				t.Fatalf("delete: %v", err)
			}
		})
	}
}

func TestEntries_InvalidNames(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	t.Run("client", func(t *testing.T) {
		for _, name := range []string{strings.Repeat("n", 256), strings.Repeat("é", 128), "a\x01b", "tab\there",
			"nl\n", "del\x7f", "\xff\xfe", "zero\u200bwidth"} {
			_, err := k.c.Put(ctx, "S3", name, []byte("v"), api.PutOptions{})
			wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidName, api.ErrBadRequest)
			_, _, err = k.c.Get(ctx, "S3", name)
			wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidName, api.ErrBadRequest)
			err = k.c.Delete(ctx, "S3", name, api.PutOptions{})
			wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidName, api.ErrBadRequest)
		}
	})
	t.Run("raw", func(t *testing.T) {
		for _, esc := range []string{"a%01b", "%00", "%FF", "%0A", "%7F", strings.Repeat("n", 256)} {
			for _, method := range []string{"PUT", "GET", "DELETE"} {
				status, _, body := k.do(t, method, "/v1/domains/S3/entries/"+esc, nil, []byte("v"))
				wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeInvalidName)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		_, err := k.c.Put(ctx, "S3", "", []byte("v"), api.PutOptions{})
		wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidName, api.ErrBadRequest)
	})
	names, err := k.c.ListAll(ctx, "S3")
	if err != nil || len(names) != 0 {
		t.Fatalf("after invalid names: %q %v", names, err)
	}
}

func TestEntries_VersionsAndPreconditions(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	path := api.EntryPath("S3", "db/password")
	put := func(t *testing.T, hdr http.Header, value string) (int, http.Header, []byte) {
		t.Helper()
		return k.do(t, "PUT", path, hdr, []byte(value))
	}
	wantValue := func(t *testing.T, value string, version int64) {
		t.Helper()
		got, v, err := k.c.Get(ctx, "S3", "db/password")
		if err != nil || string(got) != value || v != version {
			t.Fatalf("entry: %q v%d %v, want %q v%d", got, v, err, value, version)
		}
	}

	t.Run("If-Match on a missing entry", func(t *testing.T) {
		_, err := k.c.Put(ctx, "S3", "db/password", []byte("v"), api.PutOptions{IfVersion: 1})
		wantAPIError(t, err, http.StatusPreconditionFailed, api.CodeVersion, api.ErrVersion)
		_, _, err = k.c.Get(ctx, "S3", "db/password")
		wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	})
	t.Run("If-None-Match on a new entry", func(t *testing.T) {
		status, hdr, _ := put(t, http.Header{"If-None-Match": {"*"}}, "one")
		if status != http.StatusNoContent || hdr.Get("ETag") != `"1"` {
			t.Fatalf("got %d ETag %s, want 204 \"1\"", status, hdr.Get("ETag"))
		}
		wantValue(t, "one", 1)
	})
	t.Run("If-None-Match on an existing entry", func(t *testing.T) {
		_, err := k.c.Put(ctx, "S3", "db/password", []byte("x"), api.PutOptions{CreateOnly: true})
		wantAPIError(t, err, http.StatusPreconditionFailed, api.CodeVersion, api.ErrVersion)
		wantValue(t, "one", 1)
	})
	t.Run("unconditional write", func(t *testing.T) {
		v, err := k.c.Put(ctx, "S3", "db/password", []byte("two"), api.PutOptions{})
		if err != nil || v != 2 {
			t.Fatalf("put: v%d %v, want v2", v, err)
		}
		_, hdr, _ := k.do(t, "GET", path, nil, nil)
		if hdr.Get("ETag") != `"2"` {
			t.Fatalf("ETag %s, want \"2\"", hdr.Get("ETag"))
		}
	})
	t.Run("If-Match right", func(t *testing.T) {
		status, hdr, _ := put(t, http.Header{"If-Match": {`"2"`}}, "three")
		if status != http.StatusNoContent || hdr.Get("ETag") != `"3"` {
			t.Fatalf("got %d ETag %s, want 204 \"3\"", status, hdr.Get("ETag"))
		}
		v, err := k.c.Put(ctx, "S3", "db/password", []byte("four"), api.PutOptions{IfVersion: 3})
		if err != nil || v != 4 {
			t.Fatalf("put: v%d %v, want v4", v, err)
		}
		wantValue(t, "four", 4)
	})
	t.Run("If-Match wrong", func(t *testing.T) {
		for _, stale := range []int64{1, 3, 5, 1 << 40} {
			_, err := k.c.Put(ctx, "S3", "db/password", []byte("lost"), api.PutOptions{IfVersion: stale})
			wantAPIError(t, err, http.StatusPreconditionFailed, api.CodeVersion, api.ErrVersion)
			err = k.c.Delete(ctx, "S3", "db/password", api.PutOptions{IfVersion: stale})
			wantAPIError(t, err, http.StatusPreconditionFailed, api.CodeVersion, api.ErrVersion)
		}
		wantValue(t, "four", 4)
	})
	t.Run("malformed If-Match", func(t *testing.T) {
		for _, h := range []string{`4`, `"x"`, `"0"`, `"-4"`, `W/"4"`, `*`, `"4", "5"`, `""`, `"`, `"4`, `4"`, `"99999999999999999999"`} {
			for _, method := range []string{"PUT", "DELETE"} {
				status, _, body := k.do(t, method, path, http.Header{"If-Match": {h}}, []byte("lost"))
				eb := wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
				if !strings.Contains(eb.Error, "If-Match") || !strings.Contains(eb.Error, `e.g. "3"`) {
					t.Errorf("If-Match %s: message %q does not say what is right", h, eb.Error)
				}
			}
		}
		wantValue(t, "four", 4)
	})
	t.Run("malformed If-None-Match", func(t *testing.T) {
		for _, h := range []string{`"4"`, `W/"4"`, `**`, `"*"`} {
			status, _, body := put(t, http.Header{"If-None-Match": {h}}, "lost")
			eb := wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
			if !strings.Contains(eb.Error, "only *") {
				t.Errorf("If-None-Match %s: message %q does not say what is right", h, eb.Error)
			}
		}
		wantValue(t, "four", 4)
	})
	t.Run("both preconditions", func(t *testing.T) {
		status, _, body := put(t, http.Header{"If-Match": {`"4"`}, "If-None-Match": {"*"}}, "lost")
		wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
		status, _, body = k.do(t, "DELETE", path, http.Header{"If-None-Match": {"*"}}, nil)
		wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
		wantValue(t, "four", 4)
	})
	t.Run("delete at the right version", func(t *testing.T) {
		status, _, body := k.do(t, "DELETE", path, http.Header{"If-Match": {`"4"`}}, nil)
		if status != http.StatusNoContent || len(body) != 0 {
			t.Fatalf("got %d %q, want 204 and no body", status, body)
		}
		_, _, err := k.c.Get(ctx, "S3", "db/password")
		wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	})
	t.Run("recreated starts at 1", func(t *testing.T) {
		v, err := k.c.Put(ctx, "S3", "db/password", []byte("again"), api.PutOptions{CreateOnly: true})
		if err != nil || v != 1 {
			t.Fatalf("v%d %v, want v1", v, err)
		}
	})
}

// An ETag matches only as written (RFC 9110, strong comparison): "04" and
// "+4" are not the ETag "4", so they must not apply a write at version 4.
func TestEntries_IfMatchComparesETagsAsWritten(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	for i := range 4 {
		if _, err := k.c.Put(ctx, "S3", "e", []byte(fmt.Sprint(i)), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{`"04"`, `"+4"`, `""4""`, `"4"""`} {
		t.Run(h, func(t *testing.T) {
			for _, method := range []string{"PUT", "DELETE"} {
				status, _, _ := k.do(t, method, api.EntryPath("S3", "e"), http.Header{"If-Match": {h}}, []byte("lost"))
				if status != http.StatusBadRequest && status != http.StatusPreconditionFailed {
					t.Errorf("%s If-Match %s: %d, want 400 or 412", method, h, status)
				}
				// Put the entry back at version 4 for the next case.
				if status/100 == 2 {
					k.c.Delete(ctx, "S3", "e", api.PutOptions{})
					for i := range 4 {
						k.c.Put(ctx, "S3", "e", []byte(fmt.Sprint(i)), api.PutOptions{})
					}
				}
			}
		})
	}
}

func TestEntries_Delete(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	if _, err := k.c.Put(ctx, "S3", "gone", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	status, _, body := k.do(t, "DELETE", api.EntryPath("S3", "gone"), nil, nil)
	if status != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("got %d %q, want 204", status, body)
	}
	err := k.c.Delete(ctx, "S3", "gone", api.PutOptions{})
	wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
	status, _, body = k.do(t, "DELETE", api.EntryPath("S3", "gone"), nil, nil)
	wantErrorBody(t, status, body, http.StatusNotFound, api.CodeNotFound)
	_, _, err = k.c.Get(ctx, "S3", "gone")
	wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound, api.ErrNotFound)
}

func TestEntries_UnknownDomain(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	for _, domain := range []string{"NOPE", "s3", "S3 ", "cluster", "sed"} {
		t.Run(domain, func(t *testing.T) {
			check := func(err error) {
				t.Helper()
				ae := wantAPIError(t, err, http.StatusNotFound, api.CodeUnknownDomain, api.ErrUnknownDomain)
				if !strings.Contains(ae.Message, domain) {
					t.Errorf("message %q does not name %q", ae.Message, domain)
				}
			}
			_, err := k.c.Put(ctx, domain, "a", []byte("v"), api.PutOptions{})
			check(err)
			_, _, err = k.c.Get(ctx, domain, "a")
			check(err)
			check(k.c.Delete(ctx, domain, "a", api.PutOptions{}))
			_, err = k.c.List(ctx, domain, "", 0)
			check(err)
			_, err = k.c.Import(ctx, domain, strings.NewReader(`{"name":"a","value":"QQ=="}`))
			check(err)
			check(k.c.Export(ctx, domain, &bytes.Buffer{}))
		})
	}
	// The SED store is a domain too.
	if _, err := k.c.Put(ctx, "SED", "drive-1", []byte("k"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestEntries_ListPaging(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	ctx := t.Context()
	var want []string
	for i := range 25 {
		name := fmt.Sprintf("svc/%02d", 24-i) // put out of order
		if _, err := k.c.Put(ctx, "S3", name, []byte("v"), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	slices.Sort(want)
	if _, err := k.c.Put(ctx, "SIQ", "elsewhere", []byte("v"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	var got []string
	after, pages := "", 0
	for {
		page, err := k.c.List(ctx, "S3", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, page.Names...)
		if page.Next == "" {
			break
		}
		if page.Next != page.Names[len(page.Names)-1] {
			t.Fatalf("next %q is not the page's last name %q", page.Next, page.Names[len(page.Names)-1])
		}
		after = page.Next
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if pages != 3 || !slices.Equal(got, want) {
		t.Fatalf("%d pages: %q, want 3 pages: %q", pages, got, want)
	}
	all, err := k.c.ListAll(ctx, "S3")
	if err != nil || !slices.Equal(all, want) {
		t.Fatalf("ListAll: %q %v", all, err)
	}
	page, err := k.c.List(ctx, "S3", "svc/21", 0)
	if err != nil || !slices.Equal(page.Names, want[22:]) || page.Next != "" {
		t.Fatalf("after svc/21: %+v %v", page, err)
	}

	// Raw: the JSON shape, and an empty page is [] not null.
	status, _, body := k.do(t, "GET", "/v1/domains/S3/entries?after=zzz", nil, nil)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"names":[],"next":""}` {
		t.Fatalf("empty page: %d %s", status, body)
	}
	status, _, body = k.do(t, "GET", "/v1/domains/S3/entries?limit=10000", nil, nil)
	var el api.EntryList
	if err := json.Unmarshal(body, &el); status != http.StatusOK || err != nil || len(el.Names) != 25 {
		t.Fatalf("limit=10000: %d %s", status, body)
	}
	for _, limit := range []string{"0", "-1", "10001", "abc", "1.5", "1e3", "%20"} {
		status, _, body := k.do(t, "GET", "/v1/domains/S3/entries?limit="+limit, nil, nil)
		eb := wantErrorBody(t, status, body, http.StatusBadRequest, api.CodeBadRequest)
		if !strings.Contains(eb.Error, "want 1 to 10000") {
			t.Errorf("limit=%s: message %q does not say what is right", limit, eb.Error)
		}
	}
}

// HEAD answers what GET would, without the body: a service can check that an
// entry exists, and at which version, without reading its value.
func TestEntries_Head(t *testing.T) {
	t.Parallel()
	k := startKMD(t, kmdOptions{})
	if _, err := k.c.Put(t.Context(), "S3", "a/b", []byte(marker), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	status, hdr, body := k.do(t, "HEAD", api.EntryPath("S3", "a/b"), nil, nil)
	if status != http.StatusOK || hdr.Get("ETag") != `"1"` || hdr.Get("Content-Length") != fmt.Sprint(len(marker)) || len(body) != 0 {
		t.Fatalf("HEAD: %d ETag %s Content-Length %s body %q, want 200 \"1\" %d and no body",
			status, hdr.Get("ETag"), hdr.Get("Content-Length"), body, len(marker))
	}
	if status, _, _ := k.do(t, "HEAD", api.EntryPath("S3", "missing"), nil, nil); status != http.StatusNotFound {
		t.Fatalf("HEAD of a missing entry: %d, want 404", status)
	}
	if status, _, _ := k.do(t, "HEAD", "/v1/domains/S3/entries", nil, nil); status != http.StatusOK {
		t.Fatalf("HEAD of the list: %d, want 200", status)
	}
	if status, _, _ := k.do(t, "HEAD", "/v1/status/cluster", nil, nil); status != http.StatusOK {
		t.Fatalf("HEAD of the status: %d, want 200", status)
	}
}
