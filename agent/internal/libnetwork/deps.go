package libnetwork

import (
	"context"
	"net/netip"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
)

// IPAM is the part of Petrel's IPAM (agent/internal/ipam) the IPAM driver
// uses.
type IPAM interface {
	// Allocate returns addresses held by req.Handle.
	Allocate(ctx context.Context, req ipam.Request) ([]netip.Addr, error)
	// Reserve holds given addresses for the handle.
	Reserve(ctx context.Context, handle string, ips []netip.Addr, netgroups []string, labels map[string]string) ([]netip.Addr, error)
	// Release frees the handle's addresses among ips; what is already free
	// counts as success.
	Release(ctx context.Context, handle string, ips []netip.Addr) ([]netip.Addr, error)
	// ListPools returns every pool.
	ListPools(ctx context.Context) ([]ipam.Pool, error)
}

// Dataplane creates and removes container interfaces and keeps their
// endpoint records (agent/internal/dataplane).
type Dataplane interface {
	Attach(ctx context.Context, s dataplane.Spec) (dataplane.Result, error)
	// Detach removes a container's interfaces (all when ifname is empty);
	// removing what is gone succeeds.
	Detach(ctx context.Context, containerID, ifname, netns string) (bool, error)
}

// Store is the slice of etcd the drivers use.
type Store interface {
	// Get returns the value at key, or nil when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put writes key.
	Put(ctx context.Context, key string, val []byte) error
	// Delete removes key; a missing key is success.
	Delete(ctx context.Context, key string) error
	// Update applies fn to the current value (nil when absent) and writes its
	// result with a compare on the key's revision, retrying on conflict.
	// fn returning nil leaves the key alone.
	Update(ctx context.Context, key string, fn func(old []byte) ([]byte, error)) error
	// List returns every key under prefix with its value.
	List(ctx context.Context, prefix string) (map[string][]byte, error)
}

// HostNet keeps the root network namespace safe for Petrel's routes.
type HostNet interface {
	// EnsureUnreachable installs an unreachable route for a pool, so traffic
	// for an address of the pool that has no container never leaves the host.
	EnsureUnreachable(ctx context.Context, pool netip.Prefix) error
	// EnsureForwarding lets packets to and from Petrel interfaces through the
	// host's forward filter even when its policy is DROP (Docker's).
	EnsureForwarding(ctx context.Context) error
	// FastProxyARP makes a host-side veth answer proxy ARP at once. The
	// kernel delays proxied answers to broadcast requests by up to
	// proxy_delay (0.8 s); Docker containers, unlike the other paths, have no
	// permanent neighbour entry for the gateway and must ARP for it.
	FastProxyARP(ctx context.Context, ifname string) error
	// Cleanup removes everything the Ensure calls installed.
	Cleanup(ctx context.Context) error
}
