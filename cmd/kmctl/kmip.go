package main

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/kmd-project/kmd/api"
	"github.com/kmd-project/kmd/provider"
)

func newKMIPCmd(a *app) *cobra.Command {
	return newGroupCmd("kmip", "Configure the KMIP servers that can hold master keys",
		`Configure the KMIP servers (KMIP 1.0–1.4 over mutual TLS 1.2+) on which kmd can keep
master keys instead of local key files. Move keys there, or back, with kmctl cluster
migrate and kmctl sed migrate.`,
		newGroupCmd("server", "Create, list, view, delete and verify KMIP servers",
			`Create, list, view, delete and verify the KMIP servers kmd knows. A server's NAME is
1–64 letters, digits, '.', '_' or '-', starting with a letter or digit; it is the
Location that status shows for the master keys it holds.`,
			newKMIPServerCreateCmd(a),
			newKMIPServerListCmd(a),
			newKMIPServerViewCmd(a),
			newKMIPServerDeleteCmd(a),
			newKMIPServerVerifyCmd(a),
		),
	)
}

// Defaults of kmip server create; kmd's own defaults are the same.
const (
	defaultKMIPPort    = 5696
	defaultKMIPTLS     = "1.2"
	defaultKMIPTimeout = "10s"
	// maxPEMFile bounds each file create reads: certificates and keys are a
	// few KiB; a bigger file is not the one meant.
	maxPEMFile = 1 << 20
)

// serverNameRE is kmd's rule for a KMIP server name (kmip.ServerConfig).
var serverNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkServerName validates a KMIP server name before anything is sent;
// what names it in the message ("KMIP server name", "--to-server"). A name
// kmd would refuse to create cannot name a server, and some ("", "-", ".")
// would address another endpoint.
func checkServerName(what, name string) error {
	if strings.EqualFold(name, provider.LocationLocal) {
		return usagef("invalid %s %q: %s is the location of local keys; choose another name", what, name, provider.LocationLocal)
	}
	if !serverNameRE.MatchString(name) {
		return usagef("invalid %s %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", what, name)
	}
	return nil
}

// completeKMIPServer completes a KMIP server name from kmd's list.
func (a *app) completeKMIPServer(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	l, err := a.api().KMIPServers(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, s := range l.Servers {
		names = append(names, s.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeServerArg completes the NAME argument of view, delete and verify.
func (a *app) completeServerArg(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return a.completeKMIPServer(cmd, args, s)
}

type kmipCreateOptions struct {
	host                                string
	port                                int
	caCertPath, clientCertPath, keyPath string
	minTLSVersion, connectionTimeout    string
}

// pemKind is what a PEM file given to create must hold.
type pemKind int

const (
	pemCertificates pemKind = iota // CERTIFICATE blocks, nothing else
	pemPrivateKey                  // an unencrypted private key
)

func newKMIPServerCreateCmd(a *app) *cobra.Command {
	var o kmipCreateOptions
	c := &cobra.Command{
		Use:   "create NAME --host H --ca-cert-path F --client-cert-path F --client-key-path F",
		Args:  exactArgs("NAME"),
		Short: "Add a KMIP server, after kmd checked its files and connection",
		Long: `Add the KMIP server NAME at --host and --port. kmd authenticates with the client
certificate and key, and trusts the server's certificate if the CA certificate signed it.

kmctl checks the flags and that each file is PEM of the right kind, then sends the files'
contents to kmd, which copies them into its data dir (mode 0600), checks that the key is
the certificate's and that the certificates are valid, and verifies the connection. The
server is added only if all of that worked; kmd's refusal says why. Prints the server.

NAME is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit, and not
Local. --minimum-tls-version is 1.2 or 1.3; --connection-timeout bounds connecting (TCP,
TLS and KMIP version negotiation), e.g. 10s or 1m.`,
		Example: `  kmctl kmip server create kmip1 --host kmip.example.com \
      --ca-cert-path ca.pem --client-cert-path kmd.pem --client-key-path kmd.key
  kmctl kmip server create kmip2 --host 10.0.0.7 --port 5697 --minimum-tls-version 1.3 \
      --ca-cert-path ca.pem --client-cert-path kmd.pem --client-key-path kmd.key -o json`,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkServerName("KMIP server name", name); err != nil {
				return err
			}
			req, err := o.request(name)
			if err != nil {
				return err
			}
			s, err := a.api().CreateKMIPServer(cmd.Context(), req)
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(s)
			}
			if _, err := fmt.Fprintf(a.stdout, "KMIP server %s created\n", name); err != nil {
				return err
			}
			return renderKMIPServer(a.stdout, s)
		},
	}
	f := c.Flags()
	f.StringVar(&o.host, "host", "", "host name or IP address `H` of the KMIP server (required)")
	f.IntVar(&o.port, "port", defaultKMIPPort, "TCP `PORT` of the KMIP server")
	f.StringVar(&o.caCertPath, "ca-cert-path", "", "PEM `FILE` of the CA certificate(s) that signed the server's certificate (required)")
	f.StringVar(&o.clientCertPath, "client-cert-path", "", "PEM `FILE` of kmd's client certificate (required)")
	f.StringVar(&o.keyPath, "client-key-path", "", "PEM `FILE` of the client certificate's unencrypted private key (required)")
	f.StringVar(&o.minTLSVersion, "minimum-tls-version", defaultKMIPTLS, "lowest TLS `VERSION` to accept: 1.2 or 1.3")
	f.StringVar(&o.connectionTimeout, "connection-timeout", defaultKMIPTimeout, "`DURATION` allowed for connecting, e.g. 10s or 1m")
	_ = c.RegisterFlagCompletionFunc("minimum-tls-version", fixedCompletion("1.2", "1.3"))
	_ = c.RegisterFlagCompletionFunc("connection-timeout", fixedCompletion("5s", "10s", "30s"))
	for _, fl := range []string{"ca-cert-path", "client-cert-path", "client-key-path"} {
		_ = c.MarkFlagFilename(fl, "pem", "crt", "cert", "key")
	}
	return c
}

// request checks the options, reads the three files and returns the create
// request. Every problem is a usage error: nothing is sent.
func (o kmipCreateOptions) request(name string) (api.KMIPServerCreateRequest, error) {
	var missing []string
	for _, f := range []struct{ flag, value string }{
		{"--host H", o.host}, {"--ca-cert-path FILE", o.caCertPath},
		{"--client-cert-path FILE", o.clientCertPath}, {"--client-key-path FILE", o.keyPath},
	} {
		if f.value == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return api.KMIPServerCreateRequest{}, usagef("missing %s", strings.Join(missing, ", "))
	}
	if err := checkHost(o.host); err != nil {
		return api.KMIPServerCreateRequest{}, err
	}
	if o.port < 1 || o.port > 65535 {
		return api.KMIPServerCreateRequest{}, usagef("invalid --port %d: want 1-65535", o.port)
	}
	if o.minTLSVersion != "1.2" && o.minTLSVersion != "1.3" {
		return api.KMIPServerCreateRequest{}, usagef("invalid --minimum-tls-version %q: want 1.2 or 1.3", o.minTLSVersion)
	}
	timeout, err := time.ParseDuration(o.connectionTimeout)
	if err != nil || timeout <= 0 {
		return api.KMIPServerCreateRequest{}, usagef("invalid --connection-timeout %q: want a positive duration such as 10s, 1m or 1m30s", o.connectionTimeout)
	}
	ca, err := readPEM("--ca-cert-path", o.caCertPath, pemCertificates)
	if err != nil {
		return api.KMIPServerCreateRequest{}, err
	}
	cert, err := readPEM("--client-cert-path", o.clientCertPath, pemCertificates)
	if err != nil {
		return api.KMIPServerCreateRequest{}, err
	}
	key, err := readPEM("--client-key-path", o.keyPath, pemPrivateKey)
	if err != nil {
		return api.KMIPServerCreateRequest{}, err
	}
	defer clear(key)
	return api.KMIPServerCreateRequest{
		Name: name, Host: o.host, Port: o.port,
		CACertPEM: string(ca), ClientCertPEM: string(cert), ClientKeyPEM: string(key),
		MinTLSVersion: o.minTLSVersion, ConnectionTimeout: timeout.String(),
		CACertFile: absPath(o.caCertPath), ClientCertFile: absPath(o.clientCertPath), ClientKeyFile: absPath(o.keyPath),
	}, nil
}

// checkHost accepts a host name or IP address without a port.
func checkHost(h string) error {
	bad := strings.ContainsFunc(h, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("/[]", r)
	})
	if !bad {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return nil
		}
	}
	return usagef("invalid --host %q: want a host name or IP address alone (the port goes in --port)", h)
}

// absPath is path made absolute, for kmd's record of where the files came
// from: kmd does not share kmctl's working directory.
func absPath(path string) string {
	if p, err := filepath.Abs(path); err == nil {
		return p
	}
	return path
}

// readPEM reads the file of flag and checks that it is PEM of kind. Its
// errors name the flag and the file and never quote the file's contents.
func readPEM(flag, path string, kind pemKind) ([]byte, error) {
	bad := func(problem string, args ...any) ([]byte, error) {
		return nil, usagef("%s %q %s", flag, path, fmt.Sprintf(problem, args...))
	}
	f, err := os.Open(path)
	if err != nil {
		return bad("%s", fileProblem(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return bad("is a directory; want a PEM file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	switch {
	case err != nil:
		clear(b)
		return bad("%s", fileProblem(err))
	case len(b) > maxPEMFile:
		clear(b)
		return bad("is over 1 MiB; want a PEM file of a few KiB")
	case len(b) == 0:
		return bad("is empty; want a PEM file")
	}
	if problem := checkPEM(b, kind); problem != "" {
		clear(b)
		return bad("%s", problem)
	}
	return b, nil
}

// fileProblem says in plain words why a file could not be read.
func fileProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "cannot be read (permission denied)"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("cannot be read (%v)", err)
}

// privateKeyTypes are the PEM block types of an unencrypted private key.
var privateKeyTypes = []string{"PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"}

// checkPEM returns "" if data holds PEM of kind, else what it holds
// instead, completing "--flag "file" …".
func checkPEM(data []byte, kind pemKind) string {
	var types []string
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if kind == pemPrivateKey && slices.Contains(privateKeyTypes, block.Type) && block.Headers["Proc-Type"] == "" {
			return "" // certificates or EC PARAMETERS around it are kmd's to judge
		}
		if !slices.Contains(types, block.Type) {
			types = append(types, block.Type)
		}
	}
	if kind == pemPrivateKey {
		switch {
		case len(types) == 0:
			return "is not PEM; want an unencrypted private key: a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block"
		case slices.ContainsFunc(types, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }):
			return "holds an encrypted private key; want it unencrypted (kmd cannot ask for a passphrase)"
		}
		return fmt.Sprintf("holds %s, not a private key; want a PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block", blockList(types))
	}
	switch {
	case len(types) == 0:
		return "is not PEM; want a PEM file of CERTIFICATE blocks"
	case slices.ContainsFunc(types, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }):
		return "holds a private key; want certificates only (the key goes in --client-key-path)"
	case len(types) > 1 || types[0] != "CERTIFICATE":
		others := slices.DeleteFunc(types, func(t string) bool { return t == "CERTIFICATE" })
		return fmt.Sprintf("holds %s, not only certificates; want a PEM file of CERTIFICATE blocks", blockList(others))
	}
	return ""
}

// blockList names PEM block types: "a CERTIFICATE block", "PUBLIC KEY and
// X509 CRL blocks". Block types are printable by construction.
func blockList(types []string) string {
	if len(types) == 1 {
		return "a " + cell(types[0]) + " block"
	}
	return cell(strings.Join(types, ", ")) + " blocks"
}

func newKMIPServerListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Args:  noArgs,
		Short: "List the KMIP servers",
		Long: `List the KMIP servers kmd knows: name, host, port, minimum TLS version, the number of
master keys that live there and the domains whose current master key does. -o json
prints {"servers":[…]} with every field.`,
		Example: "  kmctl kmip server list\n  kmctl kmip server list -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.api().KMIPServers(cmd.Context())
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				if l.Servers == nil {
					l.Servers = []api.KMIPServer{}
				}
				return a.printJSON(l)
			}
			return renderKMIPServers(a.stdout, l)
		},
	}
}

func newKMIPServerViewCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "view NAME",
		Args:  exactArgs("NAME"),
		Short: "Show a KMIP server",
		Long: `Show the KMIP server NAME: its address, minimum TLS version and connection timeout,
the subject and expiry (UTC) of kmd's client certificate, when it was added, and the
master keys and domains that live there.`,
		Example:           "  kmctl kmip server view kmip1\n  kmctl kmip server view kmip1 -o json",
		ValidArgsFunction: a.completeServerArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkServerName("KMIP server name", args[0]); err != nil {
				return err
			}
			s, err := a.api().KMIPServer(cmd.Context(), args[0])
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(s)
			}
			return renderKMIPServer(a.stdout, s)
		},
	}
}

// kmipDeleted is delete -o json.
type kmipDeleted struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

func newKMIPServerDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Args:  exactArgs("NAME"),
		Short: "Remove a KMIP server that holds no master key",
		Long: `Remove the KMIP server NAME and kmd's copies of its certificates and key. kmd refuses
while any master key lives there: migrate its domains elsewhere first (kmctl cluster
migrate, kmctl sed migrate).`,
		Example:           "  kmctl kmip server delete kmip1",
		ValidArgsFunction: a.completeServerArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkServerName("KMIP server name", name); err != nil {
				return err
			}
			if err := a.api().DeleteKMIPServer(cmd.Context(), name); err != nil {
				return userInput(err)
			}
			if a.json() {
				return a.printJSON(kmipDeleted{Name: name, Deleted: true})
			}
			_, err := fmt.Fprintf(a.stdout, "KMIP server %s deleted\n", name)
			return err
		},
	}
}

func newKMIPServerVerifyCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "verify [NAME]",
		Args:  maxArgs("NAME"),
		Short: "Check the connection to KMIP servers and probe them",
		Long: `Verify the KMIP server NAME, or every server: whether it is reachable, the TLS and KMIP
versions negotiated, and whether a probe with a throwaway key worked (create, activate,
locate, get, revoke, destroy). Exit status 1 if any server failed.`,
		Example:           "  kmctl kmip server verify\n  kmctl kmip server verify kmip1 -o json",
		ValidArgsFunction: a.completeServerArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
				if err := checkServerName("KMIP server name", name); err != nil {
					return err
				}
			}
			v, err := a.api().VerifyKMIPServers(cmd.Context(), name)
			if err != nil {
				return userInput(err)
			}
			if a.json() {
				if v.Reports == nil {
					v.Reports = []api.KMIPVerifyReport{}
				}
				err = a.printJSON(v)
			} else {
				err = renderKMIPVerify(a.stdout, v)
			}
			if err != nil {
				return err
			}
			return verifyFailures(v)
		},
	}
}

// verifyFailures is nil, or an error naming the servers that failed.
func verifyFailures(v api.KMIPVerifyResponse) error {
	var failed []string
	for _, r := range v.Reports {
		if !r.OK {
			failed = append(failed, cell(r.Server))
		}
	}
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("KMIP server %s failed verification", failed[0])
	}
	return fmt.Errorf("KMIP servers %s failed verification", strings.Join(failed, ", "))
}
