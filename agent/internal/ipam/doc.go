// Package ipam allocates container addresses from pools stored in etcd.
//
// A pool is cut into blocks (/26 for IPv4, /122 for IPv6 by default). A host
// claims a free block with one create-if-absent transaction and then hands
// out the block's addresses, each with one transaction that compares the
// block record's ModRevision and the address key's absence. When no block is
// free, a host borrows single addresses from other hosts' blocks, so a pool
// is usable to its last address. Every allocation carries a handle (the
// container ID or net-modules uid); Allocate and Reserve are idempotent per
// handle, and Release works by handle or by address.
//
// Key layout (see agent/registry):
//
//	pools/<name>                  -> Pool (JSON)
//	blocks/<pool>/<cidr with '-'> -> registry.Block {pool,cidr,host,allocated,claimed}
//	ips/<pool>/<ip>               -> registry.Allocation
//	handles/<handle>/<ip>         -> pool name (index for release by handle)
//
// The in-memory cache of blocks and used addresses only chooses candidates;
// correctness comes from the compares of each transaction. A failed compare
// refreshes the cache from the transaction's Else reads and retries, a
// bounded number of times.
package ipam
