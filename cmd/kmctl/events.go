package main

import (
	"time"

	"github.com/spf13/cobra"
)

func newEventsCmd(a *app) *cobra.Command {
	return newGroupCmd("events", "List the events kmd raised",
		`List the events kmd raised: KeyManagerRekeyCompleted, KeyManagerRekeyFailed (cluster
scope) and KeyManagerSedsRekeyFailed (sed scope). They survive kmd restarts.`,
		newEventsListCmd(a),
	)
}

func newEventsListCmd(a *app) *cobra.Command {
	var since string
	c := &cobra.Command{
		Use:   "list [--since RFC3339]",
		Args:  noArgs,
		Short: "List events, oldest first",
		Long: `List events, oldest first: time (UTC), event, scope, domain, attempt, and the message
with the error, if any, appended. --since keeps the events at or after an RFC 3339 time.
-o json prints {"events":[…]} with every field.`,
		Example: "  kmctl events list\n  kmctl events list --since 2026-11-22T00:00:00Z -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var t time.Time
			if cmd.Flags().Changed("since") {
				var err error
				if t, err = time.Parse(time.RFC3339, since); err != nil {
					return usagef("invalid --since %q: want an RFC 3339 time such as 2026-11-22T09:00:00Z", since)
				}
			}
			l, err := a.api().Events(cmd.Context(), t)
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(l)
			}
			return renderEvents(a.stdout, l)
		},
	}
	c.Flags().StringVar(&since, "since", "", "list only events at or after `TIME` (RFC 3339)")
	return c
}
