// Package ipam allocates container addresses from pools stored in etcd.
//
// A pool is cut into blocks (/26 for IPv4, /122 for IPv6 by default). A host
// claims a free block by creating its record, and hands out the block's
// addresses with transactions that compare the block record's ModRevision
// and each address key's absence. When no block is free, a host borrows
// single addresses from other hosts' blocks, so a pool is usable to its last
// address. Every allocation carries a handle (the container ID or
// net-modules uid); Allocate and Reserve are idempotent per handle, and
// Release works by handle or by address.
//
// Key layout (see agent/registry):
//
//	pools/<name>                  -> Pool (JSON)
//	blocks/<pool>/<cidr with '-'> -> registry.Block {pool,cidr,host,allocated,claimed}
//	ips/<pool>/<ip>               -> registry.Allocation
//	handles/<handle>/<ip>         -> pool name (index for release by handle)
//
// Transactions (every write is one of these):
//
//	allocate  If(pool ModRev == seen,
//	             handle prefix ModRev < seen+1 (0: the handle holds nothing),
//	             block ModRev == seen  | block CreateRev == 0 (claim),
//	             ip CreateRev == 0 ...)
//	          Then(put block{allocated+n}, put ip, put handle ...)
//	          Else(get pool, get handle prefix, get block, get ip ...)
//	reserve   same shape, for given addresses; no handle compare
//	release   If(pool, block ModRev == seen, ip CreateRev == seen ...)
//	          Then(put block{allocated-n} | delete block when it reaches 0,
//	               delete ip, delete handle ...)
//	add pool  If(pool CreateRev == 0, pools/ prefix ModRev < read+1) Then(put pool)
//	del pool  If(pool ModRev == seen, ips/<pool>/ prefix CreateRev == 0)
//	          Then(delete pool, delete blocks/<pool>/ prefix)
//
// The in-memory cache of pools, blocks and used addresses only chooses
// candidates; correctness comes from the compares. A failed compare refreshes
// the cache from the Else reads and retries, a bounded number of times.
// Concurrent Allocates and Releases on one IPAM are group-committed: whoever
// takes the host's lock plans every queued call and commits them in one
// transaction (at most one call per handle, MaxAddresses addresses).
// Allocation records are never updated, so an address key's CreateRevision
// (equal to its handle key's) identifies an allocation; releasing by handle
// needs no read of the address keys.
package ipam
