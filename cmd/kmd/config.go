package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kmd-project/kmd/access"
	"github.com/kmd-project/kmd/api/ui"
)

// config is kmd's configuration. Every setting comes, in order of
// precedence, from a flag, a KMD_* environment variable, the YAML config
// file, or its default.
type config struct {
	DataDir       string        `yaml:"data_dir"`
	Socket        string        `yaml:"socket"`
	NodeID        int           `yaml:"node_id"`
	RetryInterval time.Duration `yaml:"retry_interval"`
	LogFile       string        `yaml:"log_file"`
	LogFormat     string        `yaml:"log_format"`
	EventHook     string        `yaml:"event_hook"`
	// Access (access.go of the README): the socket's group, the HTTPS
	// listener and the rules giving callers their roles.
	SocketGroup string        `yaml:"socket_group"`
	Listen      string        `yaml:"listen"`
	TLSCert     string        `yaml:"tls_cert"`
	TLSKey      string        `yaml:"tls_key"`
	TLSClientCA string        `yaml:"tls_client_ca"`
	Access      []access.Rule `yaml:"access"` // the file only
	UIListen    string        `yaml:"ui_listen"`
}

func defaults() config {
	return config{DataDir: "/var/lib/kmd", NodeID: 1, RetryInterval: 15 * time.Minute, LogFile: "/var/log/kmd.log", LogFormat: "json"}
}

// setting ties one config field to its flag, env variable and YAML key.
type setting struct {
	flag, env, help string
	set             func(c *config, v string) error
}

func durationSetting(dst func(*config) *time.Duration) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("invalid duration %q: want a positive Go duration such as 15m, 90s or 1h", v)
		}
		*dst(c) = d
		return nil
	}
}

// pathSetting sets a path; one holding a NUL byte can name no file.
func pathSetting(dst func(*config) *string) func(*config, string) error {
	return func(c *config, v string) error {
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("invalid path %q: it holds a NUL byte", v)
		}
		*dst(c) = v
		return nil
	}
}

var settings = []setting{
	{"data-dir", "KMD_DATA_DIR", "directory of the stores, keys, state and socket (default /var/lib/kmd)",
		func(c *config, v string) error {
			if v == "" {
				return errors.New("empty data dir: want a directory such as /var/lib/kmd")
			}
			return pathSetting(func(c *config) *string { return &c.DataDir })(c, v)
		}},
	{"socket", "KMD_SOCKET", "unix socket of the API (default <data-dir>/kmd.sock)",
		pathSetting(func(c *config) *string { return &c.Socket })},
	{"node-id", "KMD_NODE_ID", "this node's id, shown by sed status (default 1)",
		func(c *config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return fmt.Errorf("invalid node id %q: want a positive integer", v)
			}
			c.NodeID = n
			return nil
		}},
	{"retry-interval", "KMD_RETRY_INTERVAL", "how long after a failed rekey it is retried (default 15m)",
		durationSetting(func(c *config) *time.Duration { return &c.RetryInterval })},
	{"log-file", "KMD_LOG_FILE", `log file; "-" for stderr (default /var/log/kmd.log, stderr if it cannot be opened)`,
		pathSetting(func(c *config) *string { return &c.LogFile })},
	{"log-format", "KMD_LOG_FORMAT", "json or console (default json)",
		func(c *config, v string) error {
			if v != "json" && v != "console" {
				return fmt.Errorf("invalid log format %q: want json or console", v)
			}
			c.LogFormat = v
			return nil
		}},
	{"event-hook", "KMD_EVENT_HOOK", "shell command given each event as one JSON line on stdin",
		func(c *config, v string) error { c.EventHook = v; return nil }},
	{"socket-group", "KMD_SOCKET_GROUP", "group (name or gid) given the socket, which is then mode 0660 (default none: mode 0600)",
		func(c *config, v string) error {
			if v != "" {
				if _, err := access.LookupGroup(v); err != nil {
					return err
				}
			}
			c.SocketGroup = v
			return nil
		}},
	{"listen", "KMD_LISTEN", "HOST:PORT of an HTTPS listener that requires client certificates; needs --tls-cert, --tls-key, --tls-client-ca (default none)",
		func(c *config, v string) error {
			if err := checkListen(v); err != nil {
				return err
			}
			c.Listen = v
			return nil
		}},
	{"tls-cert", "KMD_TLS_CERT", "PEM certificate (and chain) of the HTTPS listener",
		pathSetting(func(c *config) *string { return &c.TLSCert })},
	{"tls-key", "KMD_TLS_KEY", "PEM private key of --tls-cert",
		pathSetting(func(c *config) *string { return &c.TLSKey })},
	{"tls-client-ca", "KMD_TLS_CLIENT_CA", "PEM CA certificates that client certificates must be signed by",
		pathSetting(func(c *config) *string { return &c.TLSClientCA })},
	{"ui-listen", "KMD_UI_LISTEN", "serve the web page (plain HTTP, sign-in with kmctl ui url) on `ADDR`: a loopback address and port such as 127.0.0.1:8443 (default off)",
		func(c *config, v string) error {
			if v == "" {
				c.UIListen = "" // off
				return nil
			}
			addr, err := ui.CheckListenAddr(v)
			if err != nil {
				return err
			}
			c.UIListen = addr
			return nil
		}},
}

// accessKey is the config file's list of access rules; it has no flag and
// no environment variable.
const accessKey = "access"

// usageError is bad input: kmd exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

// loadConfig parses args, env and the config file.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("kmd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "YAML config file (env KMD_CONFIG)")
	vals := map[string]*string{}
	for _, s := range settings {
		vals[s.flag] = fs.String(s.flag, "", s.help+" (env "+s.env+")")
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	usage := func() {
		fmt.Fprintf(stderr, "usage: kmd [--config FILE] [--data-dir DIR] [--socket PATH] [--node-id N]\n"+
			"           [--retry-interval 15m] [--log-file PATH] [--log-format json|console] [--event-hook CMD]\n"+
			"           [--socket-group G] [--listen ADDR --tls-cert F --tls-key F --tls-client-ca F]\n"+
			"           [--ui-listen ADDR]\n\n")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		fmt.Fprintf(stderr, "\nThe config file's access: list gives roles (admin, monitor, service:DOMAIN) to\n"+
			"uids and groups on the socket and to client-certificate subjects on --listen:\n"+
			"  access:\n"+
			"    - role: service:S3\n"+
			"      uids: [1001]\n"+
			"      groups: [s3gw]\n"+
			"      subjects: [\"CN=s3-gateway\"]\n"+
			"root and kmd's own user are always admin on the socket.\n")
	}
	fs.Usage = func() {} // a bad flag gets one line (exitCode), -h the usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return config{}, err
		}
		return config{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return config{}, usageError{fmt.Errorf("unexpected argument %q: kmd takes flags only", fs.Arg(0))}
	}
	if *showVersion {
		return config{}, errShowVersion
	}
	c := defaults()
	path := *configPath
	if path == "" {
		path = getenv("KMD_CONFIG")
	}
	if path != "" {
		if err := c.loadFile(path); err != nil {
			return config{}, usageError{err}
		}
	}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			if err := s.set(&c, v); err != nil {
				return config{}, usageError{fmt.Errorf("%s: %w", s.env, err)}
			}
		}
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			if s.flag == f.Name && ferr == nil {
				if err := s.set(&c, f.Value.String()); err != nil {
					ferr = usageError{fmt.Errorf("--%s: %w", s.flag, err)}
				}
			}
		}
	})
	if ferr != nil {
		return config{}, ferr
	}
	if c.DataDir == "" {
		return config{}, usageError{errors.New("empty data dir: want a directory such as /var/lib/kmd")}
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.DataDir, "kmd.sock")
	}
	return c, nil
}

var errShowVersion = errors.New("version")

// loadFile reads the YAML config file; unknown keys are errors, since a
// misspelt key silently ignored is a setting silently not applied.
func (c *config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var raw map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			// yaml's "unmarshal errors:\n  line 1: cannot unmarshal !!seq
			// into map[string]yaml.Node" speaks of Go types.
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				if line, _, ok := strings.Cut(m, ": cannot unmarshal"); ok {
					m = line + ": not a mapping of settings; want one key: value per line, e.g. retry_interval: 15m"
				}
				msgs[i] = m
			}
			return fmt.Errorf("config file %s: %s", path, strings.Join(msgs, "; "))
		}
		return fmt.Errorf("config file %s: %v", path, oneLine(err))
	}
	// Settings in a second document would be silently ignored.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: holds more than one YAML document (---); want one mapping of settings", path)
	}
	for key, node := range raw {
		if key == accessKey {
			rules, err := decodeAccess(path, node)
			if err != nil {
				return err
			}
			if _, err := access.NewPolicy(rules, serviceDomains(), os.Geteuid()); err != nil {
				return fmt.Errorf("config file %s: %w", path, err)
			}
			c.Access = rules
			continue
		}
		var s *setting
		for i := range settings {
			if strings.ReplaceAll(settings[i].flag, "-", "_") == key {
				s = &settings[i]
			}
		}
		if s == nil {
			return fmt.Errorf("config file %s line %d: unknown key %q; want one of %s", path, node.Line, key, knownKeys())
		}
		if node.Kind != yaml.ScalarNode {
			return fmt.Errorf("config file %s line %d: %s must be a single value", path, node.Line, key)
		}
		if err := s.set(c, node.Value); err != nil {
			return fmt.Errorf("config file %s line %d: %s: %w", path, node.Line, key, err)
		}
	}
	return nil
}

func knownKeys() string {
	keys := make([]string, len(settings))
	for i, s := range settings {
		keys[i] = strings.ReplaceAll(s.flag, "-", "_")
	}
	return strings.Join(append(keys, accessKey), ", ")
}

// decodeAccess reads the access: list, a mapping of role, uids, groups
// and subjects per rule.
func decodeAccess(path string, n yaml.Node) ([]access.Rule, error) {
	const want = "want a list of rules such as - {role: monitor, uids: [1001], groups: [adm], subjects: [\"CN=prometheus\"]}"
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("config file %s line %d: access: not a list; %s", path, n.Line, want)
	}
	rules := make([]access.Rule, 0, len(n.Content))
	for i, item := range n.Content {
		fail := func(at *yaml.Node, format string, args ...any) error {
			return fmt.Errorf("config file %s line %d: access rule %d: %s", path, at.Line, i+1, fmt.Sprintf(format, args...))
		}
		if item.Kind != yaml.MappingNode {
			return nil, fail(item, "not a mapping; %s", want)
		}
		var r access.Rule
		seen := map[string]bool{}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			if seen[k.Value] {
				return nil, fail(k, "%s given twice", k.Value)
			}
			seen[k.Value] = true
			switch k.Value {
			case "role":
				if v.Kind != yaml.ScalarNode {
					return nil, fail(v, "role must be a single value such as monitor")
				}
				r.Role = v.Value
			case "uids", "groups", "subjects":
				if v.Kind != yaml.SequenceNode {
					return nil, fail(v, "%s must be a list such as [a, b]", k.Value)
				}
				for _, e := range v.Content {
					if e.Kind != yaml.ScalarNode {
						return nil, fail(e, "%s must be a list of single values", k.Value)
					}
					switch k.Value {
					case "uids":
						uid, err := strconv.Atoi(e.Value)
						if err != nil {
							return nil, fail(e, "uid %q is not a number; want numeric uids such as [1001]", e.Value)
						}
						r.UIDs = append(r.UIDs, uid)
					case "groups":
						r.Groups = append(r.Groups, e.Value)
					case "subjects":
						r.Subjects = append(r.Subjects, e.Value)
					}
				}
			default:
				return nil, fail(k, "unknown key %q; want role, uids, groups or subjects", k.Value)
			}
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
