package main

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/domains"
	"github.com/kmd-project/kmd/provider"
)

func newEntryCmd(a *app) *cobra.Command {
	return newGroupCmd("entry", "Read and write a domain's entries",
		`Read and write the entries of a domain: small secrets encrypted under the domain's
master key. DOMAIN is a cluster domain (S3, SSO, …) or SED. NAME is 1–255 bytes of
printable UTF-8; a value is 0–64 KiB of any bytes.`,
		newEntryPutCmd(a),
		newEntryGetCmd(a),
		newEntryDeleteCmd(a),
		newEntryListCmd(a),
		newEntryImportCmd(a),
		newEntryExportCmd(a),
	)
}

// entryOut is an entry as -o json shows it; the value only for get.
type entryOut struct {
	Domain  string `json:"domain"`
	Name    string `json:"name"`
	Version int64  `json:"version,omitempty"`
	Value   []byte `json:"value,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// completeDomain completes a DOMAIN first argument.
func completeDomain(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return append(slices.Clone(domains.ClusterDomains), domains.SEDDomain), cobra.ShellCompDirectiveNoFileComp
}

// checkName validates an entry NAME argument before anything is sent.
func checkName(name string) error {
	if err := provider.ValidateName(name); err != nil {
		return &usageError{err: err}
	}
	return nil
}

// errValueTooLarge is a value over api.MaxValueSize, refused before kmd is
// asked.
var errValueTooLarge = fmt.Errorf("value is %d bytes or more; entries hold at most %d bytes (64 KiB)", api.MaxValueSize+1, api.MaxValueSize)

func newEntryPutCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "put DOMAIN NAME",
		Args:  exactArgs("DOMAIN", "NAME"),
		Short: "Create or replace an entry with the value read from stdin",
		Long: `Create or replace the entry NAME of DOMAIN. The value is all of stdin, byte for byte
(a trailing newline is part of it); at most 64 KiB. Prints nothing on success;
-o json prints the entry's new version.`,
		Example: `  printf '%s' "$TOKEN" | kmctl entry put S3 gateway/token
  kmctl entry put CERTSTORE web.pem < web.pem`,
		ValidArgsFunction: completeDomain,
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, name := args[0], args[1]
			if err := checkName(name); err != nil {
				return err
			}
			if a.stdinTerminal() {
				fmt.Fprintln(a.stderr, "Reading the value from stdin; end it with Ctrl-D.")
			}
			value, err := readStdin(cmd.Context(), func() ([]byte, error) {
				return io.ReadAll(io.LimitReader(a.stdin, api.MaxValueSize+1))
			})
			if err != nil {
				if cmd.Context().Err() != nil {
					return err
				}
				return fmt.Errorf("read value from stdin: %w", err)
			}
			defer clear(value)
			if len(value) > api.MaxValueSize {
				return errValueTooLarge
			}
			v, err := a.api().Put(cmd.Context(), domain, name, value, api.PutOptions{})
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(entryOut{Domain: domain, Name: name, Version: v})
			}
			return nil
		},
	}
}

func newEntryGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get DOMAIN NAME",
		Args:  exactArgs("DOMAIN", "NAME"),
		Short: "Print an entry's value to stdout, byte for byte",
		Long: `Print the value of the entry NAME of DOMAIN to stdout exactly as stored: nothing is
added, not even a newline. -o json prints {"domain","name","version","value"} with the
value in base64.`,
		Example:           "  kmctl entry get S3 gateway/token > token\n  kmctl entry get S3 gateway/token -o json",
		ValidArgsFunction: completeDomain,
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, name := args[0], args[1]
			if err := checkName(name); err != nil {
				return err
			}
			value, v, err := a.api().Get(cmd.Context(), domain, name)
			if err != nil {
				return userInput(err)
			}
			defer clear(value)
			if a.json() {
				return a.printJSON(entryOut{Domain: domain, Name: name, Version: v, Value: value})
			}
			_, err = a.stdout.Write(value)
			return err
		},
	}
}

func newEntryDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "delete DOMAIN NAME",
		Args:              exactArgs("DOMAIN", "NAME"),
		Short:             "Delete an entry",
		Long:              "Delete the entry NAME of DOMAIN. Prints nothing on success; a missing entry is an error.",
		Example:           "  kmctl entry delete S3 gateway/token",
		ValidArgsFunction: completeDomain,
		RunE: func(cmd *cobra.Command, args []string) error {
			domain, name := args[0], args[1]
			if err := checkName(name); err != nil {
				return err
			}
			if err := a.api().Delete(cmd.Context(), domain, name, api.PutOptions{}); err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(entryOut{Domain: domain, Name: name, Deleted: true})
			}
			return nil
		},
	}
}

func newEntryListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "list DOMAIN",
		Args:              exactArgs("DOMAIN"),
		Short:             "List a domain's entry names, one per line, sorted",
		Long:              `List the names of every entry of DOMAIN, one per line, sorted. -o json prints {"names":[…]}.`,
		Example:           "  kmctl entry list S3\n  kmctl entry list S3 -o json",
		ValidArgsFunction: completeDomain,
		RunE: func(cmd *cobra.Command, args []string) error {
			names, err := a.api().ListAll(cmd.Context(), args[0])
			if err != nil {
				return userInput(err)
			}
			slices.Sort(names) // kmd sends them sorted; make sure
			if a.json() {
				if names == nil {
					names = []string{}
				}
				return a.printJSON(struct {
					Names []string `json:"names"`
				}{names})
			}
			for _, n := range names {
				if _, err := fmt.Fprintln(a.stdout, n); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func newEntryImportCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "import DOMAIN",
		Args:  exactArgs("DOMAIN"),
		Short: "Import entries from JSON lines on stdin, all or nothing",
		Long: `Import entries into DOMAIN from JSON lines on stdin, one {"name":"…","value":"<base64>"}
per line, as entry export writes them. Existing entries of the same name are replaced.
All or nothing: one bad line (named by its number in the error) imports nothing.`,
		Example: `  kmctl entry export S3 > s3.jsonl
  kmctl entry import S3 < s3.jsonl`,
		ValidArgsFunction: completeDomain,
		RunE: func(cmd *cobra.Command, args []string) error {
			domain := args[0]
			resp, err := a.api().Import(cmd.Context(), domain, a.stdin)
			if err != nil {
				var ae *api.Error
				if errors.As(err, &ae) && (errors.Is(err, api.ErrBadRequest) || errors.Is(err, api.ErrTooLarge)) {
					return fmt.Errorf("import into %s refused, nothing imported: %w", domain, err)
				}
				return err
			}
			if a.json() {
				return a.printJSON(resp)
			}
			_, err = fmt.Fprintf(a.stdout, "Imported %d entries\n", resp.Imported)
			return err
		},
	}
}

func newEntryExportCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "export DOMAIN",
		Args:  exactArgs("DOMAIN"),
		Short: "Write every entry of a domain to stdout as JSON lines (admin only)",
		Long: `Write every entry of DOMAIN to stdout as JSON lines {"name":"…","value":"<base64>"},
the format entry import reads. The values are secrets: protect the output. Admin only.
An export cut short is an error (exit status 1), never taken for a complete one.`,
		Example:           "  kmctl entry export S3 > s3.jsonl",
		ValidArgsFunction: completeDomain,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().Export(cmd.Context(), args[0], a.stdout)
		},
	}
}
