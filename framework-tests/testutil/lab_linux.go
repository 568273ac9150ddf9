package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// LabHost is a namespace playing a host, wired by hand the way Petrel's
// dataplane wires one: IPv4 forwarding on, every container attached by a
// veth pair with a /32 route on the host side, and the container's default
// route via 169.254.1.1 (a permanent neighbour entry naming the host-side
// veth, so no proxy ARP depends on a default route). Reverse-path filtering
// is off so that tests see Petrel's own anti-spoofing, not the kernel's. It
// has no route out of the machine.
type LabHost struct {
	*NS
	// Addr is the host's address on the link made by LinkLabHosts.
	Addr string
}

// LabContainer is a container namespace attached to a LabHost.
type LabContainer struct {
	*NS
	// IPs are the container's addresses (IPv4), the first one its source.
	IPs []string
	// HostIfname is the host-side veth.
	HostIfname string
}

// NewLabHost makes a host namespace. Everything is removed in t.Cleanup.
func NewLabHost(t testing.TB, prefix string) *LabHost {
	t.Helper()
	h := &LabHost{NS: NewNS(t, prefix)}
	h.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv6.conf.all.forwarding=1")
	return h
}

// LinkName returns a fresh interface name, "ptl-" and 8 hex digits.
func LinkName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "ptl-" + hex.EncodeToString(b)
}

// AddContainer creates a container namespace with the given addresses
// (bare; IPv4 ones configured as /32 with a default route via 169.254.1.1,
// IPv6 ones as /128 with a default route via fe80::1, both gateways being
// permanent neighbour entries for the host-side veth) and attaches it to the
// host.
func (h *LabHost) AddContainer(t testing.TB, ips ...string) *LabContainer {
	t.Helper()
	c := &LabContainer{NS: NewNS(t, "ctr"), HostIfname: LinkName()}
	h.MustRun(t, "ip", "link", "add", c.HostIfname, "type", "veth", "peer", "name", "eth0", "netns", c.Name)
	h.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.conf."+c.HostIfname+".rp_filter=0")
	h.MustRun(t, "ip", "link", "set", c.HostIfname, "up")
	c.MustRun(t, "ip", "link", "set", "eth0", "up")
	for _, ip := range ips {
		h.AddIP(t, c, ip)
	}
	return c
}

// AddIP gives a container one more address (the first of each family gets
// the default route).
func (h *LabHost) AddIP(t testing.TB, c *LabContainer, ip string) {
	t.Helper()
	mac := strings.TrimSpace(h.MustRun(t, "cat", "/sys/class/net/"+c.HostIfname+"/address"))
	v6 := strings.Contains(ip, ":")
	first := true
	for _, have := range c.IPs {
		if strings.Contains(have, ":") == v6 {
			first = false
		}
	}
	if v6 {
		c.MustRun(t, "ip", "-6", "addr", "add", ip+"/128", "dev", "eth0", "nodad")
		h.MustRun(t, "ip", "-6", "route", "add", ip+"/128", "dev", c.HostIfname)
		if first {
			c.MustRun(t, "ip", "-6", "neigh", "replace", "fe80::1", "lladdr", mac, "dev", "eth0", "nud", "permanent")
			c.MustRun(t, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0", "src", ip)
		}
	} else {
		c.MustRun(t, "ip", "addr", "add", ip+"/32", "dev", "eth0")
		h.MustRun(t, "ip", "route", "add", ip+"/32", "dev", c.HostIfname)
		if first {
			c.MustRun(t, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
			c.MustRun(t, "ip", "neigh", "replace", "169.254.1.1", "lladdr", mac, "dev", "eth0", "nud", "permanent")
			c.MustRun(t, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "src", ip)
		}
	}
	c.IPs = append(c.IPs, ip)
}

// LinkLabHosts joins two hosts with a veth pair on a /24 (addresses given
// without prefix length, e.g. "10.250.0.1" and "10.250.0.2").
func LinkLabHosts(t testing.TB, a, b *LabHost, aAddr, bAddr string) {
	t.Helper()
	an, bn := LinkName(), LinkName()
	a.MustRun(t, "ip", "link", "add", an, "type", "veth", "peer", "name", bn, "netns", b.Name)
	a.MustRun(t, "ip", "addr", "add", aAddr+"/24", "dev", an)
	b.MustRun(t, "ip", "addr", "add", bAddr+"/24", "dev", bn)
	a.MustRun(t, "ip", "link", "set", an, "up")
	b.MustRun(t, "ip", "link", "set", bn, "up")
	a.Addr, b.Addr = aAddr, bAddr
}

// RouteVia routes dst (an address or CIDR) through gw.
func (h *LabHost) RouteVia(t testing.TB, dst, gw string) {
	t.Helper()
	h.MustRun(t, "ip", "route", "replace", dst, "via", gw)
}

// Ping sends one ICMP echo from n to ip and reports whether a reply came
// back within a second.
func Ping(n *NS, ip string) bool {
	_, err := n.Run("busybox", "ping", "-c", "1", "-W", "1", ip)
	return err == nil
}

// Pingable polls Ping until it succeeds or five seconds pass. Use it for
// pairs that must be reachable (the first packet may wait on neighbour
// resolution).
func Pingable(n *NS, ip string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if Ping(n, ip) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
