package main

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/rekey"
)

// confirmPrompt is asked before a rekey without --yes (SPEC: kmctl).
const confirmPrompt = "Are you sure you want to rekey the master passphrase? (yes/[no]): "

func newClusterCmd(a *app) *cobra.Command {
	return newGroupCmd("cluster", "Status, rekeys and migrations of the 17 cluster domains",
		"Show the cluster domains' status, start their rekey, view or change their rotation schedule,\n"+
			"and migrate their master keys to a KMIP server or back to local key files.\n\n"+
			"Cluster domains: "+strings.Join(domains.ClusterDomains, ", ")+".",
		newStatusCmd(a, api.ScopeCluster),
		newMigrateCmd(a, api.ScopeCluster),
		newGroupCmd("rekey", "Rekey the cluster domains; view or change their rotation",
			"Start a rekey of the cluster domains (all, or those named with --domain), staged or not, or\n"+
				"see what it would do (--dry-run); continue or cancel a staged rekey; view or change the\n"+
				"scope's automatic rotation schedule.",
			newRekeyStartCmd(a, api.ScopeCluster),
			newRekeyContinueCmd(a, api.ScopeCluster),
			newRekeyCancelCmd(a, api.ScopeCluster),
			newRekeyViewCmd(a, api.ScopeCluster),
			newRekeyModifyCmd(a, api.ScopeCluster),
		),
		newKeysCmd(a, api.ScopeCluster),
	)
}

func newSEDCmd(a *app) *cobra.Command {
	return newGroupCmd("sed", "Status, rekey and migration of the node's self-encrypting-drive key store",
		"Show the status of the node's SED key store (domain SED), start its rekey, view or change\n"+
			"its automatic rotation schedule, and migrate its master key to a KMIP server or back to\n"+
			"a local key file.",
		newStatusCmd(a, api.ScopeSED),
		newMigrateCmd(a, api.ScopeSED),
		newGroupCmd("rekey", "Rekey the SED key store; view or change its rotation",
			"Start a rekey of the node's SED key store, staged or not, or see what it would do (--dry-run);\n"+
				"continue or cancel a staged rekey; view or change its automatic rotation schedule.",
			newRekeyStartCmd(a, api.ScopeSED),
			newRekeyContinueCmd(a, api.ScopeSED),
			newRekeyCancelCmd(a, api.ScopeSED),
			newRekeyViewCmd(a, api.ScopeSED),
			newRekeyModifyCmd(a, api.ScopeSED),
		),
		newKeysCmd(a, api.ScopeSED),
	)
}

func newStatusCmd(a *app, scope string) *cobra.Command {
	c := &cobra.Command{
		Use:   "status",
		Args:  noArgs,
		Short: "Show each domain's status, key location and master-key creation date",
		Long: `Show the status of the cluster domains: ACTIVE (no rekey running, the last one fine),
IN_PROGRESS (a rekey is running), MIGRATING (a migration to or from a KMIP server is
running), STAGED (a staged rekey keeps the retired key for its stage period) or FAILED (the
last rekey failed; entries stay readable and writable and a retry is scheduled); where the
master key lives (Local or the KMIP server), the KMIP key's unique identifier (empty when
local), and the current master key's creation date (UTC).

-o json prints every field kmd reports, including rekey progress and the next retry.`,
		Example: "  kmctl cluster status\n  kmctl cluster status -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.api().ClusterStatus(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(st)
			}
			return renderClusterStatus(a.stdout, st)
		},
	}
	if scope == api.ScopeSED {
		c.Short = "Show the SED key store's status, key location and creation date"
		c.Long = `Show the status of the node's SED key store: LOCAL or KMIP (where the master key lives,
nothing running), MIGRATING, IN_PROGRESS, FAILED or STAGED; its location (Local or the KMIP
server), the KMIP key's unique identifier, and the master key's creation date (UTC).

-o json prints every field kmd reports, including rekey progress and the next retry.`
		c.Example = "  kmctl sed status\n  kmctl sed status -o json"
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			st, err := a.api().SEDStatus(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(st)
			}
			return renderSEDStatus(a.stdout, st)
		}
	}
	return c
}

type rekeyStartOptions struct {
	domains     []string
	yes         bool
	wait        bool
	stagePeriod string
	dryRun      bool
}

func newRekeyStartCmd(a *app, scope string) *cobra.Command {
	var o rekeyStartOptions
	c := &cobra.Command{
		Use:   "start [--domain D]... [--stage-period VALUE] [--dry-run] [--yes] [--wait]",
		Args:  noArgs,
		Short: "Start a rekey of the cluster domains (all, or those named)",
		Long: `Start a rekey: a new master key is created for each domain, every entry is re-encrypted
under it, and the old key is destroyed once no entry needs it. Entries stay readable and
writable throughout.

With --stage-period VALUE the rekey is staged: once every entry is re-encrypted, the old
key is kept, RETIRED, for that period (status STAGED) and destroyed only then; until then
'rekey continue' destroys it at once and 'rekey cancel' goes back to it. VALUE is a
positive integer followed by one unit: Y years, M months, W weeks, D days, h hours,
m minutes, s seconds (7D, 2W, 1M, 12h).

With --dry-run it only prints what the rekey would do (domains, entries, the keys to
create and destroy and where, and whether it would be refused) and changes nothing.

Without --yes, kmctl asks for confirmation on a terminal and rekeys only on the answer
"yes"; without a terminal it refuses. Without --wait it returns once kmd accepted the
rekey; with --wait it shows progress on a terminal and returns when the rekey ended (or,
staged, reached STAGED), with exit status 1 if it failed.
A domain whose rekey is already running is refused, and so is one that is STAGED until
it is continued or cancelled.`,
		Example: `  kmctl cluster rekey start
  kmctl cluster rekey start --domain S3 --domain SSO --yes --wait
  kmctl cluster rekey start --domain S3 --stage-period 7D --yes
  kmctl cluster rekey start --dry-run -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.rekeyStart(cmd, scope, o)
		},
	}
	f := c.Flags()
	if scope == api.ScopeCluster {
		f.StringArrayVar(&o.domains, "domain", nil, "rekey only `DOMAIN` (repeatable; default: every cluster domain)")
		_ = c.RegisterFlagCompletionFunc("domain", fixedCompletion(domains.ClusterDomains...))
	} else {
		c.Use = "start [--stage-period VALUE] [--dry-run] [--yes] [--wait]"
		c.Short = "Start a rekey of the SED key store"
		c.Long = strings.Replace(c.Long, "for each domain", "for the SED key store", 1)
		c.Long = strings.Replace(c.Long, "A domain whose rekey is already running is refused, and so is one that is STAGED until\nit is continued",
			"A rekey is refused while one is running, and while the store is STAGED until it is\ncontinued", 1)
		c.Example = "  kmctl sed rekey start\n  kmctl sed rekey start --yes --wait\n  kmctl sed rekey start --stage-period 7D --yes\n  kmctl sed rekey start --dry-run"
	}
	f.StringVar(&o.stagePeriod, "stage-period", "", "stage the rekey: keep the old key, RETIRED, for `VALUE` (e.g. 7D, 2W, 12h)")
	_ = c.RegisterFlagCompletionFunc("stage-period", fixedCompletion("7D", "2W", "1M", "24h"))
	f.BoolVar(&o.dryRun, "dry-run", false, "print what the rekey would do; change nothing")
	f.BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&o.wait, "wait", false, "wait until the rekey ends (or is STAGED); exit status 1 if it failed")
	return c
}

// checkDomains validates --domain values and drops repeats.
func checkDomains(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		if !slices.Contains(domains.ClusterDomains, n) {
			hint := ""
			if up := strings.ToUpper(n); up != n && slices.Contains(domains.ClusterDomains, up) {
				hint = fmt.Sprintf(" (names are upper case: %s)", up)
			}
			return nil, usagef("unknown domain %q for --domain%s; want one of %s", n, hint, strings.Join(domains.ClusterDomains, ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (a *app) rekeyStart(cmd *cobra.Command, scope string, o rekeyStartOptions) error {
	names, err := checkDomains(o.domains)
	if err != nil {
		return err
	}
	stage := ""
	if cmd.Flags().Changed("stage-period") {
		rot, err := rekey.ParseStagePeriod(o.stagePeriod)
		if err != nil {
			return &usageError{err: err}
		}
		stage = rot.String()
	}
	ctx := cmd.Context()
	if o.dryRun {
		if o.wait {
			return usagef("--wait does not go with --dry-run: a dry run starts nothing to wait for")
		}
		return a.rekeyPlan(ctx, scope, names, stage)
	}
	if !o.yes {
		ok, err := a.confirm(ctx, opRekey)
		if err != nil || !ok {
			return err
		}
	}
	resp, err := a.api().StartRekeyWith(ctx, scope, api.RekeyStartRequest{Domains: names, StagePeriod: stage})
	if err != nil {
		return userInput(err)
	}
	op := opRekey
	if stage != "" {
		op = opStagedRekey
	}
	return a.started(ctx, op, scope, resp, o.wait)
}

// confirm asks op's question on a terminal; it reports whether the answer
// was exactly "yes". Without a terminal it refuses.
func (a *app) confirm(ctx context.Context, op operation) (bool, error) {
	if !a.stdinTerminal() {
		return false, &hintError{
			err:  fmt.Errorf("refusing to %s without confirmation: stdin is not a terminal", op.verb),
			hint: "pass --yes to confirm non-interactively",
		}
	}
	fmt.Fprint(a.stdout, op.prompt)
	line, err := readStdin(ctx, func() (string, error) { return bufio.NewReader(a.stdin).ReadString('\n') })
	if err != nil {
		fmt.Fprintln(a.stdout) // EOF or interrupted: end the prompt's line
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
	if strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r") == "yes" {
		return true, nil
	}
	fmt.Fprintf(a.stdout, "%s cancelled.\n", op.title)
	return false, nil
}

func newRekeyViewCmd(a *app, scope string) *cobra.Command {
	return &cobra.Command{
		Use:   "view",
		Args:  noArgs,
		Short: "Show the " + scope + " rotation schedule and the last rekey's result",
		Long: `Show the rotation schedule: Rekey Time (when the rotation clock was last reset, by a
successful rekey or a modify), Key Rotation, Next Rekey (Rekey Time plus Key Rotation, or
Never) and the last rekey's result. Times are UTC.`,
		Example: "  kmctl " + scope + " rekey view\n  kmctl " + scope + " rekey view -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.api().RekeyView(cmd.Context(), scope)
			if err != nil {
				return err
			}
			return a.printView(v)
		},
	}
}

func (a *app) printView(v api.RekeyView) error {
	if a.json() {
		return a.printJSON(v)
	}
	return renderRekeyView(a.stdout, v)
}

func newRekeyModifyCmd(a *app, scope string) *cobra.Command {
	var rotation string
	c := &cobra.Command{
		Use:   "modify --key-rotation VALUE",
		Args:  noArgs,
		Short: "Set the " + scope + " automatic rotation and restart its clock",
		Long: `Set how often the master keys are rotated automatically, and reset the rotation clock
to now. VALUE is Never, or a positive integer followed by one unit: Y years, M months,
W weeks, D days, h hours, m minutes, s seconds (6W, 2M, 1Y, 90s). Months and years are
calendar months and years. Prints the resulting schedule.`,
		Example: "  kmctl " + scope + " rekey modify --key-rotation 6W\n  kmctl " + scope + " rekey modify --key-rotation Never",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("key-rotation") {
				return usagef("missing --key-rotation VALUE: Never, or e.g. 6W, 2M, 1Y, 90s")
			}
			rot, err := rekey.ParseRotation(rotation)
			if err != nil {
				return &usageError{err: err}
			}
			v, err := a.api().RekeyModify(cmd.Context(), scope, rot.String())
			if err != nil {
				return userInput(err)
			}
			return a.printView(v)
		},
	}
	c.Flags().StringVar(&rotation, "key-rotation", "", "rotation `VALUE` (required): Never, or N followed by Y, M, W, D, h, m or s")
	_ = c.RegisterFlagCompletionFunc("key-rotation", fixedCompletion("Never", "1Y", "6M", "6W", "30D"))
	return c
}
