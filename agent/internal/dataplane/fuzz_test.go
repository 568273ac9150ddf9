package dataplane

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzSpecNormalize checks that request validation never panics and that
// whatever it accepts yields a valid host interface name and absolute netns.
func FuzzSpecNormalize(f *testing.F) {
	f.Add("ctr-1", "eth0", "/run/netns/x", 0, "10.0.0.2")               // the common case
	f.Add("ctr-1", "", "", 42, "fd00::2")                               // pid instead of a path
	f.Add("a/b", "eth0", "/n", 0, "10.0.0.2")                           // slash in the ID
	f.Add("c", "0123456789abcdef", "/n", 0, "10.0.0.2")                 // ifname too long
	f.Add("c", "eth0", "rel", 0, "::ffff:10.0.0.2")                     // relative netns, mapped v4
	f.Add("c", "eth0", "/n", -1, "fe80::1%eth0")                        // zone
	f.Add(strings.Repeat("x", 300), "eth0", "/n", 0, "255.255.255.255") // long ID, broadcast
	f.Fuzz(func(t *testing.T, id, ifname, netns string, pid int, ip string) {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return
		}
		s := Spec{ContainerID: id, IfName: ifname, Netns: netns, PID: pid, IPs: []netip.Addr{a}}
		if err := s.normalize(); err != nil {
			return
		}
		if !strings.HasPrefix(s.Netns, "/") || s.IfName == "" || len(s.IfName) > 15 {
			t.Fatalf("accepted %+v", s)
		}
		if n := HostIfName(s.ContainerID, s.IfName); !IsHostIfName(n) {
			t.Fatalf("host name %q", n)
		}
		if strings.Contains(s.ContainerID, "/") {
			t.Fatalf("accepted ID with slash %q", s.ContainerID)
		}
	})
}
