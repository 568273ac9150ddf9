package dataplane

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
)

const (
	// HostIfPrefix starts the name of every host-side veth Petrel creates.
	HostIfPrefix = "ptl"
	// tempIfPrefix starts the temporary name of a container side left in the
	// host namespace (HostSideOnly).
	tempIfPrefix = "ptc"
	// retiredIfPrefix starts the name of a retired veth side (see
	// RetireGroup), followed by its ifindex in 8 hex digits.
	retiredIfPrefix = "ptz"
	// RetireGroup is the interface group (IFLA_GROUP) of retired host-side
	// veths awaiting deletion. Deleting a veth costs an RCU grace period
	// (10-40 ms, under the RTNL lock); deleting a whole group pays it once.
	// Petrel only deletes the group in one batch when every member is one
	// of its retired veths, and otherwise deletes its own one by one.
	RetireGroup = 0x7074 // "pt"
	// DefaultIfName is the container interface name when none is given.
	DefaultIfName = "eth0"
	// RouteProtocol marks the host routes Petrel installs to its containers
	// (rtm_protocol; unassigned in iproute2's rt_protos).
	RouteProtocol = 112
	// DefaultMTU is used when no underlay interface can be found.
	DefaultMTU = 1500
)

var (
	// GatewayV4 is every container's IPv4 default gateway. The host side
	// answers ARP for it by proxy ARP; the container also holds a permanent
	// neighbour entry for it.
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	// GatewayV6 is every container's IPv6 default gateway: the link-local
	// address of the host side, derived (EUI-64) from HostMAC.
	GatewayV6 = netip.MustParseAddr("fe80::ecee:eeff:feee:eeee")
	// HostMAC is the MAC address of every host-side veth.
	HostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

var hostIfRe = regexp.MustCompile(`^` + HostIfPrefix + `[0-9a-f]{12}$`)

// HostIfName is the stable name of the host-side veth of a container
// interface: "ptl" and 12 hex digits of sha256(containerID "/" ifname), 15
// characters, the kernel's limit.
func HostIfName(containerID, ifname string) string {
	return HostIfPrefix + nameHash(containerID, ifname)
}

// TempIfName is the temporary name of the container side when it is left in
// the host namespace for the runtime to move (HostSideOnly).
func TempIfName(containerID, ifname string) string {
	return tempIfPrefix + nameHash(containerID, ifname)
}

// retiredIfName is the name of a retired veth side of ifindex index.
func retiredIfName(index int) string { return fmt.Sprintf("%s%08x", retiredIfPrefix, uint32(index)) }

// isRetiredIfName reports whether name has the form retiredIfName gives.
func isRetiredIfName(name string) bool { return retiredIfRe.MatchString(name) }

var retiredIfRe = regexp.MustCompile(`^` + retiredIfPrefix + `[0-9a-f]{8}$`)

// IsHostIfName reports whether name has the form of a Petrel host-side veth.
func IsHostIfName(name string) bool { return hostIfRe.MatchString(name) }

// ContainerMAC is the stable MAC of a container interface: locally
// administered, unicast, from sha256(containerID "/" ifname).
func ContainerMAC(containerID, ifname string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("mac/" + containerID + "/" + ifname))
	return net.HardwareAddr{sum[0]&0xfe | 0x02, sum[1], sum[2], sum[3], sum[4], sum[5]}
}

func nameHash(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	return hex.EncodeToString(sum[:])[:12]
}

// hostPrefix is the host route (and container address) of one address:
// /32 or /128.
func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}
