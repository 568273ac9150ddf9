package launcher

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os/exec"
)

// NetModules runs the net-modules call sequence against one command (used as
// both ipam_command and isolator_command, as Petrel's modules.json does).
type NetModules struct {
	// Command is the path of petrel-netmodules.
	Command string
	// Env is the agent's environment (net-modules passes all of it).
	Env []string
	// Hostname is SlaveInfo.hostname ("" without the NetworkHook).
	Hostname string
}

// Container is one container launched through net-modules.
type Container struct {
	ContainerID string
	UID         string
	IPs         []string
	Netgroups   []string
	Labels      []Label
}

// Call runs the command once: compact JSON on stdin (closed after), stdout
// read to EOF; the exit status is ignored, as in net-modules. It returns the
// reply, or an error when stdout is not a JSON object or "error" is not null.
func (n *NetModules) Call(ctx context.Context, req any) (map[string]any, error) {
	in, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, n.Command)
	cmd.Env = n.Env
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run() // exit status ignored, like net-modules' waitpid(..., NULL, 0)
	out := stdout.Bytes()
	if len(out) == 0 {
		return nil, fmt.Errorf("got no response (stderr %q)", stderr.String())
	}
	if len(out) > 10*4096 {
		out = out[:10*4096]
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("error parsing output '%s' to JSON: %w", out, err)
	}
	if e, ok := m["error"]; ok && e != nil {
		return m, fmt.Errorf("%s returned error: %v", n.Command, e)
	}
	return m, nil
}

// UUID returns a random RFC 4122 version 4 UUID.
func UUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Prepare is NetworkIsolator::prepare: validate the NetworkInfo, reserve the
// static addresses and allocate the automatic ones under one fresh uid.
func (n *NetModules) Prepare(ctx context.Context, containerID string, infos []NetworkInfo) (*Container, error) {
	if len(infos) == 0 {
		return nil, fmt.Errorf("no NetworkInfo: host networking")
	}
	if len(infos) > 1 {
		return nil, fmt.Errorf("NetworkIsolator:: multiple NetworkInfos are not supported.")
	}
	ni := infos[0]
	var static []string
	auto := 0
	for _, a := range ni.IPAddresses {
		switch {
		case a.IPAddress != "" && a.Protocol != "":
			return nil, fmt.Errorf("NetworkIsolator: Cannot include both ip_address and protocol in a request.")
		case a.Protocol == "IPv6":
			return nil, fmt.Errorf("NetworkIsolator: IPv6 is not supported at this time.")
		case a.IPAddress != "":
			static = append(static, a.IPAddress)
		default:
			auto++
		}
	}
	if len(static)+auto == 0 {
		return nil, fmt.Errorf("NetworkIsolator: Container requires at least one IP address.")
	}
	c := &Container{ContainerID: containerID, UID: UUID(), Netgroups: ni.Groups}
	if ni.Labels != nil {
		c.Labels = ni.Labels.Labels
	}
	if len(static) > 0 {
		args := map[string]any{"hostname": n.Hostname, "ipv4_addrs": static, "uid": c.UID}
		n.decorate(args, c)
		if _, err := n.Call(ctx, map[string]any{"command": "reserve", "args": args}); err != nil {
			return nil, fmt.Errorf("Error reserving IPs with IPAM: %w", err)
		}
		c.IPs = append(c.IPs, static...)
	}
	if auto > 0 {
		args := map[string]any{"hostname": n.Hostname, "num_ipv4": auto, "num_ipv6": 0, "uid": c.UID}
		n.decorate(args, c)
		m, err := n.Call(ctx, map[string]any{"command": "allocate", "args": args})
		if err != nil {
			return nil, fmt.Errorf("Error allocating IP from IPAM: %w", err)
		}
		l, _ := m["ipv4"].([]any)
		if len(l) == 0 {
			return nil, fmt.Errorf("No IPv4 addresses received from IPAM.")
		}
		for _, v := range l {
			s, _ := v.(string)
			c.IPs = append(c.IPs, s)
		}
	}
	return c, nil
}

// decorate adds netgroups and labels, omitted when empty (as stout does).
func (n *NetModules) decorate(args map[string]any, c *Container) {
	if len(c.Netgroups) > 0 {
		args["netgroups"] = c.Netgroups
	}
	if len(c.Labels) > 0 {
		args["labels"] = c.Labels
	}
}

// Isolate is NetworkIsolator::isolate: the container's first process pid
// already lives in the new network namespace.
func (n *NetModules) Isolate(ctx context.Context, c *Container, pid int) error {
	args := map[string]any{"hostname": n.Hostname, "container_id": c.ContainerID, "pid": pid, "ipv4_addrs": c.IPs}
	n.decorate(args, c)
	if _, err := n.Call(ctx, map[string]any{"command": "isolate", "args": args}); err != nil {
		return fmt.Errorf("Error running isolate command: %w", err)
	}
	return nil
}

// Cleanup is NetworkIsolator::cleanup: release by ips, then (only if that
// worked) cleanup.
func (n *NetModules) Cleanup(ctx context.Context, c *Container) error {
	if len(c.IPs) > 0 {
		if _, err := n.Call(ctx, map[string]any{"command": "release", "args": map[string]any{"ips": c.IPs}}); err != nil {
			return fmt.Errorf("Error releasing IP from IPAM: %w", err)
		}
	}
	if _, err := n.Call(ctx, map[string]any{"command": "cleanup", "args": map[string]any{"hostname": n.Hostname, "container_id": c.ContainerID}}); err != nil {
		return fmt.Errorf("Error doing cleanup:%w", err)
	}
	return nil
}
