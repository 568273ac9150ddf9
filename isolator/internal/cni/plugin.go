// Package cni implements the petrel CNI plugin (spec 1.1.0: ADD, DEL, CHECK,
// STATUS, GC, VERSION; configs from 0.1.0 to 1.1.0). It is the plugin the
// Mesos network/cni isolator runs for a network whose config has
// "type": "petrel"; it reads the Mesos NetworkInfo from
// args["org.apache.mesos"].network_info and answers in the version the config
// asks for (0.2.0 gives the ip4/ip6/dns form Mesos parses).
//
// Every address of one attachment is held under the handle
// "<network>:<CNI_CONTAINERID>:<CNI_IFNAME>", so one container can join
// several networks, DEL releases exactly what ADD took, and GC can find the
// attachments of one network.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/isolator/internal/agentclient"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Plugin-specific error codes (100 and up are ours).
const (
	ErrCheckFailed   uint = 100 // CHECK found the interface differs from ADD's result
	ErrAddressInUse  uint = 101 // a static address is held by someone else
	ErrPoolExhausted uint = 102 // no free address
	ErrAgentRejected uint = 103 // petreld refused the request
)

const maxStdin = 1 << 20

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// About is printed on stderr when the plugin runs without CNI_COMMAND.
const About = "petrel CNI plugin: routed IP-per-container networking via petreld"

// Plugin is one invocation of the petrel CNI plugin.
type Plugin struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Dial connects to the agent; nil means agentclient.Dial.
	Dial func(socket string, timeout time.Duration) (*agentclient.Client, error)
	// StatNetns checks that CNI_NETNS exists; nil means os.Stat.
	StatNetns func(path string) error
	// LeaveConnOpen skips closing the agent connection after the command:
	// the binary sets it because it exits right after Run, and the kernel
	// closes the socket then (gRPC's orderly close cost ~0.3 ms of every
	// ADD and DEL).
	LeaveConnOpen bool
}

// errorReply is the CNI error object, with the config's cniVersion.
type errorReply struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

// Run executes the command named by CNI_COMMAND and returns the exit status.
// On failure it prints the CNI error JSON on stdout and returns 1.
func (p *Plugin) Run(ctx context.Context) (code int) {
	ver := "1.1.0"
	defer func() {
		if r := recover(); r != nil {
			p.logf("panic: %v\n%s", r, debug.Stack())
			code = p.fail(ver, types.NewError(types.ErrInternal, "petrel: internal error", fmt.Sprint(r)))
		}
	}()
	e := p.run(ctx, &ver)
	if e != nil {
		return p.fail(ver, e)
	}
	return 0
}

func (p *Plugin) fail(ver string, e *types.Error) int {
	out := errorReply{CNIVersion: ver, Code: e.Code, Msg: e.Msg, Details: e.Details}
	if err := json.NewEncoder(p.Stdout).Encode(out); err != nil {
		p.logf("write error: %v", err)
	}
	return 1
}

func (p *Plugin) logf(format string, a ...any) {
	if p.Stderr != nil {
		fmt.Fprintf(p.Stderr, "petrel: "+format+"\n", a...)
	}
}

// env is the CNI environment of one call.
type env struct {
	cmd  string
	args *skel.CmdArgs
}

func (p *Plugin) readEnv() (*env, *types.Error) {
	e := &env{cmd: p.Getenv("CNI_COMMAND"), args: &skel.CmdArgs{
		ContainerID: p.Getenv("CNI_CONTAINERID"),
		Netns:       p.Getenv("CNI_NETNS"),
		IfName:      p.Getenv("CNI_IFNAME"),
		Args:        p.Getenv("CNI_ARGS"),
		Path:        p.Getenv("CNI_PATH"),
	}}
	var need []string
	switch e.cmd {
	case "ADD", "CHECK":
		need = []string{"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}
	case "DEL":
		need = []string{"CNI_CONTAINERID", "CNI_IFNAME"}
	}
	var missing []string
	for _, k := range need {
		if p.Getenv(k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("required env variables [%s] missing", strings.Join(missing, ",")), "")
	}
	if len(need) > 0 {
		if err := utils.ValidateContainerID(e.args.ContainerID); err != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID: "+err.Msg, err.Details)
		}
		if err := utils.ValidateInterfaceName(e.args.IfName); err != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME: "+err.Msg, err.Details)
		}
	}
	return e, nil
}

func (p *Plugin) run(ctx context.Context, ver *string) *types.Error {
	if p.Getenv("CNI_COMMAND") == "" {
		fmt.Fprintf(p.Stderr, "%s\nCNI protocol versions supported: %s\n", About, strings.Join(Versions.SupportedVersions(), ", "))
		return nil
	}
	if p.Getenv("CNI_COMMAND") == "VERSION" {
		if err := Versions.Encode(p.Stdout); err != nil {
			return types.NewError(types.ErrIOFailure, "write version", err.Error())
		}
		return nil
	}
	e, terr := p.readEnv()
	if terr != nil {
		return terr
	}
	data, err := io.ReadAll(io.LimitReader(p.Stdin, maxStdin+1))
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read stdin", err.Error())
	}
	if len(data) > maxStdin {
		return types.NewError(types.ErrInvalidNetworkConfig, "network configuration too large", fmt.Sprintf("more than %d bytes", maxStdin))
	}
	e.args.StdinData = data
	c, terr := ParseConfig(data)
	if c != nil {
		*ver = c.Version
	}
	if terr != nil {
		return terr
	}
	if terr := checkVersion(e.cmd, c.Version); terr != nil {
		return terr
	}
	switch e.cmd {
	case "ADD", "DEL", "CHECK", "STATUS", "GC":
	default:
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND %q", e.cmd),
			"want ADD, DEL, CHECK, STATUS, GC or VERSION")
	}
	if e.cmd == "ADD" || e.cmd == "CHECK" {
		stat := p.StatNetns
		if stat == nil {
			stat = func(path string) error { _, err := os.Stat(path); return err }
		}
		if err := stat(e.args.Netns); err != nil {
			return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: cannot use "+e.args.Netns, err.Error())
		}
	}
	cl, terr := p.dial(c)
	if terr != nil {
		return terr
	}
	if !p.LeaveConnOpen {
		defer cl.Close()
	}
	switch e.cmd {
	case "ADD":
		return p.add(ctx, cl, c, e.args)
	case "DEL":
		return p.del(ctx, cl, c, e.args)
	case "CHECK":
		return p.check(ctx, cl, c, e.args)
	case "STATUS":
		return p.status(ctx, cl)
	default:
		return p.gc(ctx, cl, c)
	}
}

func checkVersion(cmd, v string) *types.Error {
	if !slices.Contains(Versions.SupportedVersions(), v) {
		return types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions",
			fmt.Sprintf("config is %q, plugin supports %v", v, Versions.SupportedVersions()))
	}
	min := map[string]string{"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}[cmd]
	if min == "" {
		return nil
	}
	ok, err := version.GreaterThanOrEqualTo(v, min)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "bad cniVersion", err.Error())
	}
	if !ok {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("config version %s does not allow %s", v, cmd),
			fmt.Sprintf("%s needs cniVersion %s or later", cmd, min))
	}
	return nil
}

func (p *Plugin) dial(c *Config) (*agentclient.Client, *types.Error) {
	socket, timeout, err := agentclient.Options(p.Getenv)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	if c.Conf.Socket != "" {
		socket = c.Conf.Socket
	}
	if c.Timeout > 0 {
		timeout = c.Timeout
	}
	dial := p.Dial
	if dial == nil {
		dial = agentclient.Dial
	}
	cl, err := dial(socket, timeout)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "cannot reach petreld", err.Error())
	}
	return cl, nil
}

// agentErr maps an agent call's error to a CNI error.
func agentErr(cl *agentclient.Client, op string, err error) *types.Error {
	msg := cl.Describe(op, err)
	if agentclient.IsUnavailable(err) {
		return types.NewError(types.ErrTryAgainLater, "petreld unavailable, try again later", msg)
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return types.NewError(types.ErrInvalidNetworkConfig, "petreld rejected the request", msg)
	case codes.AlreadyExists:
		return types.NewError(ErrAddressInUse, "address already in use", msg)
	case codes.ResourceExhausted:
		return types.NewError(ErrPoolExhausted, "no free address in the pool", msg)
	case codes.NotFound:
		return types.NewError(types.ErrUnknownContainer, "unknown container", msg)
	case codes.FailedPrecondition, codes.PermissionDenied, codes.Unimplemented:
		return types.NewError(ErrAgentRejected, "petreld refused the request", msg)
	}
	return types.NewError(types.ErrInternal, "petreld error", msg)
}

// Handle is the IPAM handle of one CNI attachment.
func Handle(network, containerID, ifname string) string {
	return network + ":" + containerID + ":" + ifname
}

func (p *Plugin) add(ctx context.Context, cl *agentclient.Client, c *Config, a *skel.CmdArgs) (ret *types.Error) {
	want, err := c.Addresses()
	if err != nil {
		return invalid("%v", err)
	}
	handle := Handle(c.Conf.Name, a.ContainerID, a.IfName)
	var ips []string
	// Undo on any failure: release what the handle holds and detach, so
	// nothing is left half-done. A fresh context, so a timed-out call still
	// gets its own deadline for the cleanup.
	attached := false
	defer func() {
		if ret == nil {
			return
		}
		if attached {
			dctx, cancel := cl.Call(context.WithoutCancel(ctx))
			if _, err := cl.Dataplane.Detach(dctx, &petrelv1.DetachRequest{ContainerId: a.ContainerID, Ifname: a.IfName, Netns: a.Netns}); err != nil {
				p.logf("ADD %s: undo attach: %s", a.ContainerID, cl.Describe("Dataplane.Detach", err))
			}
			cancel()
		}
		rctx, cancel := cl.Call(context.WithoutCancel(ctx))
		defer cancel()
		if _, err := cl.IPAM.Release(rctx, &petrelv1.ReleaseRequest{Handle: handle}); err != nil {
			p.logf("ADD %s: undo allocation of %s: %s", a.ContainerID, handle, cl.Describe("IPAM.Release", err))
		}
	}()
	var groups []string
	var labels map[string]string
	networkName := c.Conf.Name
	var ports []*petrelv1.PortMapping
	if m := c.Mesos; m != nil {
		groups, labels = m.Groups, m.Labels
		for _, pm := range m.PortMappings {
			ports = append(ports, &petrelv1.PortMapping{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: pm.Protocol})
		}
	}
	attach := &petrelv1.AttachRequest{
		Endpoint: &petrelv1.Endpoint{
			ContainerId:  a.ContainerID,
			Ifname:       a.IfName,
			Handle:       handle,
			Source:       petrelv1.Source_SOURCE_CNI,
			Netgroups:    groups,
			Labels:       labels,
			NetworkName:  networkName,
			PortMappings: ports,
		},
		Netns: a.Netns,
	}
	alloc := &petrelv1.AllocateRequest{
		Handle: handle, NumIpv4: int32(want.NumIPv4), NumIpv6: int32(want.NumIPv6),
		Pool: c.Conf.Pool, PoolV6: c.Conf.PoolV6, Netgroups: groups, Labels: labels,
	}
	// The common case, addresses from a pool and none static, is one
	// call. An agent that predates Add answers Unimplemented.
	if want.NumIPv4+want.NumIPv6 > 0 && len(want.Static) == 0 {
		attached = true
		cctx, cancel := cl.Call(ctx)
		resp, err := cl.Dataplane.Add(cctx, &petrelv1.AddRequest{Attach: attach, Allocate: alloc})
		cancel()
		if status.Code(err) != codes.Unimplemented {
			if err != nil {
				return agentErr(cl, "Dataplane.Add", err)
			}
			ips = resp.GetEndpoint().GetIps()
			if got := len(ips); got != want.NumIPv4+want.NumIPv6 {
				return types.NewError(types.ErrInternal, "petreld returned the wrong number of addresses",
					fmt.Sprintf("got %d, want %d", got, want.NumIPv4+want.NumIPv6))
			}
			return p.printResult(c, a, ips, resp)
		}
		attached = false
	}
	if want.NumIPv4+want.NumIPv6 > 0 {
		cctx, cancel := cl.Call(ctx)
		resp, err := cl.IPAM.Allocate(cctx, alloc)
		cancel()
		if err != nil {
			return agentErr(cl, "IPAM.Allocate", err)
		}
		if got := len(resp.GetIps()); got != want.NumIPv4+want.NumIPv6 {
			return types.NewError(types.ErrInternal, "petreld returned the wrong number of addresses",
				fmt.Sprintf("got %d, want %d", got, want.NumIPv4+want.NumIPv6))
		}
		ips = append(ips, resp.GetIps()...)
	}
	if len(want.Static) > 0 {
		cctx, cancel := cl.Call(ctx)
		_, err := cl.IPAM.Reserve(cctx, &petrelv1.ReserveRequest{Handle: handle, Ips: want.Static, Netgroups: groups, Labels: labels})
		cancel()
		if err != nil {
			return agentErr(cl, "IPAM.Reserve", err)
		}
		ips = append(slices.Clone(want.Static), ips...)
	}
	// A repeated ADD may see its static addresses counted by the idempotent
	// Allocate too: never list an address twice.
	ips = sortFamilies(dedupe(ips))
	attached = true // from here a failure may have left something behind
	attach.Endpoint.Ips = ips
	cctx, cancel := cl.Call(ctx)
	resp, err := cl.Dataplane.Attach(cctx, attach)
	cancel()
	if err != nil {
		return agentErr(cl, "Dataplane.Attach", err)
	}
	return p.printResult(c, a, ips, resp)
}

// printResult writes the ADD result in the config's CNI version.
func (p *Plugin) printResult(c *Config, a *skel.CmdArgs, ips []string, resp *petrelv1.AttachResponse) *types.Error {
	result, err := buildResult(a, ips, resp, c.Conf.DNS)
	if err != nil {
		return types.NewError(types.ErrInternal, "build result", err.Error())
	}
	out, err := result.GetAsVersion(c.Version)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "cannot express result in cniVersion "+c.Version, err.Error())
	}
	if err := out.PrintTo(p.Stdout); err != nil {
		return types.NewError(types.ErrIOFailure, "write result", err.Error())
	}
	return nil
}

// sortFamilies orders IPv4 before IPv6, keeping the order within a family.
func sortFamilies(ips []string) []string {
	out := slices.Clone(ips)
	slices.SortStableFunc(out, func(a, b string) int {
		return boolInt(strings.Contains(a, ":")) - boolInt(strings.Contains(b, ":"))
	})
	return out
}

func dedupe(ips []string) []string {
	seen := map[string]bool{}
	out := ips[:0:0]
	for _, ip := range ips {
		if !seen[ip] {
			seen[ip] = true
			out = append(out, ip)
		}
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func buildResult(a *skel.CmdArgs, ips []string, resp *petrelv1.AttachResponse, dns types.DNS) (*types100.Result, error) {
	gw4 := net.ParseIP(resp.GetGateway())
	if gw4 == nil {
		gw4 = net.ParseIP("169.254.1.1")
	}
	gw6 := net.ParseIP(resp.GetIpv6Gateway())
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{{
			Name: a.IfName, Mac: resp.GetEndpoint().GetMac(), Mtu: int(resp.GetMtu()), Sandbox: a.Netns,
		}},
		DNS: dns,
	}
	var has4, has6 bool
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("agent address %q: %w", s, err)
		}
		cfg := &types100.IPConfig{Interface: types100.Int(0)}
		if ip.Is4() {
			cfg.Address = net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}
			cfg.Gateway = gw4
			has4 = true
		} else {
			cfg.Address = net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(128, 128)}
			cfg.Gateway = gw6
			has6 = true
		}
		r.IPs = append(r.IPs, cfg)
	}
	if has4 {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw4})
	}
	if has6 {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: gw6})
	}
	return r, nil
}

func (p *Plugin) del(ctx context.Context, cl *agentclient.Client, c *Config, a *skel.CmdArgs) *types.Error {
	detach := &petrelv1.DetachRequest{ContainerId: a.ContainerID, Ifname: a.IfName, Netns: a.Netns}
	handle := Handle(c.Conf.Name, a.ContainerID, a.IfName)
	// One call; an agent that predates Remove answers Unimplemented.
	cctx, cancel := cl.Call(ctx)
	_, err := cl.Dataplane.Remove(cctx, &petrelv1.RemoveRequest{Detach: detach, ReleaseHandle: handle})
	cancel()
	switch code := status.Code(err); code {
	case codes.OK:
		return nil
	case codes.Unimplemented, codes.NotFound:
	default:
		return agentErr(cl, "Dataplane.Remove", err)
	}
	cctx, cancel = cl.Call(ctx)
	_, err = cl.Dataplane.Detach(cctx, detach)
	cancel()
	if err != nil && status.Code(err) != codes.NotFound {
		return agentErr(cl, "Dataplane.Detach", err)
	}
	cctx, cancel = cl.Call(ctx)
	_, err = cl.IPAM.Release(cctx, &petrelv1.ReleaseRequest{Handle: handle})
	cancel()
	if err != nil && status.Code(err) != codes.NotFound {
		return agentErr(cl, "IPAM.Release", err)
	}
	return nil
}

func (p *Plugin) check(ctx context.Context, cl *agentclient.Client, c *Config, a *skel.CmdArgs) *types.Error {
	var ips []string
	if c.Conf.RawPrevResult != nil {
		raw, err := json.Marshal(c.Conf.RawPrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
		}
		prev, err := types100.NewResult(raw)
		if err != nil {
			// older result versions: let libcni convert them.
			res, verr := version.NewResult(c.Version, raw)
			if verr != nil {
				return types.NewError(types.ErrDecodingFailure, "cannot parse prevResult", verr.Error())
			}
			if prev, err = types100.GetResult(res); err != nil {
				return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult", err.Error())
			}
		}
		r100, err := types100.GetResult(prev)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult", err.Error())
		}
		for _, ipc := range r100.IPs {
			ips = append(ips, ipc.Address.IP.String())
		}
	}
	cctx, cancel := cl.Call(ctx)
	defer cancel()
	resp, err := cl.Dataplane.Check(cctx, &petrelv1.CheckRequest{ContainerId: a.ContainerID, Ifname: a.IfName, Netns: a.Netns, Ips: ips})
	if err != nil {
		return agentErr(cl, "Dataplane.Check", err)
	}
	if len(resp.GetProblems()) > 0 {
		return types.NewError(ErrCheckFailed, fmt.Sprintf("container %s %s is not as ADD left it", a.ContainerID, a.IfName),
			strings.Join(resp.GetProblems(), "; "))
	}
	return nil
}

func (p *Plugin) status(ctx context.Context, cl *agentclient.Client) *types.Error {
	cctx, cancel := cl.Call(ctx)
	defer cancel()
	if _, err := cl.Cluster.Status(cctx, &petrelv1.StatusRequest{}); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "petreld not available", cl.Describe("Cluster.Status", err))
	}
	pctx, pcancel := cl.Call(ctx)
	defer pcancel()
	pools, err := cl.IPAM.ListPools(pctx, &petrelv1.ListPoolsRequest{})
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "petreld not available", cl.Describe("IPAM.ListPools", err))
	}
	for _, pl := range pools.GetPools() {
		if !pl.GetDisabled() {
			return nil
		}
	}
	return types.NewError(types.ErrPluginNotAvailable, "no enabled address pool", "add one with petrelctl pool add")
}

// gc removes this network's CNI attachments on this host that are not in
// cni.dev/valid-attachments: their endpoints are detached and their handles
// released, including handles whose ADD died before Attach. It keeps going
// after a failure and reports all failures at the end.
func (p *Plugin) gc(ctx context.Context, cl *agentclient.Client, c *Config) *types.Error {
	valid := map[string]bool{}
	for _, v := range append(slices.Clone(c.Conf.ValidAttachments), c.Conf.OldAttachments...) {
		valid[Handle(c.Conf.Name, v.ContainerID, v.IfName)] = true
	}
	sctx, scancel := cl.Call(ctx)
	st, err := cl.Cluster.Status(sctx, &petrelv1.StatusRequest{})
	scancel()
	if err != nil {
		return agentErr(cl, "Cluster.Status", err)
	}
	lctx, lcancel := cl.Call(ctx)
	eps, err := cl.Dataplane.ListEndpoints(lctx, &petrelv1.ListEndpointsRequest{})
	lcancel()
	if err != nil {
		return agentErr(cl, "Dataplane.ListEndpoints", err)
	}
	actx, acancel := cl.Call(ctx)
	allocs, err := cl.IPAM.ListAllocations(actx, &petrelv1.ListAllocationsRequest{})
	acancel()
	if err != nil {
		return agentErr(cl, "IPAM.ListAllocations", err)
	}
	stale := map[string]bool{}
	var errs []error
	for _, ep := range eps.GetEndpoints() {
		h := Handle(c.Conf.Name, ep.GetContainerId(), ep.GetIfname())
		if ep.GetSource() != petrelv1.Source_SOURCE_CNI || ep.GetNetworkName() != c.Conf.Name || valid[h] {
			continue
		}
		if ep.GetHost() != "" && ep.GetHost() != st.GetHost() {
			continue
		}
		dctx, dcancel := cl.Call(ctx)
		_, err := cl.Dataplane.Detach(dctx, &petrelv1.DetachRequest{ContainerId: ep.GetContainerId(), Ifname: ep.GetIfname()})
		dcancel()
		if err != nil {
			errs = append(errs, errors.New(cl.Describe("Dataplane.Detach "+ep.GetContainerId(), err)))
			continue
		}
		stale[h] = true
		if ep.GetHandle() != "" {
			stale[ep.GetHandle()] = true
		}
	}
	prefix := c.Conf.Name + ":"
	for _, al := range allocs.GetAllocations() {
		h := al.GetHandle()
		if strings.HasPrefix(h, prefix) && !valid[h] && (al.GetHost() == "" || al.GetHost() == st.GetHost()) {
			stale[h] = true
		}
	}
	handles := make([]string, 0, len(stale))
	for h := range stale {
		handles = append(handles, h)
	}
	slices.Sort(handles)
	for _, h := range handles {
		rctx, rcancel := cl.Call(ctx)
		_, err := cl.IPAM.Release(rctx, &petrelv1.ReleaseRequest{Handle: h})
		rcancel()
		if err != nil {
			errs = append(errs, errors.New(cl.Describe("IPAM.Release "+h, err)))
		}
	}
	if len(errs) > 0 {
		return types.NewError(types.ErrTryAgainLater, "garbage collection incomplete", errors.Join(errs...).Error())
	}
	return nil
}
