package libnetwork

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/registry"
)

// handlePrefix starts every IPAM handle the Docker path creates.
const handlePrefix = "docker-"

// poolID is the self-describing IPAM pool ID "petrel:<pool>:<subnet>".
type poolID struct {
	Pool   string
	Subnet netip.Prefix
}

func (p poolID) String() string { return "petrel:" + p.Pool + ":" + p.Subnet.String() }

func parsePoolID(s string) (poolID, error) {
	rest, ok := strings.CutPrefix(s, "petrel:")
	name, subnet, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || name == "" {
		return poolID{}, fmt.Errorf("pool ID %q is not a Petrel pool ID", s)
	}
	pfx, err := netip.ParsePrefix(subnet)
	if err != nil {
		return poolID{}, fmt.Errorf("pool ID %q: %w", s, err)
	}
	return poolID{Pool: name, Subnet: pfx}, nil
}

func (p *Plugin) ipamCapabilities(context.Context) (any, error) {
	return ipamCapabilitiesResponse{}, nil
}

func (p *Plugin) addressSpaces(context.Context) (any, error) {
	return addressSpacesResponse{
		LocalDefaultAddressSpace:  localAddressSpace,
		GlobalDefaultAddressSpace: globalAddressSpace,
	}, nil
}

// pool is a Petrel pool as the drivers see it.
type pool struct {
	Name     string
	CIDR     netip.Prefix
	Disabled bool
}

// listPools returns the IPAM's pools with parsed CIDRs (unparsable ones are
// skipped: the IPAM validated them when they were added).
func (p *Plugin) listPools(ctx context.Context) ([]pool, error) {
	ps, err := p.ipam.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]pool, 0, len(ps))
	for _, pl := range ps {
		pfx, err := netip.ParsePrefix(pl.CIDR)
		if err != nil {
			continue
		}
		out = append(out, pool{Name: pl.Name, CIDR: pfx.Masked(), Disabled: pl.Disabled})
	}
	return out, nil
}

// findPool picks the Petrel pool for a Docker pool request: the one named by
// the petrel.pool option, the one equal to or containing subnet, or the
// only pool of the family.
func findPool(pools []pool, name string, subnet netip.Prefix, v6 bool) (pool, error) {
	var family []pool
	for _, pl := range pools {
		if pl.Disabled || pl.CIDR.Addr().Is6() != v6 {
			continue
		}
		family = append(family, pl)
	}
	if name != "" {
		for _, pl := range family {
			if pl.Name != name {
				continue
			}
			if subnet.IsValid() && !contains(pl.CIDR, subnet) {
				return pool{}, fmt.Errorf("subnet %s is not inside pool %s (%s)", subnet, name, pl.CIDR)
			}
			return pl, nil
		}
		return pool{}, fmt.Errorf("no enabled IPv%s pool named %q", ipVersion(v6), name)
	}
	if subnet.IsValid() {
		for _, pl := range family {
			if contains(pl.CIDR, subnet) {
				return pl, nil
			}
		}
		return pool{}, fmt.Errorf("subnet %s is not inside any Petrel pool", subnet)
	}
	if len(family) == 1 {
		return family[0], nil
	}
	return pool{}, fmt.Errorf("%d IPv%s pools: give --subnet inside one or --ipam-opt %s=<name>", len(family), ipVersion(v6), optPool)
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

func ipVersion(v6 bool) string {
	if v6 {
		return "6"
	}
	return "4"
}

func (p *Plugin) requestPool(ctx context.Context, req *RequestPoolRequest) (any, error) {
	if req.SubPool != "" {
		return nil, fmt.Errorf("pool %s: --ip-range %s is not supported: Petrel allocates from the whole pool", req.Pool, req.SubPool)
	}
	var subnet netip.Prefix
	if req.Pool != "" {
		pfx, err := netip.ParsePrefix(req.Pool)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", req.Pool, err)
		}
		if pfx.Addr().Is6() != req.V6 {
			return nil, fmt.Errorf("pool %s: address family does not match V6=%t", pfx, req.V6)
		}
		subnet = pfx.Masked()
	}
	for k := range req.Options {
		if k != optPool {
			return nil, fmt.Errorf("pool %s: unknown IPAM option %q (only %s)", req.Pool, k, optPool)
		}
	}
	pools, err := p.listPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("pool %s: list Petrel pools: %w", req.Pool, err)
	}
	pl, err := findPool(pools, req.Options[optPool], subnet, req.V6)
	if err != nil {
		return nil, fmt.Errorf("pool request: %w", err)
	}
	if !subnet.IsValid() {
		subnet = pl.CIDR
	}
	if err := p.ensurePoolRoute(ctx, pl.CIDR); err != nil {
		return nil, fmt.Errorf("pool %s: %w", pl.Name, err)
	}
	gw := gatewayV4CIDR
	if req.V6 {
		gw = gatewayV6CIDR
	}
	return requestPoolResponse{
		PoolID: poolID{Pool: pl.Name, Subnet: subnet}.String(),
		Pool:   subnet.String(),
		Data:   map[string]string{optGateway: gw},
	}, nil
}

func (p *Plugin) releasePool(_ context.Context, req *ReleasePoolRequest) (any, error) {
	if _, err := parsePoolID(req.PoolID); err != nil {
		return nil, fmt.Errorf("release pool: %w", err)
	}
	return empty{}, nil
}

func newHandle() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return handlePrefix + hex.EncodeToString(b)
}

func (p *Plugin) requestAddress(ctx context.Context, req *RequestAddressRequest) (any, error) {
	pid, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, fmt.Errorf("request address: %w", err)
	}
	v6 := pid.Subnet.Addr().Is6()
	bits := 32
	if v6 {
		bits = 128
	}
	var want netip.Addr
	if req.Address != "" {
		if want, err = netip.ParseAddr(req.Address); err != nil {
			return nil, fmt.Errorf("request address %q in %s: %w", req.Address, pid, err)
		}
		if want.Is6() != v6 {
			return nil, fmt.Errorf("request address %s in %s: wrong address family", want, pid)
		}
	}
	if req.Options[optRequestAddressType] == optGateway {
		// Containers route via a link-local gateway answered by proxy
		// ARP, so a gateway costs no pool address.
		gw := netip.MustParsePrefix(gatewayV4CIDR)
		if v6 {
			gw = netip.MustParsePrefix(gatewayV6CIDR)
		}
		if want.IsValid() && want != gw.Addr() {
			return nil, fmt.Errorf("gateway %s in %s: Petrel networks route via %s; drop --gateway", want, pid, gw.Addr())
		}
		return requestAddressResponse{Address: gw.String()}, nil
	}
	handle := newHandle()
	if want.IsValid() {
		if !pid.Subnet.Contains(want) {
			return nil, fmt.Errorf("request address %s: not inside subnet %s", want, pid.Subnet)
		}
		if _, err := p.ipam.Reserve(ctx, handle, []netip.Addr{want}, nil, nil); err != nil {
			return nil, fmt.Errorf("reserve %s in pool %s: %w", want, pid.Pool, err)
		}
		return requestAddressResponse{Address: netip.PrefixFrom(want, bits).String()}, nil
	}
	req4 := ipam.Request{Handle: handle, Pool: pid.Pool, NumV4: 1}
	if v6 {
		req4 = ipam.Request{Handle: handle, PoolV6: pid.Pool, NumV6: 1}
	}
	ips, err := p.ipam.Allocate(ctx, req4)
	if err == nil && len(ips) != 1 {
		err = fmt.Errorf("IPAM returned %d addresses, want 1", len(ips))
	}
	if err != nil {
		return nil, fmt.Errorf("allocate IPv%s address from pool %s: %w", ipVersion(v6), pid.Pool, err)
	}
	return requestAddressResponse{Address: netip.PrefixFrom(ips[0], bits).String()}, nil
}

// handleOf returns the handle holding ip in pool, or "" when it is free.
func (p *Plugin) handleOf(ctx context.Context, pool string, ip netip.Addr) (string, error) {
	b, err := p.store.Get(ctx, registry.IPKey(pool, ip.String()))
	if err != nil || b == nil {
		return "", err
	}
	a, err := registry.DecodeAllocation(b)
	if err != nil {
		return "", err
	}
	return a.Handle, nil
}

func (p *Plugin) releaseAddress(ctx context.Context, req *ReleaseAddressRequest) (any, error) {
	pid, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, fmt.Errorf("release address %s: %w", req.Address, err)
	}
	ip, err := netip.ParseAddr(req.Address)
	if err != nil {
		if pfx, perr := netip.ParsePrefix(req.Address); perr == nil {
			ip, err = pfx.Addr(), nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("release address %q in %s: %w", req.Address, pid, err)
	}
	if ip.IsLinkLocalUnicast() {
		return empty{}, nil // a gateway: nothing was reserved
	}
	handle, err := p.handleOf(ctx, pid.Pool, ip)
	if err != nil {
		return nil, fmt.Errorf("release address %s in pool %s: read allocation: %w", ip, pid.Pool, err)
	}
	if !strings.HasPrefix(handle, handlePrefix) {
		return empty{}, nil // free already, or not ours to free
	}
	if _, err := p.ipam.Release(ctx, handle, []netip.Addr{ip}); err != nil {
		return nil, fmt.Errorf("release address %s (handle %s) in pool %s: %w", ip, handle, pid.Pool, err)
	}
	return empty{}, nil
}

// errNotPetrel marks a network whose addresses do not come from Petrel.
var errNotPetrel = errors.New("libnetwork: not a Petrel network")
