// Command kmctl is the operator's command line for kmd: status, rekeys,
// rotation schedules, KMIP servers and migrations, entries and events, over
// kmd's unix socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit statuses (SPEC: kmctl).
const (
	exitOK    = 0 // success
	exitFail  = 1 // the operation failed
	exitUsage = 2 // the command line is wrong
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one kmctl command line and returns its exit status. It is the
// only place that chooses one.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return newApp(stdin, stdout, stderr).run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	if args == nil {
		args = []string{} // nil makes cobra read os.Args
	}
	root := newRootCmd(a)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	return a.report(cmd, err)
}

// usageError is an error in what the user typed: exit 2, with the usage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// hintError is a failure with advice on what to do about it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// userInput marks a daemon's refusal of something the user typed (a bad
// request: a rotation, a name, a time) as a usage error; any other error is
// returned unchanged.
func userInput(err error) error {
	var ce *api.ConnectError
	if err == nil || errors.As(err, &ce) || !errors.Is(err, api.ErrBadRequest) {
		return err
	}
	return &usageError{err: err}
}

// isUsage reports whether err is a usage error: ours, or cobra's
// "unknown command" from a command without an Args validator.
func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command ")
}

// report prints err to stderr and returns the exit status it stands for.
func (a *app) report(cmd *cobra.Command, err error) int {
	if isUsage(err) {
		fmt.Fprintf(a.stderr, "kmctl: error: %s\n\n%s", oneLine(err.Error()), cmd.UsageString())
		return exitUsage
	}
	var ce *api.ConnectError
	var he *hintError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(a.stderr, "kmctl: error: cannot reach kmd at %s: %v\n", ce.Socket, ce.Err)
		fmt.Fprintf(a.stderr, "hint: is kmd running? pass --socket PATH or set KMD_SOCKET to its socket\n")
	case errors.As(err, &he):
		fmt.Fprintf(a.stderr, "kmctl: error: %s\nhint: %s\n", err, he.hint)
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(a.stderr, "kmctl: error: interrupted\n")
	case errors.Is(err, api.ErrForbidden):
		fmt.Fprintf(a.stderr, "kmctl: error: %s\n", err)
		fmt.Fprintf(a.stderr, "hint: your user lacks the role for this; kmd's access configuration maps users to roles\n")
	default:
		fmt.Fprintf(a.stderr, "kmctl: error: %s\n", err)
	}
	return exitFail
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
