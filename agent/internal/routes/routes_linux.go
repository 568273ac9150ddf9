package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// New returns a Reconciler that programs the network namespace at nsPath
// (empty: the current one) through netlink. Close releases the handle.
func New(nsPath string, cfg Config) (*Reconciler, func(), error) {
	h, err := handleAt(nsPath)
	if err != nil {
		return nil, nil, err
	}
	r, err := newWithOps(&linuxOps{h: h}, cfg)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return r, h.Close, nil
}

func handleAt(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("routes: netlink handle: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("routes: open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("routes: netlink handle in %s: %w", nsPath, err)
	}
	return h, nil
}

// Underlay describes the host's underlay as found in a namespace.
type Underlay struct {
	Dev     string
	Address netip.Addr
	Subnet  netip.Prefix
	MTU     int
}

// DetectUnderlay finds the underlay in the namespace at nsPath (empty: the
// current one): the device holding want, or, when want is invalid, the first
// global-scope IPv4 address on an up device that is not loopback or Petrel's.
func DetectUnderlay(nsPath string, want netip.Addr) (Underlay, error) {
	h, err := handleAt(nsPath)
	if err != nil {
		return Underlay{}, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return Underlay{}, fmt.Errorf("routes: list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.Name == DefaultVXLANName || l.Type() == "vxlan" {
			continue
		}
		if !want.IsValid() && a.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if ad.Scope != unix.RT_SCOPE_UNIVERSE || ad.IPNet == nil {
				continue
			}
			ip, ok := netip.AddrFromSlice(ad.IP.To4())
			if !ok || (want.IsValid() && ip != want) {
				continue
			}
			ones, _ := ad.Mask.Size()
			return Underlay{Dev: a.Name, Address: ip, Subnet: netip.PrefixFrom(ip, ones).Masked(), MTU: a.MTU}, nil
		}
	}
	if want.IsValid() {
		return Underlay{}, fmt.Errorf("routes: no device holds underlay address %s", want)
	}
	return Underlay{}, errors.New("routes: no global IPv4 address found for the underlay")
}

// linuxOps implements netOps with netlink calls, one per method.
type linuxOps struct {
	h *netlink.Handle
}

var _ netOps = (*linuxOps)(nil)

func (o *linuxOps) ListRoutes() ([]Route, error) {
	var out []Route
	names := map[int]string{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := o.h.RouteListFiltered(fam, &netlink.Route{Protocol: Protocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes proto %d: %w", Protocol, err)
		}
		for _, r := range rs {
			if r.Dst == nil {
				continue
			}
			dst, ok := netip.AddrFromSlice(r.Dst.IP)
			if !ok {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			if fam == netlink.FAMILY_V4 {
				dst = dst.Unmap()
			}
			rt := Route{Dst: netip.PrefixFrom(dst, ones)}
			if r.Type == unix.RTN_UNREACHABLE {
				rt.Kind = Unreachable
			} else {
				if gw, ok := netip.AddrFromSlice(r.Gw); ok {
					if fam == netlink.FAMILY_V4 {
						gw = gw.Unmap()
					}
					rt.Via = gw
				}
				rt.Onlink = r.Flags&int(netlink.FLAG_ONLINK) != 0
				if r.LinkIndex > 0 {
					n, ok := names[r.LinkIndex]
					if !ok {
						if l, err := o.h.LinkByIndex(r.LinkIndex); err == nil {
							n = l.Attrs().Name
						}
						names[r.LinkIndex] = n
					}
					rt.Dev = n
				}
			}
			out = append(out, rt)
		}
	}
	return out, nil
}

func (o *linuxOps) toNetlink(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		Protocol: Protocol,
		Priority: Metric,
		Table:    unix.RT_TABLE_MAIN,
	}
	if r.Kind == Unreachable {
		nr.Type = unix.RTN_UNREACHABLE
		return nr, nil
	}
	nr.Gw = r.Via.AsSlice()
	nr.Scope = netlink.SCOPE_UNIVERSE
	if r.Onlink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	if r.Dev != "" {
		l, err := o.h.LinkByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", r.Dev, err)
		}
		nr.LinkIndex = l.Attrs().Index
	}
	return nr, nil
}

func (o *linuxOps) ReplaceRoute(r Route) error {
	nr, err := o.toNetlink(r)
	if err != nil {
		return err
	}
	return o.h.RouteReplace(nr)
}

func (o *linuxOps) DeleteRoute(r Route) error {
	nr, err := o.toNetlink(r)
	if err != nil {
		// The device is gone, and the route with it.
		return nil
	}
	nr.Gw = nil
	nr.LinkIndex = 0
	nr.Flags = 0
	if err := o.h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func (o *linuxOps) EnsureVXLAN(v VXLAN) error {
	mac, err := net.ParseMAC(v.MAC)
	if err != nil {
		return fmt.Errorf("mac %q: %w", v.MAC, err)
	}
	var parent int
	if v.Parent != "" {
		p, err := o.h.LinkByName(v.Parent)
		if err != nil {
			return fmt.Errorf("underlay %s: %w", v.Parent, err)
		}
		parent = p.Attrs().Index
	}
	l, err := o.h.LinkByName(v.Name)
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != v.VNI || vx.Port != v.Port || !vx.SrcAddr.Equal(v.Local.AsSlice()) || (parent != 0 && vx.VtepDevIndex != parent) {
			// Wrong kind or identity: rebuild it (routes through it are
			// re-added by the same reconcile).
			if err := o.h.LinkDel(l); err != nil {
				return fmt.Errorf("delete stale %s: %w", v.Name, err)
			}
			l = nil
		}
	}
	if l == nil {
		vx := &netlink.Vxlan{
			LinkAttrs:    netlink.LinkAttrs{Name: v.Name, MTU: v.MTU, HardwareAddr: mac},
			VxlanId:      v.VNI,
			Port:         v.Port,
			SrcAddr:      v.Local.AsSlice(),
			VtepDevIndex: parent,
			Learning:     false,
		}
		if err := o.h.LinkAdd(vx); err != nil {
			return fmt.Errorf("add: %w", err)
		}
		l = vx
	}
	a := l.Attrs()
	if a.MTU != v.MTU {
		if err := o.h.LinkSetMTU(l, v.MTU); err != nil {
			return fmt.Errorf("set mtu %d: %w", v.MTU, err)
		}
	}
	if a.HardwareAddr.String() != mac.String() {
		if err := o.h.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("set mac %s: %w", mac, err)
		}
	}
	if a.Flags&net.FlagUp == 0 || a.OperState == netlink.OperDown {
		if err := o.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	}
	return nil
}

func (o *linuxOps) link(dev string) (netlink.Link, error) {
	l, err := o.h.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", dev, err)
	}
	return l, nil
}

func (o *linuxOps) ListNeigh(dev string) (map[netip.Addr]string, error) {
	l, err := o.link(dev)
	if err != nil {
		return nil, err
	}
	ns, err := o.h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours of %s: %w", dev, err)
	}
	out := map[netip.Addr]string{}
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP.To4())
		if ok && n.HardwareAddr != nil {
			out[ip] = n.HardwareAddr.String()
		}
	}
	return out, nil
}

func (o *linuxOps) SetNeigh(dev string, ip netip.Addr, mac string) error {
	l, err := o.link(dev)
	if err != nil {
		return err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("mac %q: %w", mac, err)
	}
	return o.h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: hw})
}

func (o *linuxOps) DelNeigh(dev string, ip netip.Addr) error {
	l, err := o.link(dev)
	if err != nil {
		return nil // gone with its device
	}
	err = o.h.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: ip.AsSlice()})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

func (o *linuxOps) ListFDB(dev string) (map[string]netip.Addr, error) {
	l, err := o.link(dev)
	if err != nil {
		return nil, err
	}
	ns, err := o.h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("list fdb of %s: %w", dev, err)
	}
	out := map[string]netip.Addr{}
	for _, n := range ns {
		if n.HardwareAddr == nil || n.IP == nil || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP.To4())
		if ok {
			out[n.HardwareAddr.String()] = ip
		}
	}
	return out, nil
}

func (o *linuxOps) fdb(dev, mac string, dst netip.Addr) (*netlink.Neigh, error) {
	l, err := o.link(dev)
	if err != nil {
		return nil, err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("mac %q: %w", mac, err)
	}
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: dst.AsSlice(), HardwareAddr: hw}, nil
}

func (o *linuxOps) SetFDB(dev, mac string, dst netip.Addr) error {
	n, err := o.fdb(dev, mac, dst)
	if err != nil {
		return err
	}
	return o.h.NeighSet(n)
}

func (o *linuxOps) DelFDB(dev, mac string, dst netip.Addr) error {
	n, err := o.fdb(dev, mac, dst)
	if err != nil {
		return nil // gone with its device
	}
	if err := o.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
