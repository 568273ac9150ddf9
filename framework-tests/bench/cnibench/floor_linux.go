package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// floor is the kernel floor: the veth, address and routes a routed
// container needs, done directly with netlink from the host namespace, with
// no plugin, IPAM or registry.
type floor struct{ h *netlink.Handle }

func newFloor() (*floor, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &floor{h: h}, nil
}

func (f *floor) add(nsPath, hostName string, ip netip.Addr) error {
	nsf, err := os.Open(nsPath)
	if err != nil {
		return err
	}
	defer nsf.Close()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = hostName, 1500
	v := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(nsf.Fd()))}
	if err := f.h.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s: %w", hostName, err)
	}
	ch, err := netlink.NewHandleAt(nsHandle(nsf), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer ch.Close()
	c, err := ch.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := ch.AddrAdd(c, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		return err
	}
	if err := ch.LinkSetUp(c); err != nil {
		return err
	}
	gw := net.IPv4(169, 254, 1, 1).To4()
	if err := ch.RouteAdd(&netlink.Route{LinkIndex: c.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw: gw, Flags: int(netlink.FLAG_ONLINK)}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	h, err := f.h.LinkByName(hostName)
	if err != nil {
		return err
	}
	if err := f.h.LinkSetUp(h); err != nil {
		return err
	}
	return f.h.RouteAdd(&netlink.Route{LinkIndex: h.Attrs().Index, Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Scope: netlink.SCOPE_LINK})
}

func (f *floor) del(hostName string) error {
	l, err := f.h.LinkByName(hostName)
	if err != nil {
		return err
	}
	return f.h.LinkDel(l)
}

func nsHandle(f *os.File) netns.NsHandle { return netns.NsHandle(int(f.Fd())) }
