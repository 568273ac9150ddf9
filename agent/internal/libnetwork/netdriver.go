package libnetwork

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// optNetgroups is the driver option (-o petrel.netgroups=a,b) that puts a
// network's containers into netgroups.
const optNetgroups = "petrel.netgroups"

// Binding is the record of a Docker network bound to a Petrel pool, stored as
// JSON under registry.DockerNetworksPrefix + network ID. Name and Labels are
// filled in later from the Docker API.
type Binding struct {
	NetworkID string            `json:"network_id"`
	Pool      string            `json:"pool"`
	Subnet    string            `json:"subnet"`
	PoolV6    string            `json:"pool_v6,omitempty"`
	SubnetV6  string            `json:"subnet_v6,omitempty"`
	Options   map[string]string `json:"options,omitempty"`
	Netgroups []string          `json:"netgroups,omitempty"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Created   time.Time         `json:"created"`
}

// endpoint is what CreateEndpoint learned, kept until DeleteEndpoint.
type endpoint struct {
	networkID string
	id        string
	ips       []netip.Addr
	handle    string
	mac       string
	hostIf    string
	tempIf    string
	// recordKey is where the dataplane keeps the endpoint record.
	recordKey string
}

// storedEndpoint is what CreateEndpoint persists under
// registry.DockerEndpointKey, so that a Join after an agent restart still
// knows the endpoint's addresses and handle.
type storedEndpoint struct {
	NetworkID string       `json:"network_id"`
	IPs       []netip.Addr `json:"ips"`
	Handle    string       `json:"handle"`
	MAC       string       `json:"mac,omitempty"`
}

func addrsString(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

// endpointIfname is the interface name on endpoint records; Docker renames
// the interface itself (DstPrefix "eth").
const endpointIfname = "eth0"

func (p *Plugin) capabilities(context.Context) (any, error) {
	return capabilitiesResponse{Scope: "local", ConnectivityScope: "global"}, nil
}

// binding returns the network's binding from the cache or etcd.
func (p *Plugin) binding(ctx context.Context, networkID string) (*Binding, error) {
	p.mu.Lock()
	b, ok := p.networks[networkID]
	p.mu.Unlock()
	if ok {
		return b, nil
	}
	raw, err := p.store.Get(ctx, registry.DockerNetworksPrefix+networkID)
	if err != nil {
		return nil, fmt.Errorf("network %s: read binding: %w", networkID, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("network %s: %w (no binding: was it created with -d %s --ipam-driver %s?)", networkID, errNotPetrel, DriverName, DriverName)
	}
	b = &Binding{}
	if err := json.Unmarshal(raw, b); err != nil {
		return nil, fmt.Errorf("network %s: decode binding: %w", networkID, err)
	}
	p.mu.Lock()
	p.networks[networkID] = b
	p.mu.Unlock()
	return b, nil
}

// bindData checks one family's IPAM data and returns its pool and subnet.
func bindData(networkID string, data []IPAMData) (pool, subnet string, err error) {
	if len(data) == 0 {
		return "", "", nil
	}
	if len(data) > 1 {
		return "", "", fmt.Errorf("network %s: %d subnets of one family; Petrel binds one", networkID, len(data))
	}
	d := data[0]
	if d.AddressSpace != localAddressSpace && d.AddressSpace != globalAddressSpace {
		return "", "", fmt.Errorf("network %s: address space %q is not Petrel's: create the network with --ipam-driver %s", networkID, d.AddressSpace, DriverName)
	}
	if len(d.AuxAddresses) > 0 {
		return "", "", fmt.Errorf("network %s: --aux-address is not supported", networkID)
	}
	// The IPAM driver answered this network's RequestPool, so the pool
	// name is recoverable from the subnet only through a lookup; the
	// caller does that.
	pfx, err := netip.ParsePrefix(d.Pool)
	if err != nil {
		return "", "", fmt.Errorf("network %s: pool %q: %w", networkID, d.Pool, err)
	}
	return "", pfx.Masked().String(), nil
}

func (p *Plugin) createNetwork(ctx context.Context, req *CreateNetworkRequest) (any, error) {
	if req.NetworkID == "" {
		return nil, fmt.Errorf("create network: empty NetworkID")
	}
	_, subnet, err := bindData(req.NetworkID, req.IPv4Data)
	if err != nil {
		return nil, err
	}
	_, subnet6, err := bindData(req.NetworkID, req.IPv6Data)
	if err != nil {
		return nil, err
	}
	if subnet == "" {
		return nil, fmt.Errorf("network %s: no IPv4 pool", req.NetworkID)
	}
	opts := genericOptions(req.Options)
	pools, err := p.listPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("network %s: list Petrel pools: %w", req.NetworkID, err)
	}
	b := &Binding{NetworkID: req.NetworkID, Subnet: subnet, SubnetV6: subnet6, Options: opts, Created: p.now().UTC()}
	pl, err := findPool(pools, "", netip.MustParsePrefix(subnet), false)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", req.NetworkID, err)
	}
	b.Pool = pl.Name
	if err := p.ensurePoolRoute(ctx, pl.CIDR); err != nil {
		return nil, fmt.Errorf("network %s: %w", req.NetworkID, err)
	}
	if subnet6 != "" {
		pl6, err := findPool(pools, "", netip.MustParsePrefix(subnet6), true)
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", req.NetworkID, err)
		}
		b.PoolV6 = pl6.Name
		if err := p.ensurePoolRoute(ctx, pl6.CIDR); err != nil {
			return nil, fmt.Errorf("network %s: %w", req.NetworkID, err)
		}
	}
	if ng := opts[optNetgroups]; ng != "" {
		for _, g := range strings.Split(ng, ",") {
			if g = strings.TrimSpace(g); g != "" {
				b.Netgroups = append(b.Netgroups, g)
			}
		}
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("network %s: encode binding: %w", req.NetworkID, err)
	}
	if err := p.store.Put(ctx, registry.DockerNetworksPrefix+req.NetworkID, raw); err != nil {
		return nil, fmt.Errorf("network %s: write binding: %w", req.NetworkID, err)
	}
	p.mu.Lock()
	p.networks[req.NetworkID] = b
	p.mu.Unlock()
	p.resolver.notify(req.NetworkID, "")
	return empty{}, nil
}

// genericOptions flattens the driver options (-o k=v) Docker nests under
// com.docker.network.generic.
func genericOptions(opts map[string]any) map[string]string {
	g, ok := opts[optGeneric].(map[string]any)
	if !ok || len(g) == 0 {
		return nil
	}
	out := make(map[string]string, len(g))
	for k, v := range g {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

func (p *Plugin) deleteNetwork(ctx context.Context, req *NetworkRequest) (any, error) {
	if err := p.store.Delete(ctx, registry.DockerNetworksPrefix+req.NetworkID); err != nil {
		return nil, fmt.Errorf("network %s: delete binding: %w", req.NetworkID, err)
	}
	p.mu.Lock()
	delete(p.networks, req.NetworkID)
	p.mu.Unlock()
	return empty{}, nil
}

func (p *Plugin) allocateNetwork(_ context.Context, _ *AllocateNetworkRequest) (any, error) {
	return allocateNetworkResponse{Options: map[string]string{}}, nil
}

func (p *Plugin) freeNetwork(_ context.Context, _ *NetworkRequest) (any, error) {
	return empty{}, nil
}

func parseIfAddr(s string) (netip.Addr, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Addr(), nil
	}
	return netip.ParseAddr(s)
}

func (p *Plugin) createEndpoint(ctx context.Context, req *CreateEndpointRequest) (any, error) {
	if req.EndpointID == "" {
		return nil, fmt.Errorf("create endpoint in network %s: empty EndpointID", req.NetworkID)
	}
	b, err := p.binding(ctx, req.NetworkID)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", req.EndpointID, err)
	}
	ep := &endpoint{networkID: req.NetworkID, id: req.EndpointID}
	if req.Interface == nil || (req.Interface.Address == "" && req.Interface.AddressIPv6 == "") {
		return nil, fmt.Errorf("endpoint %s: no address from IPAM: use --ipam-driver %s", req.EndpointID, DriverName)
	}
	ep.mac = req.Interface.MacAddress
	for _, s := range []string{req.Interface.Address, req.Interface.AddressIPv6} {
		if s == "" {
			continue
		}
		ip, err := parseIfAddr(s)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: address %q: %w", req.EndpointID, s, err)
		}
		pool := b.Pool
		if ip.Is6() {
			pool = b.PoolV6
		}
		h, err := p.handleOf(ctx, pool, ip)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: address %s: read allocation: %w", req.EndpointID, ip, err)
		}
		if h == "" {
			return nil, fmt.Errorf("endpoint %s: address %s is not allocated in pool %s: %w", req.EndpointID, ip, pool, errNotPetrel)
		}
		if ep.handle == "" {
			ep.handle = h
		}
		ep.ips = append(ep.ips, ip)
	}
	raw, err := json.Marshal(storedEndpoint{NetworkID: ep.networkID, IPs: ep.ips, Handle: ep.handle, MAC: ep.mac})
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: encode: %w", req.EndpointID, err)
	}
	if err := p.store.Put(ctx, registry.DockerEndpointKey(p.host, req.EndpointID), raw); err != nil {
		return nil, fmt.Errorf("endpoint %s: write: %w", req.EndpointID, err)
	}
	p.mu.Lock()
	p.endpoints[req.EndpointID] = ep
	p.mu.Unlock()
	// Docker supplied the interface, so the answer must not carry one.
	return createEndpointResponse{}, nil
}

// lookupEndpoint returns an endpoint from memory or, after an agent
// restart, from the store. ok is false when CreateEndpoint never ran (or
// DeleteEndpoint already did).
func (p *Plugin) lookupEndpoint(ctx context.Context, id string) (ep *endpoint, ok bool, err error) {
	p.mu.Lock()
	ep, ok = p.endpoints[id]
	p.mu.Unlock()
	if ok {
		return ep, true, nil
	}
	raw, err := p.store.Get(ctx, registry.DockerEndpointKey(p.host, id))
	if err != nil || raw == nil {
		return nil, false, err
	}
	var se storedEndpoint
	if err := json.Unmarshal(raw, &se); err != nil {
		return nil, false, fmt.Errorf("endpoint %s: decode stored endpoint: %w", id, err)
	}
	ep = &endpoint{networkID: se.NetworkID, id: id, ips: se.IPs, handle: se.Handle, mac: se.MAC}
	p.mu.Lock()
	if cur, ok := p.endpoints[id]; ok {
		ep = cur
	} else {
		p.endpoints[id] = ep
	}
	p.mu.Unlock()
	return ep, true, nil
}

func (p *Plugin) endpointOperInfo(_ context.Context, req *EndpointRequest) (any, error) {
	v := map[string]string{}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ep, ok := p.endpoints[req.EndpointID]; ok {
		ips := make([]string, len(ep.ips))
		for i, ip := range ep.ips {
			ips[i] = ip.String()
		}
		v["ips"] = strings.Join(ips, ",")
		v["handle"] = ep.handle
		if ep.hostIf != "" {
			v["host_ifname"] = ep.hostIf
		}
	}
	return operInfoResponse{Value: v}, nil
}

func (p *Plugin) join(ctx context.Context, req *JoinRequest) (any, error) {
	ep, ok, err := p.lookupEndpoint(ctx, req.EndpointID)
	if err != nil {
		return nil, fmt.Errorf("join endpoint %s: %w", req.EndpointID, err)
	}
	if !ok {
		return nil, fmt.Errorf("join endpoint %s: unknown endpoint (no CreateEndpoint for it)", req.EndpointID)
	}
	b, err := p.binding(ctx, req.NetworkID)
	if err != nil {
		return nil, fmt.Errorf("join endpoint %s: %w", req.EndpointID, err)
	}
	spec := dataplane.Spec{
		ContainerID:      req.EndpointID,
		IfName:           endpointIfname,
		IPs:              slices.Clone(ep.ips),
		Handle:           ep.handle,
		Source:           petrelv1.Source_SOURCE_DOCKER,
		Netgroups:        b.Netgroups,
		Labels:           b.Labels,
		NetworkName:      b.Name,
		DockerNetworkID:  req.NetworkID,
		DockerEndpointID: req.EndpointID,
		HostSideOnly:     true,
	}
	res, err := p.dp.Attach(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("join endpoint %s (%s): attach: %w", req.EndpointID, addrsString(ep.ips), err)
	}
	if res.TempIfName == "" {
		return nil, fmt.Errorf("join endpoint %s: dataplane returned no temporary interface name", req.EndpointID)
	}
	if err := p.hostNet.FastProxyARP(ctx, res.Endpoint.GetHostIfname()); err != nil {
		_ = p.detach(context.WithoutCancel(ctx), req.EndpointID)
		return nil, fmt.Errorf("join endpoint %s: %w", req.EndpointID, err)
	}
	p.mu.Lock()
	ep.hostIf = res.Endpoint.GetHostIfname()
	ep.tempIf = res.TempIfName
	if e := res.Endpoint; e != nil && e.GetHost() != "" {
		ep.recordKey = registry.EndpointKey(e.GetHost(), e.GetContainerId(), e.GetIfname())
	}
	p.mu.Unlock()

	out := joinResponse{
		InterfaceName:         interfaceName{SrcName: res.TempIfName, DstPrefix: "eth"},
		DisableGatewayService: true,
	}
	for _, ip := range ep.ips {
		if ip.Is4() && out.Gateway == "" {
			gw := res.GatewayV4
			if !gw.IsValid() {
				gw = netip.MustParseAddr(gatewayV4)
			}
			out.Gateway = gw.String()
			out.StaticRoutes = append(out.StaticRoutes, staticRoute{Destination: netip.PrefixFrom(gw, 32).String(), RouteType: routeConnected})
		}
		if ip.Is6() && out.GatewayIPv6 == "" && res.GatewayV6.IsValid() {
			out.GatewayIPv6 = res.GatewayV6.String()
			out.StaticRoutes = append(out.StaticRoutes, staticRoute{Destination: netip.PrefixFrom(res.GatewayV6, 128).String(), RouteType: routeConnected})
		}
	}
	p.resolver.notify(req.NetworkID, req.EndpointID)
	return out, nil
}

// detach removes the endpoint's interfaces, routes and record. Removing
// what is already gone succeeds.
func (p *Plugin) detach(ctx context.Context, endpointID string) error {
	if _, err := p.dp.Detach(ctx, endpointID, "", ""); err != nil {
		return fmt.Errorf("endpoint %s: detach: %w", endpointID, err)
	}
	return nil
}

func (p *Plugin) leave(ctx context.Context, req *EndpointRequest) (any, error) {
	if err := p.detach(ctx, req.EndpointID); err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	return empty{}, nil
}

func (p *Plugin) deleteEndpoint(ctx context.Context, req *EndpointRequest) (any, error) {
	if err := p.detach(ctx, req.EndpointID); err != nil {
		return nil, fmt.Errorf("delete endpoint: %w", err)
	}
	if err := p.store.Delete(ctx, registry.DockerEndpointKey(p.host, req.EndpointID)); err != nil {
		return nil, fmt.Errorf("delete endpoint %s: %w", req.EndpointID, err)
	}
	p.mu.Lock()
	delete(p.endpoints, req.EndpointID)
	p.mu.Unlock()
	return empty{}, nil
}

func (p *Plugin) discover(_ context.Context, _ *DiscoveryRequest) (any, error) {
	return empty{}, nil
}

func (p *Plugin) programExternal(_ context.Context, _ *ExternalConnectivityRequest) (any, error) {
	return empty{}, nil
}

func (p *Plugin) revokeExternal(_ context.Context, _ *EndpointRequest) (any, error) {
	return empty{}, nil
}
