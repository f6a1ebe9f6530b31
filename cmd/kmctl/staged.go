package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
)

type stagedOptions struct {
	domains []string
	wait    bool
}

// newRekeyContinueCmd is `rekey continue`: destroy the retired keys of
// STAGED rekeys now.
func newRekeyContinueCmd(a *app, scope string) *cobra.Command {
	var o stagedOptions
	c := &cobra.Command{
		Use:   "continue [--domain D]... [--wait]",
		Args:  noArgs,
		Short: "Continue staged rekeys: destroy their retired keys now",
		Long: `Continue the staged rekeys of the cluster domains (every STAGED one, or those named with
--domain): kmd checks once more that no entry needs the retired key and destroys it, and
the domain becomes ACTIVE under its new key. This is what kmd does by itself at the end
of the stage period. A named domain that is not STAGED is refused, and nothing is
continued.

Without --wait it returns once kmd accepted the continue; with --wait it returns when it
ended, with exit status 1 if it failed.`,
		Example: "  kmctl cluster rekey continue\n  kmctl cluster rekey continue --domain S3 --wait",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.stagedAction(cmd, opContinue, scope, o, a.api().ContinueRekey)
		},
	}
	stagedFlags(c, scope, &o, "continue")
	if scope == api.ScopeSED {
		c.Short = "Continue the SED key store's staged rekey: destroy its retired key now"
		c.Long = `Continue the staged rekey of the node's SED key store: kmd checks once more that no entry
needs the retired key and destroys it. This is what kmd does by itself at the end of the
stage period. Refused unless the store is STAGED.

Without --wait it returns once kmd accepted the continue; with --wait it returns when it
ended, with exit status 1 if it failed.`
		c.Example = "  kmctl sed rekey continue\n  kmctl sed rekey continue --wait"
	}
	return c
}

// newRekeyCancelCmd is `rekey cancel`: go back to the retired keys of
// STAGED rekeys.
func newRekeyCancelCmd(a *app, scope string) *cobra.Command {
	var o stagedOptions
	c := &cobra.Command{
		Use:   "cancel [--domain D]... [--wait]",
		Args:  noArgs,
		Short: "Cancel staged rekeys: go back to their retired keys",
		Long: `Cancel the staged rekeys of the cluster domains (every STAGED one, or those named with
--domain): the retired key becomes current again, every entry is re-encrypted back under
it, and the rekey's new key is destroyed. Entries stay readable and writable throughout.
A named domain that is not STAGED is refused, and nothing is cancelled.

Without --wait it returns once kmd accepted the cancel; with --wait it shows progress on
a terminal and returns when it ended, with exit status 1 if it failed.`,
		Example: "  kmctl cluster rekey cancel --domain S3\n  kmctl cluster rekey cancel --wait",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.stagedAction(cmd, opCancel, scope, o, a.api().CancelRekey)
		},
	}
	stagedFlags(c, scope, &o, "cancel")
	if scope == api.ScopeSED {
		c.Short = "Cancel the SED key store's staged rekey: go back to its retired key"
		c.Long = `Cancel the staged rekey of the node's SED key store: the retired key becomes current
again, every entry is re-encrypted back under it, and the rekey's new key is destroyed.
Entries stay readable and writable throughout. Refused unless the store is STAGED.

Without --wait it returns once kmd accepted the cancel; with --wait it shows progress on
a terminal and returns when it ended, with exit status 1 if it failed.`
		c.Example = "  kmctl sed rekey cancel\n  kmctl sed rekey cancel --wait"
	}
	return c
}

func stagedFlags(c *cobra.Command, scope string, o *stagedOptions, verb string) {
	f := c.Flags()
	if scope == api.ScopeCluster {
		f.StringArrayVar(&o.domains, "domain", nil, verb+" only `DOMAIN` (repeatable; default: every STAGED cluster domain)")
		_ = c.RegisterFlagCompletionFunc("domain", fixedCompletion(domains.ClusterDomains...))
	} else {
		c.Use = verb + " [--wait]"
	}
	f.BoolVar(&o.wait, "wait", false, "wait until the "+verb+" ends; exit status 1 if it failed")
}

func (a *app) stagedAction(cmd *cobra.Command, op operation, scope string, o stagedOptions,
	call func(ctx context.Context, scope string, domains []string) (api.RekeyStartResponse, error)) error {
	names, err := checkDomains(o.domains)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	resp, err := call(ctx, scope, names)
	if err != nil {
		return userInput(err)
	}
	return a.started(ctx, op, scope, resp, o.wait)
}

// rekeyPlan prints what a rekey would do.
func (a *app) rekeyPlan(ctx context.Context, scope string, names []string, stage string) error {
	p, err := a.api().PlanRekey(ctx, scope, names, stage)
	if err != nil {
		return userInput(err)
	}
	if a.json() {
		return a.printJSON(p)
	}
	return renderPlan(a.stdout, p)
}

// renderPlan writes `rekey start --dry-run`: a table of the domains, then
// the totals and whether the rekey would start.
func renderPlan(w io.Writer, p api.RekeyPlan) error {
	var rows [][]string
	for _, d := range p.Domains {
		cur := api.PlanKey{}
		if d.CurrentKey != nil {
			cur = *d.CurrentKey
		}
		create, destroy := "-", "-"
		if d.Create != nil {
			create = cell(d.Create.Location)
			if d.Create.KeyID != "" {
				create += " (" + cell(d.Create.KeyID) + ")"
			}
		}
		if d.Destroy != nil {
			destroy = cell(d.Destroy.KeyID)
			if d.Destroy.Location != cur.Location {
				destroy += " (" + cell(d.Destroy.Location) + ")"
			}
			if p.StagePeriod != "" {
				destroy += " after " + cell(p.StagePeriod)
			}
		}
		name := cell(d.Domain)
		if d.Node > 0 {
			name = "SED (node " + strconv.Itoa(d.Node) + ")"
		}
		rows = append(rows, []string{name, strconv.FormatInt(d.Entries, 10), cell(d.Action), orDash(cell(cur.KeyID)),
			orDash(cell(cur.Fingerprint)), orDash(cell(cur.Location)), create, destroy, cell(d.Reason)})
	}
	t := table{cols: fitColumns([]string{"Domain", "Entries", "Action", "Current Key", "Fingerprint", "Location",
		"New Key At", "Destroys", "Reason"}, rows), rows: rows}
	ws := t.widths()
	var b strings.Builder
	fmt.Fprintf(&b, "Dry run of a %s rekey: nothing was changed.\n", p.Scope)
	t.writeHeader(&b, ws)
	t.writeRows(&b, ws)
	fmt.Fprintf(&b, "Total: %d domain(s), %d entries\n", p.Total, p.Entries)
	if p.StagePeriod != "" {
		fmt.Fprintf(&b, "Staged: each old key is kept, RETIRED, for %s after its entries are re-encrypted\n", cell(p.StagePeriod))
	}
	if p.WouldStart {
		b.WriteString("Would start: yes\n")
	} else {
		fmt.Fprintf(&b, "Would start: no: %s\n", cell(p.Refused))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// newKeysCmd is the `keys` group: list and delete master keys.
func newKeysCmd(a *app, scope string) *cobra.Command {
	short := "List the cluster domains' master keys; delete retired ones"
	long := "List the master keys of the cluster domains with their state, fingerprint, location and the\n" +
		"entries under each; delete a RETIRED one by its fingerprint."
	if scope == api.ScopeSED {
		short = "List the SED key store's master keys; delete a retired one"
		long = "List the master keys of the node's SED key store with their state, fingerprint, location and\n" +
			"the entries under each; delete a RETIRED one by its fingerprint."
	}
	return newGroupCmd("keys", short, long, newKeysListCmd(a, scope), newKeysDeleteCmd(a, scope))
}

func newKeysListCmd(a *app, scope string) *cobra.Command {
	var names []string
	c := &cobra.Command{
		Use:   "list [--domain D]...",
		Args:  noArgs,
		Short: "List the master keys of the cluster domains (all, or those named)",
		Long: `List each master key: its domain, ID, fingerprint (the hex of a keyed hash that reveals
nothing of the key), state, location (Local or the KMIP server), creation time (UTC) and
the number of entries encrypted under it. States: CURRENT (new entries are sealed under
it), RETIRING (a rekey is moving its entries off it), RETIRED (no entry needs it; a staged
rekey keeps it until it is continued or cancelled, or its stage period ends).

-o json adds the KMIP key's unique identifier and, for a staged rekey's retired key, when
it is destroyed.`,
		Example: "  kmctl cluster keys list\n  kmctl cluster keys list --domain S3 -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := checkDomains(names)
			if err != nil {
				return err
			}
			l, err := a.api().Keys(cmd.Context(), scope, ds)
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(l)
			}
			return renderKeys(a.stdout, l)
		},
	}
	if scope == api.ScopeCluster {
		c.Flags().StringArrayVar(&names, "domain", nil, "list only the keys of `DOMAIN` (repeatable; default: every cluster domain)")
		_ = c.RegisterFlagCompletionFunc("domain", fixedCompletion(domains.ClusterDomains...))
	} else {
		c.Use = "list"
		c.Short = "List the master keys of the SED key store"
		c.Example = "  kmctl sed keys list\n  kmctl sed keys list -o json"
	}
	return c
}

// renderKeys writes `keys list`: a table padded to its content, the total,
// then when each staged rekey's retired key goes.
func renderKeys(w io.Writer, l api.KeyList) error {
	var rows [][]string
	var notes []string
	for _, k := range l.Keys {
		rows = append(rows, []string{cell(k.Domain), cell(k.KeyID), cell(k.Fingerprint), cell(k.State), cell(k.Location),
			keyDate(k.Created), strconv.FormatInt(k.Entries, 10)})
		if k.DestroyAt != nil {
			notes = append(notes, fmt.Sprintf("%s: retired key %s is destroyed at %s unless its staged rekey is continued or cancelled first",
				cell(k.Domain), cell(k.KeyID), keyDate(*k.DestroyAt)))
		}
	}
	t := table{cols: fitColumns([]string{"Domain", "Key ID", "Fingerprint", "State", "Location", "Created", "Entries"}, rows), rows: rows}
	ws := t.widths()
	var b strings.Builder
	t.writeHeader(&b, ws)
	t.writeRows(&b, ws)
	fmt.Fprintf(&b, "Total: %d\n", l.Total)
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func newKeysDeleteCmd(a *app, scope string) *cobra.Command {
	var domain, fp string
	c := &cobra.Command{
		Use:   "delete --domain D --fingerprint FP",
		Args:  noArgs,
		Short: "Delete a retired master key of a cluster domain",
		Long: `Delete the RETIRED master key of domain D whose fingerprint is FP (as keys list shows it).
Refused for a CURRENT or RETIRING key, and while any entry is encrypted under the key.
When it is the retired key of a staged rekey, this continues that rekey (as 'rekey
continue' does) and returns once the key is destroyed.`,
		Example: "  kmctl cluster keys delete --domain S3 --fingerprint 3f9a0c1e2d4b5a6978876a5b4c3d2e1f",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if scope == api.ScopeCluster {
				if !cmd.Flags().Changed("domain") {
					return usagef("missing --domain D: the domain whose key to delete")
				}
				if _, err := checkDomains([]string{domain}); err != nil {
					return err
				}
			}
			if !cmd.Flags().Changed("fingerprint") {
				return usagef("missing --fingerprint FP: the key's fingerprint as '%s keys list' shows it", scope)
			}
			if !domains.ValidFingerprint(fp) {
				return usagef("invalid fingerprint %q: want the %d hex digits that '%s keys list' shows", fp, domains.FingerprintLen, "kmctl "+scope)
			}
			resp, err := a.api().DeleteKey(cmd.Context(), scope, domain, strings.ToLower(fp))
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(resp)
			}
			_, err = fmt.Fprintf(a.stdout, "Deleted key %s (fingerprint %s) of %s\n", cell(resp.Deleted.KeyID),
				cell(resp.Deleted.Fingerprint), cell(resp.Deleted.Domain))
			return err
		},
	}
	f := c.Flags()
	if scope == api.ScopeCluster {
		f.StringVar(&domain, "domain", "", "the `DOMAIN` whose key to delete (required)")
		_ = c.RegisterFlagCompletionFunc("domain", fixedCompletion(domains.ClusterDomains...))
	} else {
		c.Use = "delete --fingerprint FP"
		c.Short = "Delete a retired master key of the SED key store"
		c.Long = strings.Replace(c.Long, "of domain D ", "of the SED key store ", 1)
		c.Example = "  kmctl sed keys delete --fingerprint 3f9a0c1e2d4b5a6978876a5b4c3d2e1f"
	}
	f.StringVar(&fp, "fingerprint", "", "the key's `FP` as keys list shows it (required)")
	return c
}
