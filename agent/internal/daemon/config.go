package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/petrel-net/petrel/agent/etcdlocal"
	"github.com/petrel-net/petrel/agent/internal/version"
)

// Config is petreld's configuration. It is read from an optional JSON file
// (--config) and then from flags; a flag given on the command line overrides
// the file. Each component has its own section, so a helper adding a component
// adds a section (and its flags in Config.flags) without touching the others.
type Config struct {
	// DataDir holds the embedded etcd's data and other local state.
	DataDir string `json:"data_dir,omitempty"`
	// Hostname is this host's name in etcd (block affinity, endpoint keys).
	Hostname string `json:"hostname,omitempty"`
	// Socket is the gRPC unix socket (mode 0600).
	Socket string `json:"socket,omitempty"`
	// MetricsAddr is the Prometheus /metrics listener; empty disables it.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level,omitempty"`
	// LogFormat is text or json.
	LogFormat string `json:"log_format,omitempty"`

	Etcd      EtcdConfig      `json:"etcd"`
	IPAM      IPAMConfig      `json:"ipam"`
	Dataplane DataplaneConfig `json:"dataplane"`
	Docker    DockerConfig    `json:"docker"`
	Cluster   ClusterConfig   `json:"cluster"`
	Policy    PolicyConfig    `json:"policy"`
}

// EtcdConfig says where the registry lives.
type EtcdConfig struct {
	// Endpoints of an external etcd cluster. Empty starts an embedded
	// single-member etcd under DataDir/etcd.
	Endpoints []string `json:"endpoints,omitempty"`
	// Cert, Key and CA are PEM files for TLS to the external cluster.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	CA   string `json:"ca,omitempty"`
	// DialTimeout bounds the first connection.
	DialTimeout Duration `json:"dial_timeout,omitempty"`
	// RequestTimeout bounds each etcd request made on behalf of an RPC; past
	// it the RPC fails with Unavailable.
	RequestTimeout Duration `json:"request_timeout,omitempty"`
	// History is how long the embedded member keeps the history of changed
	// keys before compacting it (0 never compacts). An external cluster
	// compacts by its own --auto-compaction-retention.
	History Duration `json:"history,omitempty"`
}

// IPAMConfig tunes the address allocator.
type IPAMConfig struct {
	// UsageRefresh is how often the pool utilisation gauges are refreshed.
	UsageRefresh Duration `json:"usage_refresh,omitempty"`
	// Pools are CIDRs that petreld adds at start-up when missing, so that a
	// configuration-managed cluster needs no separate `petrelctl pool add`.
	// A pool that already exists is left as it is.
	Pools []string `json:"pools,omitempty"`
	// PoolBlockSize is the block prefix length of the IPv4 pools in Pools
	// (0: the default, 26); IPv6 pools get the IPv6 default, 122.
	PoolBlockSize int `json:"pool_block_size,omitempty"`
}

// DataplaneConfig configures the routed dataplane (helper "dataplane").
type DataplaneConfig struct {
	// NetNS is the network namespace (a path such as /run/netns/x) that petreld
	// treats as the host's; empty means petreld's own namespace.
	NetNS string `json:"netns,omitempty"`
	// MTU of container interfaces; 0 detects it from the underlay.
	MTU int `json:"mtu,omitempty"`
	// UnderlayInterface carries traffic between hosts; empty detects it from
	// the default route.
	UnderlayInterface string `json:"underlay_interface,omitempty"`
}

// DockerConfig configures the Docker libnetwork plugin (helper "docker").
type DockerConfig struct {
	// Plugin enables the Docker network and IPAM driver named petrel.
	Plugin bool `json:"plugin,omitempty"`
	// PluginDir is where the plugin socket petrel.sock is created
	// (default /run/docker/plugins, where Docker looks).
	PluginDir string `json:"plugin_dir,omitempty"`
	// EngineSocket is the Docker Engine API socket the plugin learns names
	// from (default /var/run/docker.sock); "-" disables name lookups.
	EngineSocket string `json:"engine_socket,omitempty"`
	// RemoveOnShutdown removes the pools' unreachable routes and the
	// DOCKER-USER rules when petreld stops (default: keep them, so running
	// containers keep working across an agent restart).
	RemoveOnShutdown bool `json:"remove_on_shutdown,omitempty"`
}

// Default returns the configuration petreld uses when nothing is given.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		DataDir:     "/var/lib/petrel",
		Hostname:    host,
		Socket:      "/run/petrel/petreld.sock",
		MetricsAddr: "127.0.0.1:9453",
		LogLevel:    "info",
		LogFormat:   "text",
		Etcd: EtcdConfig{
			DialTimeout:    Duration(5 * time.Second),
			RequestTimeout: Duration(5 * time.Second),
			History:        Duration(etcdlocal.DefaultHistory),
		},
		IPAM:   IPAMConfig{UsageRefresh: Duration(30 * time.Second)},
		Policy: PolicyConfig{Enabled: true, Default: "open"},
	}
}

// flags binds every flag to c, with c's current values as defaults.
func (c *Config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for local state and the embedded etcd")
	fs.StringVar(&c.Hostname, "hostname", c.Hostname, "this host's name in the registry")
	fs.StringVar(&c.Socket, "socket", c.Socket, "gRPC unix socket")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "Prometheus /metrics address; empty disables")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")

	fs.Var((*listFlag)(&c.Etcd.Endpoints), "etcd-endpoints", "comma-separated etcd client URLs; empty runs an embedded etcd")
	fs.StringVar(&c.Etcd.Cert, "etcd-cert", c.Etcd.Cert, "TLS client certificate for etcd")
	fs.StringVar(&c.Etcd.Key, "etcd-key", c.Etcd.Key, "TLS client key for etcd")
	fs.StringVar(&c.Etcd.CA, "etcd-ca", c.Etcd.CA, "CA bundle that signs the etcd servers' certificates")
	fs.Var(&c.Etcd.DialTimeout, "etcd-dial-timeout", "timeout of the first etcd connection")
	fs.Var(&c.Etcd.RequestTimeout, "etcd-request-timeout", "timeout of one etcd request; past it RPCs fail with Unavailable")
	fs.Var(&c.Etcd.History, "etcd-history", "how long the embedded etcd keeps key history before compacting it (0: never)")

	fs.Var(&c.IPAM.UsageRefresh, "usage-refresh", "how often pool utilisation metrics are refreshed")
	fs.Var((*listFlag)(&c.IPAM.Pools), "pools", "comma-separated pool CIDRs to add at start-up when missing")
	fs.IntVar(&c.IPAM.PoolBlockSize, "pool-block-size", c.IPAM.PoolBlockSize, "block prefix length of the IPv4 pools given by --pools (0: 26)")

	fs.StringVar(&c.Dataplane.NetNS, "netns", c.Dataplane.NetNS, "host network namespace path for the dataplane; empty is petreld's own")
	fs.IntVar(&c.Dataplane.MTU, "mtu", c.Dataplane.MTU, "container interface MTU; 0 detects it")
	fs.StringVar(&c.Dataplane.UnderlayInterface, "underlay-interface", c.Dataplane.UnderlayInterface, "interface between hosts; empty detects it")

	c.Cluster.flags(fs)
	c.Policy.flags(fs)

	fs.BoolVar(&c.Docker.Plugin, "docker-plugin", c.Docker.Plugin, "serve the Docker network and IPAM driver named petrel")
	fs.StringVar(&c.Docker.PluginDir, "docker-plugin-dir", c.Docker.PluginDir, "directory of the Docker plugin socket petrel.sock")
	fs.StringVar(&c.Docker.EngineSocket, "docker-socket", c.Docker.EngineSocket, "Docker Engine API socket for container and network names; - disables")
	fs.BoolVar(&c.Docker.RemoveOnShutdown, "docker-cleanup-on-exit", c.Docker.RemoveOnShutdown, "remove the Docker path's unreachable routes and DOCKER-USER rules on exit")
}

// ParseArgs builds the configuration from the command line: defaults, then
// the --config file if given, then the flags. It reports whether --version
// was asked for.
func ParseArgs(args []string, stderr io.Writer) (cfg Config, showVersion bool, err error) {
	cfg = Default()
	// First pass: find --config and --version without disturbing cfg.
	probe := cfg
	pre := flag.NewFlagSet("petreld", flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	probe.flags(pre)
	path := pre.String("config", "", "")
	version := pre.Bool("version", false, "")
	if err := pre.Parse(args); err != nil {
		// Report the error with usage from the real flag set below.
		path, version = new(string), new(bool)
	}
	if *path != "" {
		f, err := os.Open(*path)
		if err != nil {
			return cfg, false, fmt.Errorf("config file: %w", err)
		}
		cfg, err = ParseConfig(f, cfg)
		_ = f.Close()
		if err != nil {
			return cfg, false, fmt.Errorf("config file %s: %w", *path, err)
		}
	}
	fs := flag.NewFlagSet("petreld", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.flags(fs)
	fs.String("config", "", "JSON config file; flags override it")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if showVersion || *version {
		return cfg, true, nil
	}
	return cfg, false, cfg.Validate()
}

// ParseConfig decodes a JSON config file over base. Unknown keys are errors,
// so a misspelt setting is not silently ignored.
func ParseConfig(r io.Reader, base Config) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return base, fmt.Errorf("read: %w", err)
	}
	cfg := base
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return base, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return base, errors.New("decode: trailing data after the JSON object")
	}
	return cfg, nil
}

// Validate checks the configuration for values petreld cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" && len(c.Etcd.Endpoints) == 0 {
		errs = append(errs, errors.New("data_dir: required for the embedded etcd"))
	}
	if c.Hostname == "" {
		errs = append(errs, errors.New("hostname: required"))
	} else if strings.ContainsAny(c.Hostname, "/ \t\n") {
		errs = append(errs, fmt.Errorf("hostname: %q must not contain '/' or spaces", c.Hostname))
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("socket: required"))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics_addr: %w", err))
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("log_level: %w", err))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format: %q is not text or json", c.LogFormat))
	}
	if (c.Etcd.Cert == "") != (c.Etcd.Key == "") {
		errs = append(errs, errors.New("etcd: cert and key go together"))
	}
	if c.Etcd.DialTimeout <= 0 || c.Etcd.RequestTimeout <= 0 {
		errs = append(errs, errors.New("etcd: dial_timeout and request_timeout must be positive"))
	}
	if c.Etcd.History < 0 {
		errs = append(errs, errors.New("etcd: history must not be negative"))
	}
	if c.IPAM.UsageRefresh <= 0 {
		errs = append(errs, errors.New("ipam: usage_refresh must be positive"))
	}
	if c.Dataplane.MTU < 0 || c.Dataplane.MTU > 65535 {
		errs = append(errs, fmt.Errorf("dataplane: mtu %d out of range", c.Dataplane.MTU))
	}
	if err := c.Policy.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Docker.Plugin && c.Dataplane.NetNS != "" {
		errs = append(errs, errors.New("docker: the plugin needs the dataplane in petreld's own namespace (no --netns)"))
	}
	return errors.Join(errs...)
}

// NewLogger returns the logger the config asks for, writing to w.
func NewLogger(c Config, w io.Writer) *slog.Logger {
	lvl, err := parseLevel(c.LogLevel)
	if err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// Duration is a time.Duration written as "5s" in JSON and flags.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Set parses a flag value.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "5s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return d.Set(s)
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"5s\" or seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// Main is petreld's entry point: parse args, then Run. It returns the exit
// code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, showVersion, err := ParseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "petreld: %v\n", err)
		return 2
	}
	if showVersion {
		fmt.Fprintln(stdout, "petreld", version.Version)
		return 0
	}
	log := NewLogger(cfg, stderr)
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("petreld failed", "error", err)
		return 1
	}
	return 0
}

// String renders the configuration as JSON, for logs.
func (c Config) String() string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("config: %v", err)
	}
	return string(b)
}
