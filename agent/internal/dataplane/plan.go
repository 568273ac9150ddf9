package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// attachWant is the kernel state Attach wants for one container interface.
type attachWant struct {
	hostName     string
	netns        string
	ifname       string
	tempName     string
	peerMAC      net.HardwareAddr
	hostSideOnly bool
	mtu          int
	prefixes     []netip.Prefix // IP/32 and IP/128
}

func (w attachWant) families() (v4, v6 bool) {
	for _, p := range w.prefixes {
		if p.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// attachPlan is what Attach does to the kernel, in this order.
type attachPlan struct {
	deleteHost    bool
	create        bool
	configureHost bool
	routesDel     []netip.Prefix
	routesAdd     []netip.Prefix
	configureCtr  bool
	ctr           ctrConfig
}

// empty reports whether the plan leaves the kernel untouched.
func (p attachPlan) empty() bool {
	return !p.deleteHost && !p.create && !p.configureHost && len(p.routesDel) == 0 &&
		len(p.routesAdd) == 0 && !p.configureCtr
}

// planAttach decides what to do from what the kernel holds. A correct
// endpoint gives an empty plan; a pair whose container side is missing or
// not ours is rebuilt; missing pieces are added and stray ones removed. It
// refuses to touch a container interface that is not the peer of our host
// side.
func planAttach(w attachWant, h hostObs, c ctrObs) (attachPlan, error) {
	v4, v6 := w.families()
	var p attachPlan
	full := func() attachPlan {
		return attachPlan{
			deleteHost:    h.Exists,
			create:        true,
			configureHost: true,
			routesAdd:     slices.Clone(w.prefixes),
			configureCtr:  !w.hostSideOnly,
			ctr:           ctrConfig{mtu: w.mtu, addrAdd: slices.Clone(w.prefixes), v4: v4, v6: v6},
		}
	}
	if w.hostSideOnly {
		if !h.Exists || !h.IsVeth {
			p = full()
			return p, nil
		}
	} else {
		ours := c.Exists && h.Exists && h.IsVeth && c.PeerIndex == h.Index && h.PeerIndex == c.Index
		switch {
		case c.Exists && !ours:
			return attachPlan{}, fmt.Errorf("%w: %s in %s is not the peer of %s", ErrIfnameInUse, w.ifname, w.netns, w.hostName)
		case !c.Exists:
			return full(), nil
		}
	}
	p.configureHost = !h.Up || h.MTU != w.mtu || !h.MACOK || !h.ProxyARP || !h.RPFilter || (v6 && !h.LinkLocal)
	p.routesAdd, p.routesDel = diffPrefixes(w.prefixes, h.Routes)
	if w.hostSideOnly {
		return p, nil
	}
	p.ctr = ctrConfig{mtu: w.mtu, v4: v4, v6: v6}
	p.ctr.addrAdd, p.ctr.addrDel = diffPrefixes(w.prefixes, c.Addrs)
	p.configureCtr = len(p.ctr.addrAdd) > 0 || len(p.ctr.addrDel) > 0 || !c.Up || !c.LoUp || c.MTU != w.mtu ||
		(v4 && (!c.DefaultV4 || !c.NeighV4)) || (v6 && (!c.DefaultV6 || !c.NeighV6))
	return p, nil
}

// diffPrefixes returns the prefixes in want but not in have (add) and in have
// but not in want (del).
func diffPrefixes(want, have []netip.Prefix) (add, del []netip.Prefix) {
	for _, p := range want {
		if !slices.Contains(have, p) {
			add = append(add, p)
		}
	}
	for _, p := range have {
		if !slices.Contains(want, p) {
			del = append(del, p)
		}
	}
	return add, del
}

// problems describes, for Check, how the kernel differs from w.
func problems(w attachWant, h hostObs, c ctrObs) []string {
	var out []string
	v4, v6 := w.families()
	if !h.Exists {
		return append(out, fmt.Sprintf("host veth %s missing", w.hostName))
	}
	if !h.IsVeth {
		out = append(out, fmt.Sprintf("host link %s is not a veth", w.hostName))
	}
	if !h.Up {
		out = append(out, fmt.Sprintf("host veth %s down", w.hostName))
	}
	if h.MTU != w.mtu {
		out = append(out, fmt.Sprintf("host veth %s mtu %d, want %d", w.hostName, h.MTU, w.mtu))
	}
	if !h.MACOK {
		out = append(out, fmt.Sprintf("host veth %s mac is not %s", w.hostName, HostMAC))
	}
	if !h.ProxyARP {
		out = append(out, fmt.Sprintf("host veth %s proxy_arp off", w.hostName))
	}
	if !h.RPFilter {
		out = append(out, fmt.Sprintf("host veth %s rp_filter not strict", w.hostName))
	}
	if v6 && !h.LinkLocal {
		out = append(out, fmt.Sprintf("host veth %s lacks gateway address %s", w.hostName, GatewayV6))
	}
	add, del := diffPrefixes(w.prefixes, h.Routes)
	for _, p := range add {
		out = append(out, fmt.Sprintf("host route %s via %s missing", p, w.hostName))
	}
	for _, p := range del {
		out = append(out, fmt.Sprintf("host route %s via %s unexpected", p, w.hostName))
	}
	if w.hostSideOnly {
		return out
	}
	if !c.Exists {
		return append(out, fmt.Sprintf("container interface %s missing in %s", w.ifname, w.netns))
	}
	if c.PeerIndex != h.Index || h.PeerIndex != c.Index {
		out = append(out, fmt.Sprintf("container interface %s is not the peer of %s", w.ifname, w.hostName))
	}
	if !c.Up {
		out = append(out, fmt.Sprintf("container interface %s down", w.ifname))
	}
	if !c.LoUp {
		out = append(out, "container lo down")
	}
	if c.MTU != w.mtu {
		out = append(out, fmt.Sprintf("container interface %s mtu %d, want %d", w.ifname, c.MTU, w.mtu))
	}
	add, del = diffPrefixes(w.prefixes, c.Addrs)
	for _, p := range add {
		out = append(out, fmt.Sprintf("container address %s missing", p))
	}
	for _, p := range del {
		out = append(out, fmt.Sprintf("container address %s unexpected", p))
	}
	if v4 && !c.DefaultV4 {
		out = append(out, fmt.Sprintf("container default route via %s missing", GatewayV4))
	}
	if v4 && !c.NeighV4 {
		out = append(out, fmt.Sprintf("container neighbour entry for %s missing", GatewayV4))
	}
	if v6 && !c.DefaultV6 {
		out = append(out, fmt.Sprintf("container default route via %s missing", GatewayV6))
	}
	if v6 && !c.NeighV6 {
		out = append(out, fmt.Sprintf("container neighbour entry for %s missing", GatewayV6))
	}
	return out
}

// reconcilePlan is what Reconcile does.
type reconcilePlan struct {
	// remove: endpoints whose netns is gone (or, for host-side-only
	// endpoints, whose host veth is gone): delete the host veth, the record,
	// and release the handle.
	remove []StoredEndpoint
	// repair: endpoints whose netns is alive: bring the kernel in line.
	repair []StoredEndpoint
	// deleteIfs: host veths no record names (half-made attaches).
	deleteIfs []string
}

// planReconcile decides what Reconcile does from the host's endpoint records,
// the host veths in the kernel, and which netns paths are alive.
func planReconcile(records []StoredEndpoint, hostIfs []string, alive map[string]bool) reconcilePlan {
	var p reconcilePlan
	present := make(map[string]bool, len(hostIfs))
	for _, n := range hostIfs {
		present[n] = true
	}
	named := make(map[string]bool, len(records))
	for _, r := range records {
		name := recordHostIf(r.Endpoint)
		named[name] = true
		switch {
		case r.Endpoint.GetNetns() == "":
			// Host-side-only (Docker): the runtime owns the netns; the host
			// veth is the only evidence the endpoint lives.
			if present[name] {
				p.repair = append(p.repair, r)
			} else {
				p.remove = append(p.remove, r)
			}
		case alive[r.Endpoint.GetNetns()]:
			p.repair = append(p.repair, r)
		default:
			p.remove = append(p.remove, r)
		}
	}
	for _, n := range hostIfs {
		if !named[n] {
			p.deleteIfs = append(p.deleteIfs, n)
		}
	}
	slices.Sort(p.deleteIfs)
	return p
}

// recordHostIf is the host veth of a record: its host_ifname, or the derived
// name when the record lacks one.
func recordHostIf(ep *petrelv1.Endpoint) string {
	if n := ep.GetHostIfname(); n != "" {
		return n
	}
	ifname := ep.GetIfname()
	if ifname == "" {
		ifname = DefaultIfName
	}
	return HostIfName(ep.GetContainerId(), ifname)
}
