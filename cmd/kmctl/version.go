package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// versions is `version -o json`.
type versions struct {
	Kmctl string `json:"kmctl"`
	Kmd   string `json:"kmd,omitempty"`
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Args:  noArgs,
		Short: "Print the versions of kmctl and kmd",
		Long: `Print kmctl's version, then the version of the kmd it talks to. When kmd cannot be
reached, kmctl's version is printed and the exit status is 1.`,
		Example: "  kmctl version\n  kmctl version -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.api().Version(cmd.Context())
			if a.json() {
				if perr := a.printJSON(versions{Kmctl: version, Kmd: v.Version}); perr != nil && err == nil {
					err = perr
				}
				return err
			}
			fmt.Fprintf(a.stdout, "kmctl %s\n", version)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "kmd %s\n", v.Version)
			return err
		},
	}
}
