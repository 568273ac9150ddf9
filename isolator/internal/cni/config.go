package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
)

// maxAddresses bounds the addresses one ADD may ask for.
const maxAddresses = 64

// MesosKey is the single key (not a dotted path) under "args" where the Mesos
// network/cni isolator puts the NetworkInfo.
const MesosKey = "org.apache.mesos"

// NetConf is the petrel network configuration.
type NetConf struct {
	types.PluginConf
	// Socket is petreld's unix socket; "" means $PETREL_SOCKET or the default.
	Socket string `json:"socket,omitempty"`
	// Pool and PoolV6 name the pools (name or CIDR); "" means the default.
	Pool   string `json:"pool,omitempty"`
	PoolV6 string `json:"pool_v6,omitempty"`
	// IPv6 is true (one IPv6 address) or a number of IPv6 addresses per ADD.
	IPv6 json.RawMessage `json:"ipv6,omitempty"`
	// Timeout bounds each agent call: "10s" or a number of seconds.
	Timeout json.RawMessage `json:"timeout,omitempty"`
	// Args holds runtime arguments; Mesos fills args["org.apache.mesos"].
	Args map[string]json.RawMessage `json:"args,omitempty"`
	// OldAttachments is the key libcni also sets for GC (spelled
	// "cni.dev/attachments" in an early draft of the 1.1 spec).
	OldAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// Config is a decoded and validated NetConf.
type Config struct {
	Conf    *NetConf
	Version string // cniVersion, "0.1.0" when absent
	NumV6   int    // from "ipv6"
	Timeout time.Duration
	Mesos   *NetworkInfo // nil without Mesos args
}

// NetworkInfo is the part of Mesos' NetworkInfo petrel uses.
type NetworkInfo struct {
	Name         string
	Groups       []string
	Labels       map[string]string
	IPAddresses  []IPAddress
	PortMappings []PortMapping
}

// IPAddress is one requested address: IP set means static.
type IPAddress struct {
	IPv6 bool
	IP   string
}

// PortMapping is a Mesos port mapping.
type PortMapping struct {
	HostPort      uint32
	ContainerPort uint32
	Protocol      string
}

func invalid(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, "invalid petrel network configuration", fmt.Sprintf(format, a...))
}

// ParseConfig decodes and validates the network configuration from stdin.
func ParseConfig(data []byte) (*Config, *types.Error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode network configuration", err.Error())
	}
	c := &Config{Conf: conf, Version: conf.CNIVersion}
	if c.Version == "" {
		c.Version = "0.1.0"
	}
	if conf.Name == "" {
		return nil, invalid("name: missing")
	}
	if e := utils.ValidateNetworkName(conf.Name); e != nil {
		return nil, invalid("name: %s", e.Msg)
	}
	if conf.Type != "" && conf.Type != "petrel" {
		return nil, invalid("type: %q, want \"petrel\"", conf.Type)
	}
	if strings.ContainsRune(conf.Name, ':') {
		return nil, invalid("name: must not contain ':'")
	}
	n, err := parseIPv6(conf.IPv6)
	if err != nil {
		return nil, invalid("ipv6: %v", err)
	}
	c.NumV6 = n
	if c.Timeout, err = parseTimeout(conf.Timeout); err != nil {
		return nil, invalid("timeout: %v", err)
	}
	if raw, ok := conf.Args[MesosKey]; ok && !isNull(raw) {
		if c.Mesos, err = parseMesos(raw); err != nil {
			return nil, invalid("args[%q].%v", MesosKey, err)
		}
	}
	return c, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func parseIPv6(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || isNull(raw) {
		return 0, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		if b {
			return 1, nil
		}
		return 0, nil
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return 0, fmt.Errorf("want true, false or a number of addresses, got %s", raw)
	}
	v, err := strconv.Atoi(n.String())
	if err != nil || v < 0 || v > maxAddresses {
		return 0, fmt.Errorf("want a number of addresses from 0 to %d, got %s", maxAddresses, raw)
	}
	return v, nil
}

func parseTimeout(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || isNull(raw) {
		return 0, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return 0, fmt.Errorf("want a duration such as \"10s\" or seconds, got %s", raw)
		}
		s = n.String()
	}
	return agentclient.ParseTimeout(s)
}

// wire forms of Mesos' NetworkInfo as stout serialises it.
type wireNetworkInfo struct {
	Name         string            `json:"name"`
	Groups       []string          `json:"groups"`
	Labels       json.RawMessage   `json:"labels"`
	IPAddresses  []wireIPAddress   `json:"ip_addresses"`
	PortMappings []wirePortMapping `json:"port_mappings"`
}

type wireIPAddress struct {
	Protocol  json.RawMessage `json:"protocol"`
	IPAddress string          `json:"ip_address"`
}

type wirePortMapping struct {
	HostPort      *uint32 `json:"host_port"`
	ContainerPort *uint32 `json:"container_port"`
	Protocol      string  `json:"protocol"`
}

type wireLabel struct {
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

func parseMesos(raw json.RawMessage) (*NetworkInfo, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf(": must be an object {\"network_info\": {...}}: %v", err)
	}
	niRaw, ok := m["network_info"]
	if !ok || isNull(niRaw) {
		return nil, fmt.Errorf("network_info: missing")
	}
	var w wireNetworkInfo
	if err := json.Unmarshal(niRaw, &w); err != nil {
		return nil, fmt.Errorf("network_info: %v", err)
	}
	ni := &NetworkInfo{Name: w.Name, Groups: w.Groups}
	for i, g := range w.Groups {
		if g == "" {
			return nil, fmt.Errorf("network_info.groups[%d]: empty", i)
		}
	}
	labels, err := parseLabels(w.Labels)
	if err != nil {
		return nil, fmt.Errorf("network_info.labels%v", err)
	}
	ni.Labels = labels
	if len(w.IPAddresses) > maxAddresses {
		return nil, fmt.Errorf("network_info.ip_addresses: at most %d entries, got %d", maxAddresses, len(w.IPAddresses))
	}
	for i, a := range w.IPAddresses {
		ip := IPAddress{}
		switch p := strings.Trim(strings.TrimSpace(string(a.Protocol)), `"`); p {
		case "", "null", "IPv4", "1":
		case "IPv6", "2":
			ip.IPv6 = true
		default:
			return nil, fmt.Errorf("network_info.ip_addresses[%d].protocol: want \"IPv4\" or \"IPv6\", got %s", i, a.Protocol)
		}
		if a.IPAddress != "" {
			addr, err := netip.ParseAddr(a.IPAddress)
			if err != nil || addr.Zone() != "" {
				return nil, fmt.Errorf("network_info.ip_addresses[%d].ip_address: not an IP address: %q", i, a.IPAddress)
			}
			addr = addr.Unmap()
			if addr.IsUnspecified() || addr.IsLoopback() || addr.IsMulticast() || addr.IsLinkLocalUnicast() {
				return nil, fmt.Errorf("network_info.ip_addresses[%d].ip_address: %s cannot be a container address", i, addr)
			}
			ip.IP = addr.String()
			ip.IPv6 = addr.Is6()
		}
		ni.IPAddresses = append(ni.IPAddresses, ip)
	}
	for i, pm := range w.PortMappings {
		if pm.HostPort == nil || pm.ContainerPort == nil {
			return nil, fmt.Errorf("network_info.port_mappings[%d]: host_port and container_port are required", i)
		}
		if *pm.HostPort > 65535 || *pm.ContainerPort > 65535 {
			return nil, fmt.Errorf("network_info.port_mappings[%d]: port out of range", i)
		}
		proto := strings.ToLower(pm.Protocol)
		switch proto {
		case "":
			proto = "tcp"
		case "tcp", "udp":
		default:
			return nil, fmt.Errorf("network_info.port_mappings[%d].protocol: want tcp or udp, got %q", i, pm.Protocol)
		}
		ni.PortMappings = append(ni.PortMappings, PortMapping{HostPort: *pm.HostPort, ContainerPort: *pm.ContainerPort, Protocol: proto})
	}
	return ni, nil
}

// parseLabels accepts Mesos' {"labels":[{"key","value"}]} and, defensively, a
// bare list or a plain {"k":"v"} object. The error text starts with the
// sub-path so the caller can prefix the field name.
func parseLabels(raw json.RawMessage) (map[string]string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || isNull(t) {
		return nil, nil
	}
	list := t
	if t[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(t, &obj); err != nil {
			return nil, fmt.Errorf(": %v", err)
		}
		inner, ok := obj["labels"]
		if !ok || len(obj) != 1 || (len(bytes.TrimSpace(inner)) > 0 && bytes.TrimSpace(inner)[0] == '"') {
			out := map[string]string{}
			for k, v := range obj {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					return nil, fmt.Errorf(".%s: label value must be a string", k)
				}
				out[k] = s
			}
			return out, nil
		}
		if isNull(inner) {
			return nil, nil
		}
		list = inner
	}
	var ls []wireLabel
	if err := json.Unmarshal(list, &ls); err != nil {
		return nil, fmt.Errorf(": want {\"labels\":[{\"key\",\"value\"}]}: %v", err)
	}
	out := make(map[string]string, len(ls))
	for i, l := range ls {
		if l.Key == nil || *l.Key == "" {
			return nil, fmt.Errorf(".labels[%d].key: missing", i)
		}
		v := ""
		if l.Value != nil {
			v = *l.Value
		}
		out[*l.Key] = v
	}
	return out, nil
}

// Request is what one ADD asks the agent for.
type Request struct {
	Static  []string // static addresses, IPv4 first
	NumIPv4 int
	NumIPv6 int
}

// Addresses works out the addresses to request: every Mesos IPAddress with an
// ip_address is static, every other one is one automatic address of its
// protocol; without Mesos ip_addresses, one IPv4 address. "ipv6" in the config
// adds IPv6 addresses.
func (c *Config) Addresses() (Request, error) {
	var r Request
	var v6 []string
	if c.Mesos == nil || len(c.Mesos.IPAddresses) == 0 {
		r.NumIPv4 = 1
	} else {
		for _, a := range c.Mesos.IPAddresses {
			switch {
			case a.IP != "" && a.IPv6:
				v6 = append(v6, a.IP)
			case a.IP != "":
				r.Static = append(r.Static, a.IP)
			case a.IPv6:
				r.NumIPv6++
			default:
				r.NumIPv4++
			}
		}
	}
	r.Static = append(r.Static, v6...)
	r.NumIPv6 += c.NumV6
	if n := len(r.Static) + r.NumIPv4 + r.NumIPv6; n > maxAddresses {
		return Request{}, fmt.Errorf("at most %d addresses per interface, got %d", maxAddresses, n)
	}
	return r, nil
}
