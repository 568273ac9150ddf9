// Package launcher plays the Mesos agent for the framework tests: it turns a
// Marathon app definition into the NetworkInfo Mesos builds from it, and runs
// the exact call sequence of a Mesos agent against the Petrel shims, either
// mesosphere/net-modules (Protocol A: reserve/allocate, isolate, release,
// cleanup) or the network/cni isolator (Protocol B: ADD with
// args["org.apache.mesos"], DEL), the latter through libcni.
package launcher

import (
	"encoding/json"
	"fmt"
	"sort"
)

// NetworkInfo mirrors mesos.NetworkInfo with stout's JSON names.
type NetworkInfo struct {
	IPAddresses  []IPAddress   `json:"ip_addresses,omitempty"`
	Name         string        `json:"name,omitempty"`
	Groups       []string      `json:"groups,omitempty"`
	Labels       *Labels       `json:"labels,omitempty"`
	PortMappings []PortMapping `json:"port_mappings,omitempty"`
}

// IPAddress is a requested address: empty = one automatic address.
type IPAddress struct {
	Protocol  string `json:"protocol,omitempty"`
	IPAddress string `json:"ip_address,omitempty"`
}

// Labels is mesos.Labels.
type Labels struct {
	Labels []Label `json:"labels"`
}

// Label is mesos.Label; Value is omitted when unset.
type Label struct {
	Key   string  `json:"key"`
	Value *string `json:"value,omitempty"`
}

// PortMapping is mesos.NetworkInfo.PortMapping.
type PortMapping struct {
	HostPort      uint32 `json:"host_port"`
	ContainerPort uint32 `json:"container_port"`
	Protocol      string `json:"protocol,omitempty"`
}

// DiscoveryPort is a port Marathon puts in TaskInfo.discovery (not in the
// NetworkInfo) with label network-scope=container.
type DiscoveryPort struct {
	Number   uint32 `json:"number"`
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
}

// App is the part of a Marathon app definition that shapes networking.
type App struct {
	ID        string `json:"id"`
	Cmd       string `json:"cmd"`
	Instances int    `json:"instances"`
	IPAddress *struct {
		Groups      []string          `json:"groups"`
		Labels      map[string]string `json:"labels"`
		NetworkName string            `json:"networkName"`
		Discovery   *struct {
			Ports []DiscoveryPort `json:"ports"`
		} `json:"discovery"`
	} `json:"ipAddress"`
	Networks []struct {
		Mode   string            `json:"mode"`
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"networks"`
	Labels    map[string]string `json:"labels"`
	Container *struct {
		Type   string `json:"type"`
		Docker *struct {
			Image string `json:"image"`
		} `json:"docker"`
		PortMappings []struct {
			ContainerPort uint32   `json:"containerPort"`
			HostPort      *uint32  `json:"hostPort"`
			Name          string   `json:"name"`
			Protocol      string   `json:"protocol"`
			NetworkNames  []string `json:"networkNames"`
		} `json:"portMappings"`
	} `json:"container"`
}

// ParseApp decodes a Marathon app definition.
func ParseApp(data []byte) (*App, error) {
	app := &App{}
	if err := json.Unmarshal(data, app); err != nil {
		return nil, fmt.Errorf("marathon app: %w", err)
	}
	if app.IPAddress == nil && len(app.Networks) == 0 {
		return nil, fmt.Errorf("marathon app %s: neither ipAddress nor networks", app.ID)
	}
	return app, nil
}

func labels(m map[string]string) *Labels {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	l := &Labels{}
	for _, k := range keys {
		v := m[k]
		l.Labels = append(l.Labels, Label{Key: k, Value: &v})
	}
	return l
}

// NetworkInfos returns the NetworkInfos Marathon and Mesos build for one task
// of the app. ipAddress form (Marathon 0.14-1.4): one NetworkInfo with the
// groups, labels and one empty IPAddress ("any address"); discovery ports are
// not part of it. networks form (Marathon 1.5+, MESOS containerizer): one
// NetworkInfo per container network with {protocol: IPv4}, labels, name and
// the port mappings that have a host port and name this network (or none);
// hostPort 0 is given a port from 31000 up, as an offer would.
func (a *App) NetworkInfos() []NetworkInfo {
	if a.IPAddress != nil {
		ni := NetworkInfo{
			IPAddresses: []IPAddress{{}},
			Name:        a.IPAddress.NetworkName,
			Groups:      a.IPAddress.Groups,
			Labels:      labels(a.IPAddress.Labels),
		}
		return []NetworkInfo{ni}
	}
	var out []NetworkInfo
	next := uint32(31000)
	for _, n := range a.Networks {
		if n.Mode != "container" {
			continue
		}
		ni := NetworkInfo{IPAddresses: []IPAddress{{Protocol: "IPv4"}}, Name: n.Name, Labels: labels(n.Labels)}
		if a.Container != nil {
			for _, pm := range a.Container.PortMappings {
				if pm.HostPort == nil {
					continue
				}
				if len(pm.NetworkNames) > 0 && !contains(pm.NetworkNames, n.Name) {
					continue
				}
				hp := *pm.HostPort
				if hp == 0 {
					hp = next
					next++
				}
				proto := pm.Protocol
				if proto == "" {
					proto = "tcp"
				}
				ni.PortMappings = append(ni.PortMappings, PortMapping{HostPort: hp, ContainerPort: pm.ContainerPort, Protocol: proto})
			}
		}
		out = append(out, ni)
	}
	return out
}

// DiscoveryPorts returns the ipAddress form's discovery ports.
func (a *App) DiscoveryPorts() []DiscoveryPort {
	if a.IPAddress == nil || a.IPAddress.Discovery == nil {
		return nil
	}
	return a.IPAddress.Discovery.Ports
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
