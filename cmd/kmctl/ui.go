package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newUICmd(a *app) *cobra.Command {
	return newGroupCmd("ui", "Sign in to kmd's web page",
		`kmd serves a web page — both status tables, Rekey Now, the rotation schedules, rekey
progress and recent events — on its --ui-listen address (loopback, plain HTTP). A browser
signs in with a one-time link that kmctl ui url prints.`,
		newUIURLCmd(a),
	)
}

func newUIURLCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "url",
		Args:  noArgs,
		Short: "Print a one-time link that signs a browser in to the web page",
		Long: `Print a one-time link to kmd's web page (admin only). Opening it in a browser on the kmd
host signs that browser in: kmd sets an HttpOnly, SameSite=Strict session cookie that
expires after 8 hours and sends it to the page. The link works once, within 5 minutes;
print a new one for another browser or when it expired.

kmd must run with --ui-listen (for example 127.0.0.1:8443); without it the web page is
off and this fails with exit status 1. -o json prints {"url":"…","expires":"…"}.`,
		Example: "  kmctl ui url\n  xdg-open \"$(kmctl ui url)\"",
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.api().UILink(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(l)
			}
			_, err = fmt.Fprintln(a.stdout, l.URL)
			return err
		},
	}
}
