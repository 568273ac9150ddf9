// Package config reads a mesos-dns config.json: the same keys (matched
// case-insensitively), the same defaults and the same validation, plus the
// "petrel" IP source.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Credentials are the Mesos basic-auth credentials.
type Credentials struct {
	Principal string
	Secret    string
}

// Config mirrors the mesos-dns Config struct. Its Go field names are the JSON
// keys /v1/config prints, as mesos-dns does.
type Config struct {
	Masters                []string
	Zk                     string
	ZkDetectionTimeout     int
	RefreshSeconds         int
	StateTimeoutSeconds    int
	TTL                    int32
	Port                   int
	Domain                 string
	Resolvers              []string
	ZoneResolvers          map[string][]string
	Timeout                int
	Listener               string
	HTTPListener           string
	HttpPort               int  `json:"HttpPort"` //nolint:revive // mesos-dns key
	DnsOn                  bool `json:"DnsOn"`    //nolint:revive // mesos-dns key
	HttpOn                 bool `json:"HttpOn"`   //nolint:revive // mesos-dns key
	ExternalOn             bool
	RecurseOn              bool
	SOAMname               string
	SOARname               string
	SOASerial              uint32
	SOARefresh             uint32
	SOARetry               uint32
	SOAExpire              uint32
	SOAMinttl              uint32
	IPSources              []string
	EnforceRFC952          bool
	SetTruncateBit         bool
	EnumerationOn          bool
	MesosHTTPSOn           bool
	CACertFile             string
	CertFile               string
	KeyFile                string
	MesosCredentials       Credentials
	IAMConfigFile          string
	MesosAuthentication    string
	File                   string
	SRVRecordDefaultWeight uint16
}

// Default returns the mesos-dns defaults.
func Default() *Config {
	return &Config{
		ZkDetectionTimeout:  30,
		RefreshSeconds:      60,
		StateTimeoutSeconds: 300,
		TTL:                 60,
		Port:                53,
		Domain:              "mesos",
		// mesos-dns defaults to a public resolver; petrel-dns forwards
		// nowhere unless resolvers are configured (see dns/README.md).
		Resolvers:              nil,
		ZoneResolvers:          map[string][]string{},
		Timeout:                5,
		Listener:               "0.0.0.0",
		HTTPListener:           "0.0.0.0",
		HttpPort:               8123,
		DnsOn:                  true,
		HttpOn:                 true,
		ExternalOn:             true,
		RecurseOn:              true,
		SOAMname:               "ns1.mesos",
		SOARname:               "root.ns1.mesos",
		SOARefresh:             60,
		SOARetry:               600,
		SOAExpire:              86400,
		SOAMinttl:              60,
		IPSources:              []string{"netinfo", "mesos", "host"},
		SetTruncateBit:         true,
		EnumerationOn:          true,
		SRVRecordDefaultWeight: 1,
	}
}

// ValidSources are the accepted IPSources entries. "petrel" (the endpoint
// registry) is ours; the others are mesos-dns's.
var ValidSources = []string{"petrel", "netinfo", "mesos", "docker", "host"}

var domainRE = regexp.MustCompile(`^[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*$`)

// Parse reads a config.json over the defaults and validates it. file is
// recorded in File.
func Parse(r io.Reader, file string) (*Config, error) {
	return ParseWith(r, file, nil)
}

// ParseWith is Parse with command-line overrides applied after the file and
// before validation. A nil r means no file: the defaults.
func ParseWith(r io.Reader, file string, override func(*Config)) (*Config, error) {
	c := Default()
	if r != nil {
		if err := json.NewDecoder(r).Decode(c); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
	}
	c.File = file
	if override != nil {
		override(c)
	}
	if err := c.normalize(); err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

func (c *Config) normalize() error {
	c.Domain = strings.ToLower(c.Domain)
	if !domainRE.MatchString(c.Domain) {
		return fmt.Errorf("invalid domain %q", c.Domain)
	}
	if !c.DnsOn && !c.HttpOn {
		return errors.New("either DNS or HTTP server must be enabled")
	}
	if len(c.Masters) == 0 {
		if c.Zk != "" {
			return errors.New("zk master detection is not supported by petrel-dns: list the masters in \"masters\"")
		}
		return errors.New("\"masters\" is required")
	}
	seen := map[string]bool{}
	for _, m := range c.Masters {
		if _, _, err := net.SplitHostPort(m); err != nil {
			return fmt.Errorf("invalid master %q: %w", m, err)
		}
		if seen[m] {
			return fmt.Errorf("duplicate master %q", m)
		}
		seen[m] = true
	}
	if c.RefreshSeconds <= 0 {
		return fmt.Errorf("refreshSeconds must be > 0, got %d", c.RefreshSeconds)
	}
	if c.StateTimeoutSeconds <= 0 {
		return fmt.Errorf("stateTimeoutSeconds must be > 0, got %d", c.StateTimeoutSeconds)
	}
	if c.TTL < 0 {
		return fmt.Errorf("ttl must be >= 0, got %d", c.TTL)
	}
	if c.Timeout <= 0 {
		c.Timeout = 5
	}
	if len(c.IPSources) == 0 {
		return errors.New("IPSources must not be empty")
	}
	srcSeen := map[string]bool{}
	for _, s := range c.IPSources {
		if !slices.Contains(ValidSources, s) {
			return fmt.Errorf("invalid IPSources entry %q (want one of %v)", s, ValidSources)
		}
		if srcSeen[s] {
			return fmt.Errorf("duplicate IPSources entry %q", s)
		}
		srcSeen[s] = true
	}
	if c.ExternalOn {
		for i, r := range c.Resolvers {
			a, err := ResolverAddr(r)
			if err != nil {
				return err
			}
			c.Resolvers[i] = a
		}
		for z, rs := range c.ZoneResolvers {
			lz := strings.ToLower(strings.TrimSuffix(z, "."))
			if lz == c.Domain || strings.HasSuffix(c.Domain, "."+lz) || strings.HasSuffix(lz, "."+c.Domain) {
				return fmt.Errorf("zoneResolvers zone %q overlaps domain %q", z, c.Domain)
			}
			for i, r := range rs {
				a, err := ResolverAddr(r)
				if err != nil {
					return err
				}
				rs[i] = a
			}
		}
	}
	c.SOAMname = fqdn(strings.ToLower(c.SOAMname))
	c.SOARname = fqdn(strings.ReplaceAll(strings.ToLower(c.SOARname), "@", "."))
	if c.SOASerial == 0 {
		c.SOASerial = uint32(time.Now().Unix())
	}
	return nil
}

// Sources returns IPSources with "petrel" in front when the operator did not
// place it: registry addresses are the container's own routable addresses.
func (c *Config) Sources() []string {
	if slices.Contains(c.IPSources, "petrel") {
		return slices.Clone(c.IPSources)
	}
	return append([]string{"petrel"}, c.IPSources...)
}

// ResolverAddr validates "ip" or "ip:port" and returns "ip:port".
func ResolverAddr(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", fmt.Errorf("invalid resolver %q: want ip or ip:port", s)
	}
	return ap.String(), nil
}

func fqdn(s string) string {
	if strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// Redacted returns a copy safe to print: secrets are replaced.
func (c *Config) Redacted() *Config {
	r := *c
	if r.MesosCredentials.Secret != "" {
		r.MesosCredentials.Secret = "<redacted>"
	}
	return &r
}

// DNSAddr is the DNS listen address.
func (c *Config) DNSAddr() string { return net.JoinHostPort(c.Listener, strconv.Itoa(c.Port)) }

// HTTPAddr is the HTTP listen address.
func (c *Config) HTTPAddr() string {
	return net.JoinHostPort(c.HTTPListener, strconv.Itoa(c.HttpPort))
}
