package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func decodeLine(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("log line %q is not JSON: %v", line, err)
	}
	return m
}

func TestNewJSON(t *testing.T) {
	for _, format := range []string{"json", ""} {
		t.Run("format="+format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kmd.log")
			l, err := New(Options{File: path, Format: format})
			if err != nil {
				t.Fatal(err)
			}
			l.Zap().Debug("not logged at info")
			l.Zap().Info("rekey started", zap.String(Domain, "S3"), zap.Duration(Elapsed, 1500*time.Millisecond))
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			lines := readLines(t, path)
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1: %q", len(lines), lines)
			}
			m := decodeLine(t, lines[0])
			if m["msg"] != "rekey started" || m["level"] != "info" || m[Domain] != "S3" || m[Elapsed] != "1.5s" {
				t.Errorf("unexpected line %v", m)
			}
			ts, _ := m["ts"].(string)
			if !strings.HasSuffix(ts, "Z") {
				t.Errorf("ts %q is not UTC", ts)
			}
			if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("ts %q is not ISO8601: %v", ts, err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm&^0o640 != 0 {
				t.Errorf("log file mode %v, want at most 0640", perm)
			}
		})
	}
}

func TestNewConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmd.log")
	l, err := New(Options{File: path, Format: "console", Level: zapcore.DebugLevel})
	if err != nil {
		t.Fatal(err)
	}
	l.Zap().Debug("debug line", zap.String(Domain, "S3"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1: %q", len(lines), lines)
	}
	fields := strings.Split(lines[0], "\t")
	if len(fields) < 4 {
		t.Fatalf("console line %q has too few fields", lines[0])
	}
	if !strings.HasSuffix(fields[0], "Z") {
		t.Errorf("ts %q is not UTC", fields[0])
	}
	if fields[1] != "DEBUG" {
		t.Errorf("level %q, want DEBUG", fields[1])
	}
	if !strings.Contains(lines[0], "debug line") || !strings.Contains(lines[0], `{"domain": "S3"}`) {
		t.Errorf("unexpected console line %q", lines[0])
	}
	if strings.HasPrefix(strings.TrimSpace(lines[0]), "{") {
		t.Errorf("console line is JSON: %q", lines[0])
	}
}

func TestNewBadFormat(t *testing.T) {
	l, err := New(Options{File: "-", Format: "xml"})
	if err == nil {
		t.Fatalf("New with format xml returned %v, want error", l)
	}
	if got, want := err.Error(), `invalid log format "xml": want json or console`; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
}

// captureStderr points os.Stderr at a pipe while fn runs and returns what was
// written to it.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&out, r)
		close(done)
	}()
	defer func() {
		os.Stderr = saved
		w.Close()
		<-done
		r.Close()
	}()
	fn()
	os.Stderr = saved
	w.Close()
	<-done
	return out.String()
}

func TestNewFallsBackToStderr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "kmd.log")
	out := captureStderr(t, func() {
		l, err := New(Options{File: path})
		if err != nil {
			t.Fatal(err)
		}
		l.Zap().Info("after fallback")
		if err := l.Sync(); err != nil {
			t.Errorf("Sync on stderr: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("stderr has %d lines, want 2: %q", len(lines), out)
	}
	warn := decodeLine(t, lines[0])
	if warn["level"] != "warn" || warn[Path] != path || !strings.Contains(warn["error"].(string), "no such file") {
		t.Errorf("first line is not the fallback warning: %v", warn)
	}
	if m := decodeLine(t, lines[1]); m["msg"] != "after fallback" || m["level"] != "info" {
		t.Errorf("second line %v, want the info line", m)
	}
	if n := strings.Count(out, `"level":"warn"`); n != 1 {
		t.Errorf("%d warnings, want exactly 1", n)
	}
}

func TestStderrByChoice(t *testing.T) {
	for _, file := range []string{"", "-"} {
		out := captureStderr(t, func() {
			l, err := New(Options{File: file})
			if err != nil {
				t.Fatal(err)
			}
			l.Zap().Info("to stderr")
			if err := l.Reopen(); err != nil {
				t.Errorf("Reopen on stderr: %v", err)
			}
			l.Zap().Info("still stderr")
			l.Close()
		})
		if n := strings.Count(out, "\n"); n != 2 || strings.Contains(out, "warn") {
			t.Errorf("File %q: stderr %q, want two info lines and no warning", file, out)
		}
	}
}

func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kmd.log")
	l, err := New(Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Zap().Info("one")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Zap().Info("two") // still to the moved file
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Zap().Info("three")
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	msgs := func(p string) []string {
		var out []string
		for _, line := range readLines(t, p) {
			out = append(out, decodeLine(t, line)["msg"].(string))
		}
		return out
	}
	if got := strings.Join(msgs(path+".1"), ","); got != "one,two" {
		t.Errorf("rotated file has %q, want one,two", got)
	}
	if got := strings.Join(msgs(path), ","); got != "three" {
		t.Errorf("new file has %q, want three", got)
	}
}

func TestReopenFailureKeepsWriting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logdir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kmd.log")
	l, err := New(Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil || !strings.HasPrefix(err.Error(), "reopen log file: ") {
		t.Fatalf("Reopen with the dir gone: %v, want reopen log file error", err)
	}
	l.Zap().Info("kept")
	l.Sync()
	if lines := readLines(t, filepath.Join(dir+".old", "kmd.log")); len(lines) != 1 {
		t.Errorf("old file has %q, want the line logged after the failed reopen", lines)
	}
}

func TestReopenAfterFallback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logdir")
	path := filepath.Join(dir, "kmd.log")
	var stderr bytes.Buffer
	l, err := newLogger(Options{File: path}, zapcore.AddSync(&stderr))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Zap().Info("to file")
	l.Sync()
	if n := strings.Count(stderr.String(), "\n"); n != 1 {
		t.Errorf("stderr has %d lines, want the one warning: %q", n, stderr.String())
	}
	if lines := readLines(t, path); len(lines) != 1 {
		t.Errorf("file has %q, want the line logged after reopen", lines)
	}
}

func TestReopenConcurrentWithLogging(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmd.log")
	l, err := New(Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	const writers, perWriter = 4, 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for n := range perWriter {
				l.Zap().Info("line", zap.Int(Done, n), zap.Int(Node, i))
			}
		})
	}
	for range 20 {
		if err := l.Reopen(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != writers*perWriter {
		t.Fatalf("%d lines, want %d", len(lines), writers*perWriter)
	}
	for _, line := range lines {
		decodeLine(t, line)
	}
}

func TestCloseTwiceAndAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmd.log")
	l, err := New(Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Reopen(); err == nil {
		t.Error("Reopen after Close succeeded")
	}
	if err := l.Sync(); err != nil {
		t.Errorf("Sync after Close: %v", err)
	}
	if n, err := l.sink.Write([]byte("x\n")); err == nil || n != 0 {
		t.Errorf("Write after Close = %d, %v; want an error", n, err)
	}
}

func TestReopenOnSIGHUP(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logdir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kmd.log")
	l, err := New(Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Catch SIGHUP ourselves too, so that a signal sent before
	// ReopenOnSIGHUP subscribed cannot kill the test binary.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.ReopenOnSIGHUP(ctx)
		close(done)
	}()
	hupUntil := func(file, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			if b, err := os.ReadFile(file); err == nil && bytes.Contains(b, []byte(want)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s in %s", want, file)
			}
		}
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	hupUntil(path, `"msg":"log file reopened"`)

	// A failed reopen is logged, to the file still open.
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	hupUntil(filepath.Join(dir+".old", "kmd.log"), `"msg":"reopen log file"`)
	cancel()
	<-done
}
