package packaging

import (
	"errors"
	"fmt"
	"strings"
)

// marathonGroup and marathonApp hold the Marathon /v2/groups and /v2/apps
// fields the package uses; decoding with DisallowUnknownFields catches a
// misspelt field.
type marathonGroup struct {
	ID   string        `json:"id"`
	Apps []marathonApp `json:"apps"`
}

type marathonApp struct {
	ID                    string     `json:"id"`
	Cmd                   string     `json:"cmd"`
	Instances             int        `json:"instances"`
	CPUs                  float64    `json:"cpus"`
	Mem                   float64    `json:"mem"`
	Disk                  float64    `json:"disk"`
	User                  string     `json:"user"`
	Constraints           [][]string `json:"constraints"`
	AcceptedResourceRoles []string   `json:"acceptedResourceRoles"`
	Networks              []struct {
		Mode string `json:"mode"`
	} `json:"networks"`
	PortDefinitions []struct {
		Port     int    `json:"port"`
		Protocol string `json:"protocol"`
		Name     string `json:"name"`
	} `json:"portDefinitions"`
	RequirePorts bool `json:"requirePorts"`
	Fetch        []struct {
		URI        string `json:"uri"`
		Extract    bool   `json:"extract"`
		Executable bool   `json:"executable"`
		Cache      bool   `json:"cache"`
	} `json:"fetch"`
	Env          map[string]string `json:"env"`
	HealthChecks []struct {
		Protocol string `json:"protocol"`
		Path     string `json:"path"`
		Command  *struct {
			Value string `json:"value"`
		} `json:"command"`
		PortIndex              int `json:"portIndex"`
		GracePeriodSeconds     int `json:"gracePeriodSeconds"`
		IntervalSeconds        int `json:"intervalSeconds"`
		TimeoutSeconds         int `json:"timeoutSeconds"`
		MaxConsecutiveFailures int `json:"maxConsecutiveFailures"`
	} `json:"healthChecks"`
	UpgradeStrategy *struct {
		MinimumHealthCapacity float64 `json:"minimumHealthCapacity"`
		MaximumOverCapacity   float64 `json:"maximumOverCapacity"`
	} `json:"upgradeStrategy"`
	Labels map[string]string `json:"labels"`
}

// validate applies Marathon's own app checks that a template can break.
func (a marathonApp) validate(group string) error {
	var errs []error
	if !strings.HasPrefix(a.ID, group+"/") {
		errs = append(errs, fmt.Errorf("id %q is not under group %q", a.ID, group))
	}
	for _, seg := range strings.Split(strings.Trim(a.ID, "/"), "/") {
		if seg == "" || strings.Trim(seg, "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" {
			errs = append(errs, fmt.Errorf("id segment %q: Marathon allows lowercase letters, digits, '-' and '.'", seg))
		}
	}
	if a.Cmd == "" {
		errs = append(errs, errors.New("cmd is empty"))
	}
	if a.Instances < 0 || a.CPUs <= 0 || a.Mem <= 0 {
		errs = append(errs, fmt.Errorf("instances %d, cpus %v, mem %v: need instances >= 0 and positive resources", a.Instances, a.CPUs, a.Mem))
	}
	for _, n := range a.Networks {
		if n.Mode != "host" && n.Mode != "container" && n.Mode != "container/bridge" {
			errs = append(errs, fmt.Errorf("network mode %q", n.Mode))
		}
	}
	for _, c := range a.Constraints {
		if len(c) < 2 {
			errs = append(errs, fmt.Errorf("constraint %v needs a field and an operator", c))
		}
	}
	for i, p := range a.PortDefinitions {
		if p.Port < 0 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("portDefinitions[%d]: port %d", i, p.Port))
		}
	}
	for i, hc := range a.HealthChecks {
		switch hc.Protocol {
		case "COMMAND":
			if hc.Command == nil || hc.Command.Value == "" {
				errs = append(errs, fmt.Errorf("healthChecks[%d]: COMMAND without a command", i))
			}
		case "MESOS_HTTP", "HTTP", "MESOS_TCP", "TCP":
			if hc.PortIndex >= len(a.PortDefinitions) {
				errs = append(errs, fmt.Errorf("healthChecks[%d]: portIndex %d without a port definition", i, hc.PortIndex))
			}
		default:
			errs = append(errs, fmt.Errorf("healthChecks[%d]: protocol %q", i, hc.Protocol))
		}
	}
	for i, f := range a.Fetch {
		if !strings.HasPrefix(f.URI, "https://") {
			errs = append(errs, fmt.Errorf("fetch[%d]: uri %q is not https", i, f.URI))
		}
	}
	return errors.Join(errs...)
}
