package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
)

func newAuditCmd(a *app) *cobra.Command {
	return newGroupCmd("audit", "List the audit trail: who changed what, from where, and how it ended",
		`List kmd's audit trail. kmd records every change asked of it — rekeys, rotation
schedules, migrations, KMIP servers, entry writes, deletes and imports — with the
time, who asked (a uid, a certificate subject), from where, what, and the outcome,
refusals and failures included, before it answers. Reads are not recorded. The
trail is kept in <data-dir>/audit.log and survives restarts; it never holds an
entry's value or key material.`,
		newAuditListCmd(a),
	)
}

const auditListLong = `List the audit trail (admin only), oldest first: time (UTC), who, from where,
action, target and outcome, with the error line of a refused or failed request.

Actions: entry.put, entry.delete, entry.import, rekey.start, rekey.modify,
rekey.continue, rekey.cancel, keys.delete, migrate, kmip.server.create,
kmip.server.delete, kmip.server.verify, ui.link.create, ui.signin, and
"request" for any other change asked of kmd (its target is the method and path).
Outcomes: ok; refused (nothing was done: bad input, no role, not found, a
conflict); failed (kmd tried and could not).

--since keeps the records at or after an RFC 3339 time. --limit N keeps the N
newest of them (1 to %d; without it, kmd answers its newest %d).
-o json prints {"records":[…]} with every field, detail and seq included.`

func newAuditListCmd(a *app) *cobra.Command {
	var since, limit string
	c := &cobra.Command{
		Use:   "list [--since RFC3339] [--limit N]",
		Args:  noArgs,
		Short: "List the audit trail, oldest first",
		Long:  fmt.Sprintf(auditListLong, api.MaxAuditLimit, api.DefaultAuditLimit),
		Example: "  kmctl audit list\n  kmctl audit list --limit 20\n" +
			"  kmctl audit list --since 2026-11-22T00:00:00Z -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t time.Time
			if cmd.Flags().Changed("since") {
				var err error
				if t, err = time.Parse(time.RFC3339, since); err != nil {
					return usagef("invalid --since %q: want an RFC 3339 time such as 2026-11-22T09:00:00Z", since)
				}
			}
			n := 0
			if cmd.Flags().Changed("limit") {
				var err error
				if n, err = strconv.Atoi(limit); err != nil || n < 1 || n > api.MaxAuditLimit {
					return usagef("invalid --limit %q: want a whole number from 1 to %d", limit, api.MaxAuditLimit)
				}
			}
			l, err := a.api().Audit(cmd.Context(), t, n)
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				if l.Records == nil {
					l.Records = []api.AuditRecord{}
				}
				return a.printJSON(l)
			}
			return renderAudit(a.stdout, l)
		},
	}
	c.Flags().StringVar(&since, "since", "", "list only records at or after `TIME` (RFC 3339)")
	c.Flags().StringVar(&limit, "limit", "", fmt.Sprintf("list only the `N` newest records (1 to %d)", api.MaxAuditLimit))
	return c
}

// renderAudit writes `audit list` as a table padded to its content.
func renderAudit(w io.Writer, l api.AuditList) error {
	titles := []string{"Time", "Who", "From", "Action", "Target", "Outcome"}
	var rows [][]string
	for _, r := range l.Records {
		outcome := r.Outcome
		if r.Error != "" {
			outcome += ": " + r.Error
		}
		rows = append(rows, []string{r.Time.UTC().Format(time.RFC3339), orDash(cell(r.Who)), orDash(cell(r.From)),
			cell(r.Action), orDash(cell(r.Target)), cell(outcome)})
	}
	t := table{cols: fitColumns(titles, rows), rows: rows}
	ws := t.widths()
	var b strings.Builder
	t.writeHeader(&b, ws)
	t.writeRows(&b, ws)
	_, err := io.WriteString(w, b.String())
	return err
}
