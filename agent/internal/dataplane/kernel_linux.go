package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// New returns the dataplane for host, working in the network namespace at
// hostNetns ("" = the agent's own). It turns on IPv4 and IPv6 forwarding in
// that namespace and detects the underlay MTU. Close it when done.
func New(_ctx context.Context, host, hostNetns string, store Store, opts ...Option) (*Dataplane, error) {
	if err := validID("host", host); err != nil {
		return nil, err
	}
	k, err := newNetlinkKernel(hostNetns)
	if err != nil {
		return nil, err
	}
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if err := k.enableForwarding(); err != nil {
		k.close()
		return nil, err
	}
	mtu, err := k.underlayMTU(cfg.underlay)
	if err != nil {
		k.close()
		return nil, err
	}
	d := newWithDeps(host, k, store, mtu, opts...)
	d.close = func() error { k.close(); return nil }
	return d, nil
}

// netlinkKernel is the kernel over netlink, working in the host namespace
// hostNS. Host-side netlink calls use hostH, a handle opened in hostNS, so
// they need no thread switch; per-interface sysctls are written from a
// locked OS thread inside hostNS (ns.Do) unless hostNS is the agent's own.
type netlinkKernel struct {
	hostNS ns.NetNS
	own    bool
	hostH  *netlink.Handle
	// forbidden are the namespaces a container may never be: the host
	// namespace, the agent's own and the machine's root (pid 1's).
	forbidden map[nsID]bool
}

type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// checkContainerNS refuses a container netns that is the host's (a pid of
// a host process, a reused pid, a wrong path): wiring "eth0" into it would
// reconfigure the host.
func (k *netlinkKernel) checkContainerNS(path string) error {
	id, err := statNS(path)
	if err != nil {
		return nil // openNetns reports it
	}
	if k.forbidden[id] {
		return invalid("netns", "%s is the host's network namespace, not a container's", path)
	}
	return nil
}

var _ kernel = (*netlinkKernel)(nil)

func newNetlinkKernel(path string) (*netlinkKernel, error) {
	var (
		hns ns.NetNS
		err error
	)
	own := path == ""
	if own {
		hns, err = ns.GetCurrentNS()
	} else {
		hns, err = ns.GetNS(path)
	}
	if err != nil {
		return nil, fmt.Errorf("host netns %q: %w", path, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(hns.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		_ = hns.Close()
		return nil, fmt.Errorf("netlink handle in host netns %q: %w", path, err)
	}
	k := &netlinkKernel{hostNS: hns, own: own, hostH: h, forbidden: map[nsID]bool{}}
	for _, p := range []string{hns.Path(), "/proc/1/ns/net", "/proc/self/ns/net"} {
		if id, err := statNS(p); err == nil {
			k.forbidden[id] = true
		}
	}
	return k, nil
}

func (k *netlinkKernel) close() {
	k.hostH.Close()
	_ = k.hostNS.Close()
}

// inHost runs f with /proc/sys/net reflecting the host namespace.
func (k *netlinkKernel) inHost(f func() error) error {
	if k.own {
		return f()
	}
	return k.hostNS.Do(func(ns.NetNS) error { return f() })
}

func writeSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

func readSysctl(key string) (string, error) {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func (k *netlinkKernel) enableForwarding() error {
	return k.inHost(func() error {
		if err := writeSysctl("net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
		if _, err := os.Stat("/proc/sys/net/ipv6/conf/all/forwarding"); err != nil {
			return nil // IPv6 disabled in this kernel
		}
		return writeSysctl("net.ipv6.conf.all.forwarding", "1")
	})
}

// underlayMTU is the MTU of the named interface, or of the first up non-lo
// interface with a global unicast address, or DefaultMTU.
func (k *netlinkKernel) underlayMTU(name string) (int, error) {
	if name != "" {
		l, err := k.hostH.LinkByName(name)
		if err != nil {
			return 0, fmt.Errorf("underlay interface %s: %w", name, err)
		}
		return l.Attrs().MTU, nil
	}
	links, err := retryDump(k.hostH.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.Flags&net.FlagUp == 0 || IsHostIfName(a.Name) {
			continue
		}
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return k.hostH.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return 0, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ad.IP.IsGlobalUnicast() {
				return a.MTU, nil
			}
		}
	}
	return DefaultMTU, nil
}

// retryDump retries a netlink dump that was interrupted by a concurrent
// change (or by EINTR), as the kernel asks.
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range 10 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) && !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
	return v, err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (k *netlinkKernel) observeHost(_ context.Context, name string) (hostObs, error) {
	var o hostObs
	l, err := k.hostH.LinkByName(name)
	if isNotFound(err) {
		return o, nil
	}
	if err != nil {
		return o, fmt.Errorf("host link %s: %w", name, err)
	}
	a := l.Attrs()
	o.Exists = true
	o.IsVeth = l.Type() == "veth"
	o.Index, o.PeerIndex = a.Index, a.ParentIndex
	o.Up = a.Flags&net.FlagUp != 0
	o.MTU = a.MTU
	o.MACOK = bytes.Equal(a.HardwareAddr, HostMAC)
	err = k.inHost(func() error {
		pa, err := readSysctl("net.ipv4.conf." + name + ".proxy_arp")
		if err != nil {
			return err
		}
		rp, err := readSysctl("net.ipv4.conf." + name + ".rp_filter")
		if err != nil {
			return err
		}
		o.ProxyARP, o.RPFilter = pa == "1", rp == "1"
		return nil
	})
	if err != nil {
		return o, fmt.Errorf("host link %s: %w", name, err)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return k.hostH.AddrList(l, netlink.FAMILY_V6) })
	if err != nil {
		return o, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok && p.Addr() == GatewayV6 &&
			ad.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			o.LinkLocal = true
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return k.hostH.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: a.Index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return o, fmt.Errorf("routes via %s: %w", name, err)
	}
	for _, r := range routes {
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() != p.Addr().BitLen() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() {
			continue
		}
		o.Routes = append(o.Routes, p)
	}
	return o, nil
}

// openNetns opens the container namespace, mapping "not there" to
// ErrNetnsNotFound.
func openNetns(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		var ne ns.NSPathNotExistErr
		var nn ns.NSPathNotNSErr
		if errors.As(err, &ne) || errors.As(err, &nn) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", path, ErrNetnsNotFound)
		}
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return n, nil
}

// containerHandle opens the container namespace and a netlink handle in it.
func containerHandle(path string) (ns.NetNS, *netlink.Handle, error) {
	n, err := openNetns(path)
	if err != nil {
		return nil, nil, err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		_ = n.Close()
		return nil, nil, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return n, h, nil
}

func (k *netlinkKernel) observeContainer(_ context.Context, path, ifname string) (ctrObs, error) {
	var o ctrObs
	if err := k.checkContainerNS(path); err != nil {
		return o, err
	}
	n, h, err := containerHandle(path)
	if err != nil {
		return o, err
	}
	defer func() { h.Close(); _ = n.Close() }()
	if lo, err := h.LinkByName("lo"); err == nil {
		o.LoUp = lo.Attrs().Flags&net.FlagUp != 0
	}
	l, err := h.LinkByName(ifname)
	if isNotFound(err) {
		return o, nil
	}
	if err != nil {
		return o, fmt.Errorf("%s in %s: %w", ifname, path, err)
	}
	a := l.Attrs()
	o.Exists = true
	o.Index, o.PeerIndex = a.Index, a.ParentIndex
	o.Up = a.Flags&net.FlagUp != 0
	o.MTU = a.MTU
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return o, fmt.Errorf("addresses of %s in %s: %w", ifname, path, err)
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			o.Addrs = append(o.Addrs, p)
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: a.Index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return o, fmt.Errorf("routes in %s: %w", path, err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() != 0 {
			continue
		}
		gw, _ := netip.AddrFromSlice(r.Gw)
		switch gw.Unmap() {
		case GatewayV4:
			o.DefaultV4 = true
		case GatewayV6:
			o.DefaultV6 = true
		}
	}
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(a.Index, netlink.FAMILY_ALL) })
	if err != nil {
		return o, fmt.Errorf("neighbours in %s: %w", path, err)
	}
	for _, nb := range neighs {
		if nb.State&netlink.NUD_PERMANENT == 0 || !bytes.Equal(nb.HardwareAddr, HostMAC) {
			continue
		}
		ip, _ := netip.AddrFromSlice(nb.IP)
		switch ip.Unmap() {
		case GatewayV4:
			o.NeighV4 = true
		case GatewayV6:
			o.NeighV6 = true
		}
	}
	return o, nil
}

func (k *netlinkKernel) netnsAlive(path string) bool {
	return ns.IsNSorErr(path) == nil
}

func (k *netlinkKernel) listHostIfs(context.Context) ([]string, error) {
	links, err := retryDump(k.hostH.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if n := l.Attrs().Name; IsHostIfName(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (k *netlinkKernel) createVeth(_ context.Context, v vethSpec) error {
	la := netlink.NewLinkAttrs()
	la.Name = v.hostName
	la.MTU = v.mtu
	la.HardwareAddr = HostMAC
	veth := &netlink.Veth{LinkAttrs: la, PeerMTU: uint32(v.mtu), PeerHardwareAddr: v.peerMAC}
	if v.netns == "" {
		veth.PeerName = v.tempName
		if err := k.hostH.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s/%s: %w", v.hostName, v.tempName, err)
		}
		return nil
	}
	if err := k.checkContainerNS(v.netns); err != nil {
		return err
	}
	n, err := openNetns(v.netns)
	if err != nil {
		return err
	}
	defer n.Close()
	veth.PeerName = v.ifname
	veth.PeerNamespace = netlink.NsFd(int(n.Fd()))
	if err := k.hostH.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			// The host name is free (the caller holds its lock and found
			// no link), so the name taken is the container's.
			return fmt.Errorf("%w: %s in %s: %w", ErrIfnameInUse, v.ifname, v.netns, err)
		}
		return fmt.Errorf("create veth %s with peer %s in %s: %w", v.hostName, v.ifname, v.netns, err)
	}
	return nil
}

func (k *netlinkKernel) deleteHostIf(_ context.Context, name string) (bool, error) {
	l, err := k.hostH.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("host link %s: %w", name, err)
	}
	if err := k.hostH.LinkDel(l); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("delete %s: %w", name, err)
	}
	return true, nil
}

func (k *netlinkKernel) retireHostIf(_ context.Context, name, netnsPath string) (bool, error) {
	l, err := k.hostH.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("host link %s: %w", name, err)
	}
	if err := k.retire(l, netnsPath); err != nil {
		// Whatever went wrong, the pair must not stay in service: delete
		// it the slow way, by index (it may be renamed already).
		if derr := k.hostH.LinkDel(l); derr != nil && !isNotFound(derr) {
			return false, fmt.Errorf("retire %s: %w; delete: %w", name, err, derr)
		}
	}
	return true, nil
}

// retire renames the peer inside netnsPath (when it is there) and then
// takes the host side l down, renames it and puts it in RetireGroup.
func (k *netlinkKernel) retire(l netlink.Link, netnsPath string) error {
	a := l.Attrs()
	if l.Type() != "veth" {
		return fmt.Errorf("%s is a %s, not a veth", a.Name, l.Type())
	}
	switch {
	case netnsPath != "" && k.checkContainerNS(netnsPath) == nil:
		if err := renamePeer(netnsPath, a.ParentIndex, a.Index); err != nil && !errors.Is(err, ErrNetnsNotFound) {
			return err
		}
	case netnsPath == "":
		// A host-side-only pair whose peer the runtime has not moved
		// away (yet) still holds its temporary name here.
		if p, err := k.hostH.LinkByIndex(a.ParentIndex); err == nil && p.Type() == "veth" &&
			p.Attrs().ParentIndex == a.Index && strings.HasPrefix(p.Attrs().Name, tempIfPrefix) {
			if err := k.hostH.LinkSetName(p, retiredIfName(p.Attrs().Index)); err != nil {
				return fmt.Errorf("rename %s: %w", p.Attrs().Name, err)
			}
		}
	}
	if err := k.hostH.LinkSetDown(l); err != nil {
		return fmt.Errorf("set %s down: %w", a.Name, err)
	}
	// Renamed before it joins the group, so reapRetired never finds a
	// member of the group that is not recognisably ours.
	if err := k.hostH.LinkSetName(l, retiredIfName(a.Index)); err != nil {
		return fmt.Errorf("rename %s: %w", a.Name, err)
	}
	if err := k.hostH.LinkSetGroup(l, RetireGroup); err != nil {
		return fmt.Errorf("set group of %s: %w", a.Name, err)
	}
	return nil
}

// renamePeer takes the peer (ifindex peer in the namespace at path) of the
// host veth hostIndex down and gives it its retired name, so the
// container's interface name is free again.
func renamePeer(path string, peer, hostIndex int) error {
	n, h, err := containerHandle(path)
	if err != nil {
		return err
	}
	defer func() { h.Close(); _ = n.Close() }()
	p, err := h.LinkByIndex(peer)
	if isNotFound(err) {
		return nil // the namespace no longer holds it
	}
	if err != nil {
		return fmt.Errorf("peer %d in %s: %w", peer, path, err)
	}
	if p.Attrs().ParentIndex != hostIndex || p.Type() != "veth" {
		return nil // a different interface reuses the index: not ours
	}
	if err := h.LinkSetDown(p); err != nil {
		return fmt.Errorf("set %s in %s down: %w", p.Attrs().Name, path, err)
	}
	if err := h.LinkSetName(p, retiredIfName(p.Attrs().Index)); err != nil {
		return fmt.Errorf("rename %s in %s: %w", p.Attrs().Name, path, err)
	}
	return nil
}

func (k *netlinkKernel) reapRetired(ctx context.Context) (int, error) {
	links, err := retryDump(k.hostH.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	var ours []netlink.Link
	foreign := false
	for _, l := range links {
		if l.Attrs().Group != RetireGroup {
			continue
		}
		if l.Type() == "veth" && isRetiredIfName(l.Attrs().Name) {
			ours = append(ours, l)
		} else {
			foreign = true
		}
	}
	if len(ours) == 0 {
		return 0, nil
	}
	if !foreign {
		err := k.inHost(func() error {
			req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
			req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
			req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(RetireGroup)))
			_, err := req.Execute(unix.NETLINK_ROUTE, 0)
			return err
		})
		if err == nil {
			return len(ours), nil
		}
		// Fall back to one by one (e.g. a link joined the group since).
	}
	n := 0
	var errs []error
	for _, l := range ours {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if err := k.hostH.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete retired %s: %w", l.Attrs().Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (k *netlinkKernel) configureHost(_ context.Context, name string, mtu int, ipv6 bool) error {
	l, err := k.hostH.LinkByName(name)
	if err != nil {
		return fmt.Errorf("host link %s: %w", name, err)
	}
	if l.Attrs().MTU != mtu {
		if err := k.hostH.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
		}
	}
	if !bytes.Equal(l.Attrs().HardwareAddr, HostMAC) {
		if err := k.hostH.LinkSetHardwareAddr(l, HostMAC); err != nil {
			return fmt.Errorf("set mac on %s: %w", name, err)
		}
	}
	err = k.inHost(func() error {
		if err := writeSysctl("net.ipv4.conf."+name+".proxy_arp", "1"); err != nil {
			return err
		}
		if err := writeSysctl("net.ipv4.conf."+name+".rp_filter", "1"); err != nil {
			return err
		}
		// IPv6 only where the container has it. Without, the link
		// coming up would start IPv6 autoconfiguration (a link-local
		// address, duplicate address detection, multicast listener
		// reports): kernel timers for every endpoint, for nothing. A
		// kernel without IPv6 has no such key.
		disable := "1"
		if ipv6 {
			disable = "0"
		}
		err := writeSysctl("net.ipv6.conf."+name+".disable_ipv6", disable)
		if errors.Is(err, fs.ErrNotExist) && !ipv6 {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("host link %s: %w", name, err)
	}
	if ipv6 {
		// Added before the link comes up and without DAD, so the gateway
		// is usable at once; the kernel's own EUI-64 link-local address is
		// the same and then already present.
		ll := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(GatewayV6, 64)), Flags: unix.IFA_F_NODAD}
		if err := k.hostH.AddrReplace(l, ll); err != nil {
			return fmt.Errorf("add %s to %s: %w", GatewayV6, name, err)
		}
	}
	if err := k.hostH.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func hostRoute(index int, p netip.Prefix) *netlink.Route {
	r := &netlink.Route{LinkIndex: index, Dst: ipNet(p), Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol}
	if p.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

func (k *netlinkKernel) replaceHostRoute(_ context.Context, name string, p netip.Prefix) error {
	l, err := k.hostH.LinkByName(name)
	if err != nil {
		return fmt.Errorf("host link %s: %w", name, err)
	}
	if err := k.hostH.RouteReplace(hostRoute(l.Attrs().Index, p)); err != nil {
		return fmt.Errorf("route %s dev %s: %w", p, name, err)
	}
	return nil
}

func (k *netlinkKernel) deleteHostRoute(_ context.Context, name string, p netip.Prefix) error {
	l, err := k.hostH.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("host link %s: %w", name, err)
	}
	err = k.hostH.RouteDel(hostRoute(l.Attrs().Index, p))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s dev %s: %w", p, name, err)
	}
	return nil
}

func (k *netlinkKernel) configureContainer(_ context.Context, path, ifname string, c ctrConfig) error {
	if err := k.checkContainerNS(path); err != nil {
		return err
	}
	n, h, err := containerHandle(path)
	if err != nil {
		return err
	}
	defer func() { h.Close(); _ = n.Close() }()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo in %s: %w", path, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", path, err)
	}
	l, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", ifname, path, err)
	}
	if l.Attrs().MTU != c.mtu {
		if err := h.LinkSetMTU(l, c.mtu); err != nil {
			return fmt.Errorf("set mtu %d on %s in %s: %w", c.mtu, ifname, path, err)
		}
	}
	for _, p := range c.addrDel {
		if err := h.AddrDel(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("delete %s from %s in %s: %w", p, ifname, path, err)
		}
	}
	for _, p := range c.addrAdd {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(l, a); err != nil {
			return fmt.Errorf("add %s to %s in %s: %w", p, ifname, path, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", ifname, path, err)
	}
	idx := l.Attrs().Index
	gws := []struct {
		on  bool
		gw  netip.Addr
		fam int
		dst netip.Prefix
	}{
		{c.v4, GatewayV4, netlink.FAMILY_V4, netip.MustParsePrefix("0.0.0.0/0")},
		{c.v6, GatewayV6, netlink.FAMILY_V6, netip.MustParsePrefix("::/0")},
	}
	for _, g := range gws {
		if !g.on {
			continue
		}
		nb := &netlink.Neigh{LinkIndex: idx, Family: g.fam, State: netlink.NUD_PERMANENT, IP: g.gw.AsSlice(), HardwareAddr: HostMAC}
		if err := h.NeighSet(nb); err != nil {
			return fmt.Errorf("neighbour %s in %s: %w", g.gw, path, err)
		}
		r := &netlink.Route{LinkIndex: idx, Dst: ipNet(g.dst), Gw: g.gw.AsSlice(), Flags: int(netlink.FLAG_ONLINK), Table: unix.RT_TABLE_MAIN}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", g.gw, path, err)
		}
	}
	return nil
}
