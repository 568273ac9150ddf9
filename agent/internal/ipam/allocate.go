package ipam

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// held is one address a handle holds, read from its handle index.
type held struct {
	ip   netip.Addr
	pool string
	// created is the CreateRevision of the handle key, which is also that
	// of the address key written in the same transaction.
	created int64
}

// readHandle reads the addresses a handle holds and the revision read at.
func (i *IPAM) readHandle(ctx context.Context, handle string) ([]held, int64, error) {
	r, err := i.get(ctx, registry.HandlePrefix(handle), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	return parseHandleKeys(handle, r.Kvs), r.Header.Revision, nil
}

// parseHandleKeys decodes the handle index keys of one handle.
func parseHandleKeys(handle string, kvs []*mvccpb.KeyValue) []held {
	prefix := registry.HandlePrefix(handle)
	out := make([]held, 0, len(kvs))
	for _, kv := range kvs {
		ip, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), prefix))
		if err != nil {
			continue // not ours to judge; ipam check reports it
		}
		out = append(out, held{ip: ip, pool: string(kv.Value), created: kv.CreateRevision})
	}
	return out
}

// Allocate returns req.NumV4 IPv4 and req.NumV6 IPv6 addresses for
// req.Handle, IPv4 first, each family sorted. It is idempotent: addresses the
// handle already holds in the requested pools count towards the request, and
// only the missing ones are allocated.
//
// Concurrent calls on one IPAM (Allocates and Releases) are group-committed:
// whoever holds the host's lock plans every queued call against the cache
// and commits them in one transaction. A call for a new handle costs one etcd round trip and one
// write (shared with the calls it is batched with); the transaction checks
// that the handle still holds nothing, so an existing handle is caught by the
// compare and answered from the transaction's Else reads.
//
// If ctx ends while the call is being committed by another caller's batch,
// Allocate returns ctx's error and the addresses may still be allocated: a
// retry with the same handle returns them.
func (i *IPAM) Allocate(ctx context.Context, req Request) ([]netip.Addr, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	call := &allocCall{req: req, done: make(chan struct{})}
	if err := i.submit(ctx, call); err != nil {
		return nil, fmt.Errorf("ipam: allocate for %s: %w", req.Handle, err)
	}
	return call.out, nil
}

// submit queues a call and waits for it: either another caller's batch
// finishes it, or this caller takes the host's lock and runs a batch itself.
func (i *IPAM) submit(ctx context.Context, call *allocCall) error {
	i.qmu.Lock()
	i.queue = append(i.queue, call)
	i.qmu.Unlock()
	for {
		select {
		case <-call.done:
			return call.err
		case i.sem <- struct{}{}:
			i.runBatchLocked(context.WithoutCancel(ctx))
			i.unlock()
		case <-ctx.Done():
			i.qmu.Lock()
			i.queue = slices.DeleteFunc(i.queue, func(c *allocCall) bool { return c == call })
			i.qmu.Unlock()
			return ctx.Err()
		}
	}
}

// allocCall is one queued Allocate, or one chunk of a Release when rel is
// set. out holds the allocated (or freed) addresses.
type allocCall struct {
	req  Request
	have []held // what the handle holds, as last seen
	hrev int64  // revision have was read at; 0 means "assumed empty"
	rel  *releaseCall
	new  []held // addresses planned for this call in the current attempt
	out  []netip.Addr
	err  error
	done chan struct{}
}

// releaseCall is one chunk of a Release.
type releaseCall struct {
	handle  string
	ips     []netip.Addr
	indexed map[netip.Addr]held
	slow    bool // read every address first (after a failed attempt)
	// cached: ips and indexed come from the IPAM's memory of the handle as
	// of hrev, not from a read; a failed attempt then fails the call with
	// errStaleHandle and Release reads the handle.
	cached bool
	hrev   int64
}

// errStaleHandle makes Release read a handle it took from memory.
var errStaleHandle = errors.New("ipam: remembered handle is stale")

// handle returns the handle a call writes, "" for a release by address.
func (c *allocCall) handle() string {
	if c.rel != nil {
		return c.rel.handle
	}
	return c.req.Handle
}

// addrs returns how many addresses a call may write.
func (c *allocCall) addrs() int {
	if c.rel != nil {
		return len(c.rel.ips)
	}
	return c.req.NumV4 + c.req.NumV6
}

func (c *allocCall) finish(out []netip.Addr, err error) {
	c.out, c.err = out, err
	close(c.done)
}

// Batch limits keep one transaction well under etcd's 128 operations.
const maxBatchCalls = 16

// takeBatch dequeues calls whose addresses fit in one transaction, at most
// one per handle (two calls of one handle in one transaction would both see
// the handle empty) and at most one release per address.
func (i *IPAM) takeBatch() []*allocCall {
	i.qmu.Lock()
	defer i.qmu.Unlock()
	var batch, rest []*allocCall
	handles := map[string]bool{}
	ips := map[netip.Addr]bool{}
	n := 0
	for _, c := range i.queue {
		k, h := c.addrs(), c.handle()
		clash := h != "" && handles[h]
		if c.rel != nil {
			clash = clash || slices.ContainsFunc(c.rel.ips, func(ip netip.Addr) bool { return ips[ip] })
		}
		if clash || len(batch) == maxBatchCalls || (len(batch) > 0 && n+k > MaxAddresses) {
			rest = append(rest, c)
			continue
		}
		handles[h] = h != ""
		if c.rel != nil {
			for _, ip := range c.rel.ips {
				ips[ip] = true
			}
		}
		batch = append(batch, c)
		n += k
	}
	i.queue = rest
	return batch
}

// runBatchLocked allocates for the queued calls with one transaction per
// attempt. Errors of one call (unknown pool, exhausted) finish that call
// only; etcd errors finish the whole batch.
func (i *IPAM) runBatchLocked(ctx context.Context) {
	batch := i.takeBatch()
	refreshed := false
	for attempt := 0; len(batch) > 0; {
		if attempt >= i.maxRetries {
			for _, call := range batch {
				call.finish(nil, fmt.Errorf("%w: gave up after %d conflicting attempts", ErrConflict, i.maxRetries))
			}
			return
		}
		c := newChange()
		outs := make([][]netip.Addr, len(batch))
		bad := -1
		var err error
		for k, call := range batch {
			if call.rel != nil {
				outs[k], err = i.planReleaseLocked(ctx, c, call.rel)
			} else {
				outs[k], err = i.planLocked(ctx, c, call)
			}
			if err != nil {
				bad = k
				break
			}
		}
		if bad >= 0 {
			if errors.Is(err, ErrExhausted) && !refreshed {
				// The cache may be stale: read everything again once.
				refreshed = true
				for _, ps := range i.pools {
					ps.loaded = false
				}
				if err = i.loadPoolsLocked(ctx, true); err == nil {
					continue
				}
			}
			if isCallError(err) {
				batch[bad].finish(nil, err)
				batch = slices.Delete(batch, bad, bad+1)
				continue
			}
			for _, call := range batch {
				call.finish(nil, err)
			}
			return
		}
		ok := true
		if !c.empty() {
			if ok, err = i.commitLocked(ctx, c); err != nil {
				for _, call := range batch {
					call.finish(nil, err)
				}
				return
			}
		}
		if ok {
			for k, call := range batch {
				if call.rel == nil && len(call.new) > 0 {
					have := slices.Clone(call.have)
					for _, h := range call.new {
						h.created = c.committed
						have = append(have, h)
					}
					i.rememberHandle(call.req.Handle, handleState{have: have, rev: c.committed})
				}
				call.finish(outs[k], nil)
			}
			return
		}
		batch = slices.DeleteFunc(batch, func(call *allocCall) bool {
			if call.rel != nil && call.rel.cached {
				call.finish(nil, errStaleHandle)
				return true
			}
			return false
		})
		for _, call := range batch {
			if call.rel != nil {
				call.rel.slow = true
			} else if h, seen := c.handleSeen[call.req.Handle]; seen {
				call.have, call.hrev = h.have, h.rev
			}
		}
		attempt++
	}
}

// isCallError reports whether err concerns one call rather than etcd.
func isCallError(err error) bool {
	return errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrExhausted) || errors.Is(err, ErrNotFound)
}

// family is one address family of a request.
type family struct {
	is4   bool
	n     int
	pools []*poolState
}

// familiesLocked resolves the pools of each requested family.
func (i *IPAM) familiesLocked(ctx context.Context, req Request) ([]family, error) {
	if err := i.loadPoolsLocked(ctx, false); err != nil {
		return nil, err
	}
	var v4, v6 *poolState
	if req.Pool != "" {
		ps, err := i.findPoolLocked(ctx, "pool", req.Pool)
		if err != nil {
			return nil, err
		}
		if ps.geo.is4 {
			v4 = ps
		} else {
			v6 = ps
		}
	}
	if req.PoolV6 != "" {
		ps, err := i.findPoolLocked(ctx, "pool_v6", req.PoolV6)
		if err != nil {
			return nil, err
		}
		if ps.geo.is4 {
			return nil, fieldErr("pool_v6", "pool %s (%s) is IPv4", ps.pool.Name, ps.pool.CIDR)
		}
		if v6 != nil && v6 != ps {
			return nil, fieldErr("pool", "pool %s is IPv6 and pool_v6 names another pool", v6.pool.Name)
		}
		v6 = ps
	}
	var out []family
	for _, f := range []struct {
		is4      bool
		n        int
		explicit *poolState
	}{{true, req.NumV4, v4}, {false, req.NumV6, v6}} {
		if f.n == 0 {
			continue
		}
		fam := family{is4: f.is4, n: f.n}
		if f.explicit != nil {
			if f.explicit.pool.Disabled {
				return nil, fieldErr(map[bool]string{true: "pool", false: "pool_v6"}[f.is4], "pool %s is disabled", f.explicit.pool.Name)
			}
			fam.pools = []*poolState{f.explicit}
		} else {
			for _, ps := range i.sortedPoolsLocked() {
				if ps.geo.is4 == f.is4 && !ps.pool.Disabled {
					fam.pools = append(fam.pools, ps)
				}
			}
		}
		if len(fam.pools) == 0 {
			name := map[bool]string{true: "IPv4", false: "IPv6"}[f.is4]
			return nil, &FieldError{Field: map[bool]string{true: "num_ipv4", false: "num_ipv6"}[f.is4],
				Reason: "no enabled " + name + " pool", cause: ErrNotFound}
		}
		out = append(out, fam)
	}
	return out, nil
}

// planLocked adds the writes of one call to c and returns the addresses the
// call will get if c commits.
func (i *IPAM) planLocked(ctx context.Context, c *change, call *allocCall) ([]netip.Addr, error) {
	req := call.req
	call.new = nil
	fams, err := i.familiesLocked(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, f := range fams {
		var got []netip.Addr
		for _, h := range call.have {
			if h.ip.Is4() == f.is4 && slices.ContainsFunc(f.pools, func(ps *poolState) bool { return ps.pool.Name == h.pool }) {
				got = append(got, h.ip)
			}
		}
		slices.SortFunc(got, netip.Addr.Compare)
		if len(got) >= f.n {
			out = append(out, got[:f.n]...)
			continue
		}
		ips, err := i.pickLocked(ctx, c, req, f, f.n-len(got))
		if err != nil {
			return nil, err
		}
		c.checkHandle(req.Handle, call.hrev)
		for _, ip := range ips {
			call.new = append(call.new, held{ip: ip, pool: c.poolOf[ip]})
		}
		got = append(got, ips...)
		slices.SortFunc(got, netip.Addr.Compare)
		out = append(out, got...)
	}
	return out, nil
}

// pickLocked chooses n free addresses of one family and adds them to c:
// first from this host's blocks, then from newly claimed blocks, then
// borrowed from other hosts' blocks.
func (i *IPAM) pickLocked(ctx context.Context, c *change, req Request, f family, n int) ([]netip.Addr, error) {
	var out []netip.Addr
	take := func(ps *poolState, cidr netip.Prefix, bs *blockState) {
		g := ps.geo
		bc := c.block(ps, cidr, bs, i.host, i.now())
		size := g.blockCap()
		free := int64(size) - int64(bc.rec.Allocated+len(bc.added)-len(bc.removed))
		var start uint64
		var used map[netip.Addr]bool
		if bs != nil {
			start, used = bs.cursor%size, bs.used
		}
		for k := uint64(0); k < size && len(out) < n && free > 0; k++ {
			ip := g.nth(cidr, (start+k)%size)
			if used[ip] || c.picked[ip] {
				continue
			}
			c.add(bc, registry.Allocation{
				IP: ip.String(), Handle: req.Handle, Host: i.host, Pool: ps.pool.Name, Block: cidr.String(),
				Created: i.now().UTC(), Netgroups: req.Netgroups, Labels: req.Labels,
			}, ip)
			out = append(out, ip)
			free--
		}
	}
	hasRoom := func(ps *poolState, cidr netip.Prefix, bs *blockState) bool {
		alloc := bs.rec.Allocated
		if bc, ok := c.blocks[cidr]; ok {
			alloc += len(bc.added) - len(bc.removed)
		}
		return uint64(alloc) < ps.geo.blockCap()
	}
	for _, ps := range f.pools {
		if err := i.loadBlocksLocked(ctx, ps); err != nil {
			return nil, err
		}
		// 1. This host's blocks, in address order.
		for _, cidr := range sortedBlocks(ps, func(b *blockState) bool { return b.rec.Host == i.host }) {
			if len(out) == n {
				return out, nil
			}
			bs := ps.blocks[cidr]
			if !hasRoom(ps, cidr, bs) {
				continue
			}
			if err := i.loadUsedLocked(ctx, ps, cidr, bs); errors.Is(err, errBlockGone) {
				continue
			} else if err != nil {
				return nil, err
			}
			if hasRoom(ps, cidr, bs) {
				take(ps, cidr, bs)
			}
		}
		// 2. Claim free blocks, searching from a per-host starting point.
		g := ps.geo
		nb, start := g.numBlocks(), g.startIndex(i.host, ps.pool.Name)
		limit := uint64(len(ps.blocks) + len(c.blocks) + n)
		for k := uint64(0); k < nb && k <= limit && len(out) < n; k++ {
			cidr := g.block((start + k) & (nb - 1))
			if _, ok := ps.blocks[cidr]; ok {
				continue
			}
			if _, ok := c.blocks[cidr]; ok && c.blocks[cidr].exists {
				continue
			}
			take(ps, cidr, nil)
		}
		// 3. Borrow from other hosts' blocks, starting at a per-host offset
		// so that borrowers spread out.
		others := sortedBlocks(ps, func(b *blockState) bool { return b.rec.Host != i.host })
		off := 0
		if len(others) > 0 {
			off = int(g.startIndex(i.host, ps.pool.Name) % uint64(len(others)))
		}
		for k := range others {
			if len(out) == n {
				return out, nil
			}
			cidr := others[(off+k)%len(others)]
			bs := ps.blocks[cidr]
			if !hasRoom(ps, cidr, bs) {
				continue
			}
			if err := i.loadUsedLocked(ctx, ps, cidr, bs); errors.Is(err, errBlockGone) {
				continue
			} else if err != nil {
				return nil, err
			}
			if hasRoom(ps, cidr, bs) {
				take(ps, cidr, bs)
			}
		}
		if len(out) == n {
			return out, nil
		}
	}
	return nil, exhausted(f.pools)
}

// sortedBlocks returns the cached blocks of a pool that match keep, in
// address order.
func sortedBlocks(ps *poolState, keep func(*blockState) bool) []netip.Prefix {
	var out []netip.Prefix
	for cidr, bs := range ps.blocks {
		if keep(bs) {
			out = append(out, cidr)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// exhausted describes the pools of a family that ran out, from the cache
// (which the caller has just refreshed).
func exhausted(pools []*poolState) error {
	var names []string
	var alloc, capacity uint64
	for _, ps := range pools {
		names = append(names, ps.pool.Name)
		capacity = satAdd(capacity, ps.geo.capacity())
		for _, bs := range ps.blocks {
			alloc += uint64(bs.rec.Allocated)
		}
	}
	return &ExhaustedError{Pool: strings.Join(names, ","), Allocated: alloc, Capacity: capacity}
}

func satAdd(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxUint64
}
