package dataplane

import (
	"context"
	"net"
	"net/netip"
)

// kernel is the dataplane's view of netlink and sysctls. Production uses
// netlinkKernel (kernel_linux.go); tests use fakeKernel. Every method is
// idempotent where it removes things: a missing object is success.
type kernel interface {
	// observeHost reports the host-side veth name in the host namespace.
	observeHost(ctx context.Context, name string) (hostObs, error)
	// observeContainer reports interface ifname inside the container
	// namespace netns. It returns ErrNetnsNotFound when netns is gone.
	observeContainer(ctx context.Context, netns, ifname string) (ctrObs, error)
	// netnsAlive reports whether netns names a network namespace.
	netnsAlive(netns string) bool
	// listHostIfs lists host-side veths (IsHostIfName) in the host namespace.
	listHostIfs(ctx context.Context) ([]string, error)
	// createVeth creates the pair: the host side in the host namespace
	// (down, MTU, HostMAC) and the peer either inside v.netns named v.ifname,
	// or, when v.netns is empty, in the host namespace named v.tempName.
	createVeth(ctx context.Context, v vethSpec) error
	// deleteHostIf deletes the host-side veth and with it the pair and every
	// route through it. It reports whether the link existed.
	deleteHostIf(ctx context.Context, name string) (bool, error)
	// retireHostIf takes the host-side veth out of service without waiting
	// for its deletion: both sides go down and get free names (ptz and the
	// ifindex), so the container's interface name and the host-side name
	// are usable again at once, and the host side joins RetireGroup for
	// reapRetired. A down link carries no routes. netns, when not empty and
	// alive, is where the peer is renamed. It reports whether the link
	// existed.
	retireHostIf(ctx context.Context, name, netns string) (bool, error)
	// reapRetired deletes every retired link (RetireGroup) of the host
	// namespace, in one kernel batch when the group holds only Petrel's
	// links. It reports how many it deleted.
	reapRetired(ctx context.Context) (int, error)
	// configureHost sets MTU, the IPv6 link-local gateway address (when
	// ipv6), proxy_arp=1, rp_filter=1, and brings the link up.
	configureHost(ctx context.Context, name string, mtu int, ipv6 bool) error
	// replaceHostRoute points prefix at the host-side veth (scope link).
	replaceHostRoute(ctx context.Context, name string, p netip.Prefix) error
	// deleteHostRoute removes the route for prefix through the host-side veth.
	deleteHostRoute(ctx context.Context, name string, p netip.Prefix) error
	// configureContainer brings lo and ifname up with MTU, removes addrDel,
	// adds addrAdd (IPv6 without DAD), and installs the gateways' permanent
	// neighbour entries and default routes for the families in families.
	configureContainer(ctx context.Context, netns, ifname string, c ctrConfig) error
}

type vethSpec struct {
	hostName string
	mtu      int
	netns    string // "" = leave the peer in the host namespace as tempName
	ifname   string
	tempName string
	peerMAC  net.HardwareAddr
}

type ctrConfig struct {
	mtu     int
	addrAdd []netip.Prefix
	addrDel []netip.Prefix
	v4, v6  bool
}

// hostObs is what the kernel holds for one host-side veth.
type hostObs struct {
	Exists    bool
	IsVeth    bool
	Index     int
	PeerIndex int
	Up        bool
	MTU       int
	MACOK     bool
	// ProxyARP and RPFilter are the per-interface sysctl values.
	ProxyARP, RPFilter bool
	// LinkLocal reports whether GatewayV6 is on the link (non-tentative).
	LinkLocal bool
	// Routes are the /32 and /128 routes through the link.
	Routes []netip.Prefix
}

// ctrObs is what the kernel holds for one container interface.
type ctrObs struct {
	Exists    bool
	Index     int
	PeerIndex int
	Up        bool
	LoUp      bool
	MTU       int
	// Addrs are the global addresses on the interface.
	Addrs []netip.Prefix
	// DefaultV4 and DefaultV6 report the default routes via the gateways.
	DefaultV4, DefaultV6 bool
	// NeighV4 and NeighV6 report the gateways' permanent neighbour entries.
	NeighV4, NeighV6 bool
}
