package logs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Options configure New.
type Options struct {
	// File is the log file's path; "" or "-" means stderr.
	File string
	// Format is "json" (the default when empty) or "console".
	Format string
	// Level is the minimum level logged; the zero value is Info.
	Level zapcore.Level
}

// logFileMode is the mode of a log file New creates.
const logFileMode = 0o640

// Logger is kmd's zap logger together with the file it writes to, which can
// be reopened after logrotate moved it.
type Logger struct {
	zap  *zap.Logger
	sink *fileSink
}

// New builds the logger. If File cannot be opened it logs to stderr and
// writes one warning line saying why (the returned logger's first message).
// It returns an error only for a bad Format.
func New(o Options) (*Logger, error) {
	return newLogger(o, zapcore.Lock(os.Stderr))
}

// newLogger is New with the stderr sink given, so that tests can see what goes
// to stderr.
func newLogger(o Options, stderr zapcore.WriteSyncer) (*Logger, error) {
	enc, err := newEncoder(o.Format)
	if err != nil {
		return nil, err
	}
	sink := &fileSink{stderr: stderr}
	var openErr error
	if o.File != "" && o.File != "-" {
		sink.path = o.File
		sink.f, openErr = openLogFile(o.File)
	}
	core := zapcore.NewCore(enc, sink, zap.NewAtomicLevelAt(o.Level))
	l := &Logger{
		zap:  zap.New(core, zap.AddCaller(), zap.ErrorOutput(stderr)),
		sink: sink,
	}
	if openErr != nil {
		l.zap.Warn("cannot open log file, logging to stderr",
			zap.String(Path, o.File), zap.Error(openErr))
	}
	return l, nil
}

func newEncoder(format string) (zapcore.Encoder, error) {
	cfg := zap.NewProductionEncoderConfig()
	cfg.EncodeTime = utcISO8601TimeEncoder
	cfg.EncodeDuration = zapcore.StringDurationEncoder
	switch format {
	case "", "json":
		return zapcore.NewJSONEncoder(cfg), nil
	case "console":
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		return zapcore.NewConsoleEncoder(cfg), nil
	default:
		return nil, fmt.Errorf("invalid log format %q: want json or console", format)
	}
}

// utcISO8601TimeEncoder writes t as ISO8601 in UTC with milliseconds, e.g.
// 2024-05-01T12:00:00.000Z.
func utcISO8601TimeEncoder(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
}

func openLogFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, logFileMode)
}

// Zap returns the zap logger. Pass it (or children of it) through
// constructors.
func (l *Logger) Zap() *zap.Logger { return l.zap }

// Reopen reopens the log file at its path, for after logrotate moved it. It
// is safe to call concurrently with logging. A logger that writes to stderr
// because it was told to does nothing; one that fell back to stderr because
// the file could not be opened tries again. If the file cannot be opened the
// logger keeps writing where it did and Reopen returns the error.
func (l *Logger) Reopen() error { return l.sink.reopen() }

// Sync flushes the log file to stable storage.
func (l *Logger) Sync() error { return l.zap.Sync() }

// Close syncs and closes the log file. Lines logged afterwards are lost.
func (l *Logger) Close() error {
	err := l.Sync()
	return errors.Join(err, l.sink.close())
}

// ReopenOnSIGHUP reopens the log file each time the process gets SIGHUP,
// logging "log file reopened", until ctx is done. It blocks: run it in a
// goroutine.
func (l *Logger) ReopenOnSIGHUP(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if err := l.Reopen(); err != nil {
				l.zap.Error("reopen log file", zap.Error(err))
				continue
			}
			l.zap.Info("log file reopened", zap.String(Path, l.sink.path))
		}
	}
}

// fileSink is a zapcore.WriteSyncer writing to a file that can be reopened,
// or to stderr when there is no file.
type fileSink struct {
	stderr zapcore.WriteSyncer
	path   string // "" when logging to stderr by choice

	mu     sync.Mutex
	f      *os.File // nil: write to stderr
	closed bool
}

func (s *fileSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	if s.f == nil {
		return s.stderr.Write(p)
	}
	return s.f.Write(p)
}

// Sync syncs the file. Syncing stderr is not attempted: it fails on
// terminals and pipes and there is nothing to flush.
func (s *fileSink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.f == nil {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("sync log file: %w", err)
	}
	return nil
}

func (s *fileSink) reopen() error {
	if s.path == "" {
		return nil
	}
	// Open outside the lock so logging does not wait on the filesystem.
	f, err := openLogFile(s.path)
	if err != nil {
		return fmt.Errorf("reopen log file: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		f.Close()
		return fmt.Errorf("reopen log file: %w", os.ErrClosed)
	}
	old := s.f
	s.f = f
	if old != nil {
		if err := old.Close(); err != nil {
			return fmt.Errorf("close old log file: %w", err)
		}
	}
	return nil
}

func (s *fileSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	return nil
}
