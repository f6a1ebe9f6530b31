package jsonl

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	isGood := func(_ int64, line []byte) bool { return bytes.HasPrefix(line, []byte("{")) }
	for _, tc := range []struct {
		name    string
		in      string
		want    Stats
		offsets []int64
	}{
		{"empty", "", Stats{}, nil},
		{"good lines", "{1}\n{2}\n", Stats{End: 8, Size: 8}, []int64{0, 4}},
		{"unterminated last line", "{1}\n{2", Stats{End: 4, Size: 6, Tail: 1}, []int64{0}},
		{"bad last line", "{1}\nxx\n", Stats{End: 4, Size: 7, Tail: 1}, []int64{0}},
		{"bad middle line", "{1}\nxx\n{3}\n", Stats{End: 11, Size: 11, Skipped: 1}, []int64{0, 7}},
		{"bad middle and torn tail", "xx\n{2}\nyy\n{4", Stats{End: 7, Size: 12, Skipped: 1, Tail: 2}, []int64{3}},
		{"only damage", "xx\n", Stats{End: 0, Size: 3, Tail: 1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var offsets []int64
			st, err := Scan(strings.NewReader(tc.in), func(off int64, line []byte) bool {
				ok := isGood(off, line)
				if ok {
					offsets = append(offsets, off)
				}
				return ok
			})
			if err != nil {
				t.Fatal(err)
			}
			if st != tc.want {
				t.Errorf("Scan(%q) = %+v, want %+v", tc.in, st, tc.want)
			}
			if !reflect.DeepEqual(offsets, tc.offsets) {
				t.Errorf("good lines at %v, want %v", offsets, tc.offsets)
			}
			if st.Torn() != (tc.want.End != tc.want.Size) {
				t.Errorf("Torn() = %v", st.Torn())
			}
		})
	}
}

func TestTruncateThenAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.jsonl")
	if err := os.WriteFile(path, []byte("{1}\n{2"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := Scan(f, func(int64, []byte) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if err := Truncate(f, st.End); err != nil {
		t.Fatal(err)
	}
	n, err := Append(f, st.End, []byte("{3}\n"))
	if err != nil || n != 4 {
		t.Fatalf("Append = %d, %v", n, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "{1}\n{3}\n" {
		t.Errorf("file %q, want the torn line replaced by the appended one", b)
	}
}

func TestAppendToReadOnlyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.jsonl")
	if err := os.WriteFile(path, []byte("{1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := Append(f, 4, []byte("{2}\n")); err == nil || n != 0 {
		t.Errorf("Append to a read-only file = %d, %v; want an error", n, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "{1}\n" {
		t.Errorf("file %q changed", b)
	}
}
