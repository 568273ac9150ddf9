package registry

import (
	"fmt"
	"strings"
)

// Prefix is the root of every key Petrel writes.
const Prefix = "/petrel/v1/"

// Key prefixes. See docs/architecture.md for the full layout.
const (
	// PoolsPrefix holds one key per pool: pools/<name> -> Pool.
	PoolsPrefix = Prefix + "pools/"
	// BlocksPrefix holds one key per claimed block:
	// blocks/<pool>/<block-cidr with '/' as '-'> -> block record.
	BlocksPrefix = Prefix + "blocks/"
	// IPsPrefix holds one key per allocated address:
	// ips/<pool>/<ip> -> allocation record.
	IPsPrefix = Prefix + "ips/"
	// HandlesPrefix indexes allocations by handle: handles/<handle>/<ip>.
	HandlesPrefix = Prefix + "handles/"
	// EndpointsPrefix holds endpoint records:
	// endpoints/<host>/<container_id>/<ifname> -> Endpoint.
	EndpointsPrefix = Prefix + "endpoints/"
	// HostsPrefix holds host records under the agent's lease:
	// hosts/<name> -> Host.
	HostsPrefix = Prefix + "hosts/"
	// AppliedPrefix holds each agent's applied revision under its lease:
	// applied/<name> -> decimal revision.
	AppliedPrefix = Prefix + "applied/"
	// DockerNetworksPrefix holds Docker networks bound to pools:
	// docker/networks/<network id> -> JSON.
	DockerNetworksPrefix = Prefix + "docker/networks/"
	// DockerEndpointsPrefix holds the Docker endpoints created on a host,
	// so that Join works after an agent restart:
	// docker/endpoints/<host>/<endpoint id> -> JSON.
	DockerEndpointsPrefix = Prefix + "docker/endpoints/"
)

// DockerEndpointKey is the key of one Docker endpoint created on host.
func DockerEndpointKey(host, endpointID string) string {
	return DockerEndpointsPrefix + host + "/" + endpointID
}

// CIDRKey turns a CIDR into a key segment ("10.0.0.0/26" -> "10.0.0.0-26").
func CIDRKey(cidr string) string { return strings.ReplaceAll(cidr, "/", "-") }

// KeyCIDR is the inverse of CIDRKey.
func KeyCIDR(seg string) string {
	if i := strings.LastIndexByte(seg, '-'); i >= 0 {
		return seg[:i] + "/" + seg[i+1:]
	}
	return seg
}

// PoolKey is the key of a pool record.
func PoolKey(name string) string { return PoolsPrefix + name }

// BlockKey is the key of a block record.
func BlockKey(pool, cidr string) string { return BlocksPrefix + pool + "/" + CIDRKey(cidr) }

// IPKey is the key of one allocated address.
func IPKey(pool, ip string) string { return IPsPrefix + pool + "/" + ip }

// HandleKey is the index key of one address held by a handle.
func HandleKey(handle, ip string) string { return HandlesPrefix + handle + "/" + ip }

// HandlePrefix is the prefix of every address held by a handle.
func HandlePrefix(handle string) string { return HandlesPrefix + handle + "/" }

// EndpointKey is the key of an endpoint record.
func EndpointKey(host, containerID, ifname string) string {
	return EndpointsPrefix + host + "/" + containerID + "/" + ifname
}

// HostEndpointsPrefix is the prefix of every endpoint on a host.
func HostEndpointsPrefix(host string) string { return EndpointsPrefix + host + "/" }

// HostKey is the key of a host record.
func HostKey(name string) string { return HostsPrefix + name }

// AppliedKey is the key of a host's applied revision.
func AppliedKey(name string) string { return AppliedPrefix + name }

// ParseEndpointKey splits an endpoint key into host, container ID and ifname.
func ParseEndpointKey(key string) (host, containerID, ifname string, err error) {
	rest, ok := strings.CutPrefix(key, EndpointsPrefix)
	if !ok {
		return "", "", "", fmt.Errorf("registry: key %q is not an endpoint key", key)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("registry: malformed endpoint key %q", key)
	}
	return parts[0], parts[1], parts[2], nil
}
