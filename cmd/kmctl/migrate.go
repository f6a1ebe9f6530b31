package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
)

// migratePrompt is asked before a migration without --yes, as
// confirmPrompt is before a rekey.
const migratePrompt = "Are you sure you want to migrate the master keys? (yes/[no]): "

type migrateOptions struct {
	toServer string
	toLocal  bool
	domains  []string
	retry    bool
	yes      bool
	wait     bool
}

// migrateLong follows the scope's first lines in migrate's help.
const migrateLong = `

A migration is a rekey whose new master key is made at the target: every entry is
re-encrypted under it, status shows MIGRATING until it is done, and the old key is
destroyed only afterwards. Entries stay readable and writable throughout; a rekey asked
for during a migration waits for it to finish. --retry retries a failed migration now
instead of at its next scheduled retry.

Without --yes, kmctl asks for confirmation on a terminal and migrates only on the answer
"yes"; without a terminal it refuses. Without --wait it returns once kmd accepted the
migration; with --wait it shows progress on a terminal and returns when the migration
ended, with exit status 1 if it failed.`

func newMigrateCmd(a *app, scope string) *cobra.Command {
	var o migrateOptions
	c := &cobra.Command{
		Use:   "migrate --to-server NAME | --to-local [--domain D]... [--retry] [--yes] [--wait]",
		Args:  noArgs,
		Short: "Move the cluster domains' master keys to a KMIP server or back to local key files",
		Long: `Migrate the master keys of the cluster domains (all, or those named with --domain) to the
KMIP server NAME (--to-server, see kmctl kmip server list), or back to local key files
(--to-local).` + migrateLong,
		Example: `  kmctl cluster migrate --to-server kmip1
  kmctl cluster migrate --to-server kmip1 --domain S3 --domain SSO --yes --wait
  kmctl cluster migrate --to-local --yes`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.migrate(cmd, scope, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.toServer, "to-server", "", "migrate to the KMIP server `NAME`")
	f.BoolVar(&o.toLocal, "to-local", false, "migrate back to local key files")
	_ = c.RegisterFlagCompletionFunc("to-server", a.completeKMIPServer)
	if scope == api.ScopeCluster {
		f.StringArrayVar(&o.domains, "domain", nil, "migrate only `DOMAIN` (repeatable; default: every cluster domain)")
		_ = c.RegisterFlagCompletionFunc("domain", fixedCompletion(domains.ClusterDomains...))
	} else {
		c.Use = "migrate --to-server NAME | --to-local [--retry] [--yes] [--wait]"
		c.Short = "Move the SED key store's master key to a KMIP server or back to a local key file"
		c.Long = `Migrate the master key of the node's SED key store to the KMIP server NAME (--to-server,
see kmctl kmip server list), or back to a local key file (--to-local).` + migrateLong
		f.Lookup("to-local").Usage = "migrate back to a local key file"
		c.Example = "  kmctl sed migrate --to-server kmip1\n  kmctl sed migrate --to-local --yes --wait"
	}
	f.BoolVar(&o.retry, "retry", false, "retry a failed migration now")
	f.BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&o.wait, "wait", false, "wait until the migration ends; exit status 1 if it failed")
	return c
}

func (a *app) migrate(cmd *cobra.Command, scope string, o migrateOptions) error {
	toServer := cmd.Flags().Changed("to-server")
	if toServer == o.toLocal {
		return usagef("want exactly one of --to-server NAME or --to-local")
	}
	if toServer {
		if err := checkServerName("--to-server", o.toServer); err != nil {
			return err
		}
	}
	names, err := checkDomains(o.domains)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if !o.yes {
		ok, err := a.confirm(ctx, opMigration)
		if err != nil || !ok {
			return err
		}
	}
	resp, err := a.api().Migrate(ctx, scope, api.MigrateRequest{
		ToServer: o.toServer, ToLocal: o.toLocal, Domains: names, Retry: o.retry,
	})
	if err != nil {
		return userInput(err)
	}
	return a.started(ctx, opMigration, scope, resp, o.wait)
}

// started reports a rekey or migration kmd accepted; with wait, once it
// ended.
func (a *app) started(ctx context.Context, op operation, scope string, resp api.RekeyStartResponse, wait bool) error {
	what := "started"
	if wait {
		if err := a.waitRekey(ctx, op, scope, resp.Started); err != nil {
			return err
		}
		what = "completed"
		if op.ended != "" {
			what = op.ended
		}
	}
	if a.json() {
		return a.printJSON(resp)
	}
	return renderRekeyDomains(a.stdout, op, what, resp.Started)
}
