package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kmd-project/kmd/api"
)

// defaultSocket is kmd's socket with its default data dir (SPEC: kmd).
const defaultSocket = "/var/lib/kmd/kmd.sock"

// app is what every command works with: the streams, the global flags and
// the one api.Client of this invocation. Tests replace its hooks.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// stdinTerminal and stdoutTerminal report whether the streams are
	// terminals: the rekey confirmation is asked only on one, and --wait
	// draws progress only on one.
	stdinTerminal, stdoutTerminal func() bool
	pollInterval                  time.Duration // rekey --wait
	now                           func() time.Time

	// Global flags.
	socket string
	output outputFormat

	client *api.Client
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{
		stdin: stdin, stdout: stdout, stderr: stderr,
		getenv:         os.Getenv,
		stdinTerminal:  func() bool { return isTerminal(stdin) },
		stdoutTerminal: func() bool { return isTerminal(stdout) },
		pollInterval:   250 * time.Millisecond,
		now:            time.Now,
		output:         outputTable,
	}
}

// isTerminal reports whether v is an *os.File open on a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// api returns the invocation's client, built on first use from --socket.
func (a *app) api() *api.Client {
	if a.client == nil {
		a.client = api.NewClient(a.socket)
	}
	return a.client
}

func (a *app) json() bool { return a.output == outputJSON }

// readStdin runs read on stdin and returns its result, or ctx's error as
// soon as ctx is done: a read from a terminal must not hold off Ctrl-C.
func readStdin[T any](ctx context.Context, read func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := read()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// printJSON writes v as indented JSON to stdout.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// outputFormat is the -o flag's value: a pflag.Value so that a bad format
// fails while parsing flags, as a usage error.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(s string) error {
	switch outputFormat(s) {
	case outputTable, outputJSON:
		*o = outputFormat(s)
		return nil
	}
	return fmt.Errorf("want table or json")
}

const rootLong = `kmctl is the operator's command line for kmd, the master-key rekey daemon.

It talks to kmd over its unix socket: --socket, else the environment variable
KMD_SOCKET, else ` + defaultSocket + `. Every command prints a table for
people by default and JSON for machines with -o json.

Exit status:
  0  success
  1  the operation failed: kmd unreachable, rekey already in progress, not
     found, refused by kmd, a rekey or migration waited for with --wait
     failed, or a KMIP server failed verification
  2  usage error: unknown command, bad flag or flag value, wrong arguments;
     the reason and the usage are printed to stderr and nothing is changed`

// newRootCmd builds kmctl's command tree over a.
func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "kmctl",
		Short: "Operate kmd: status, rekeys, rotation schedules, KMIP servers, entries and events",
		Long:  rootLong,
		Example: `  kmctl cluster status
  kmctl cluster rekey start --domain S3 --yes --wait
  kmctl sed rekey modify --key-rotation 6W
  kmctl cluster migrate --to-server kmip1 --yes --wait
  printf '%s' "$TOKEN" | kmctl entry put S3 gateway/token
  KMD_SOCKET=/run/kmd/kmd.sock kmctl events list -o json`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          subcommandArgs,
		RunE:          missingSubcommand,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	// A group command runs only to say that a subcommand is missing: do not
	// offer "kmctl cluster [flags]" as a usage.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"Usage:{{if .Runnable}}", "Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })

	socket := a.getenv("KMD_SOCKET")
	if socket == "" {
		socket = defaultSocket
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", socket, "`PATH` of kmd's unix socket (env KMD_SOCKET)")
	pf.VarP(&a.output, "output", "o", "output format: table or json")
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletion("table", "json"))

	root.AddCommand(
		newClusterCmd(a),
		newSEDCmd(a),
		newKMIPCmd(a),
		newEntryCmd(a),
		newEventsCmd(a),
		newAuditCmd(a),
		newUICmd(a),
		newVersionCmd(a),
		newCompletionCmd(a),
	)
	root.SetHelpCommand(newHelpCmd(root))
	return root
}

// newGroupCmd returns a command that only holds subcommands: run alone, or
// with an unknown subcommand, it is a usage error.
func newGroupCmd(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  subcommandArgs,
		RunE:  missingSubcommand,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
	}
	c.AddCommand(subs...)
	return c
}

// subcommandArgs rejects any positional argument of a group command: it can
// only be a subcommand name that did not match.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usagef("%s", msg)
}

func missingSubcommand(cmd *cobra.Command, _ []string) error {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" {
			names = append(names, c.Name())
		}
	}
	return usagef("%q needs a subcommand: one of %s", cmd.CommandPath(), strings.Join(names, ", "))
}

// noArgs is the Args of a leaf command that takes no argument.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q: %q takes no arguments", args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs is the Args of a leaf command taking the named arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			missing := names[len(args):]
			noun := "argument"
			if len(missing) > 1 {
				noun = "arguments"
			}
			return usagef("missing %s %s", noun, strings.Join(missing, " "))
		case len(args) > len(names):
			return usagef("unexpected argument %q: %q takes %s", args[len(names)], cmd.CommandPath(), strings.Join(names, " "))
		}
		return nil
	}
}

// maxArgs is the Args of a leaf command taking the named arguments, all
// optional.
func maxArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > len(names) {
			return usagef("unexpected argument %q: %q takes at most %s", args[len(names)], cmd.CommandPath(), strings.Join(names, " "))
		}
		return nil
	}
}

// newHelpCmd replaces cobra's help command, which answers an unknown topic
// with exit status 0.
func newHelpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help prints the help of any command: kmctl help cluster rekey start.",
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("unknown help topic %q", strings.Join(args, " "))
			}
			return target.Help()
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			target, _, err := root.Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, c := range target.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name()+"\t"+c.Short)
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}
