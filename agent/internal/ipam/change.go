package ipam

import (
	"context"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// change is the set of writes of one transaction: decide (fill a change from
// the cache) then do (commit it with compares).
type change struct {
	// handles must have gained no key since the given revision (0: must
	// hold none): this stops two concurrent Allocates of one handle from
	// both adding. handleSeen holds their keys as read by a failed commit.
	handles    []handleCheck
	handleSeen map[string]handleCheck
	pools      map[string]*poolState
	poolOrder  []string
	blocks     map[netip.Prefix]*blockChange
	order      []netip.Prefix
	puts       []registry.Allocation
	dels       []delAlloc
	picked     map[netip.Addr]bool
	poolOf     map[netip.Addr]string // pool of each picked address
	committed  int64                 // revision of the commit, once committed
	// unindex lists stale handle keys to drop (handle key without its address).
	unindex []string
}

// blockChange is the planned update of one block record.
type blockChange struct {
	ps      *poolState
	cidr    netip.Prefix
	exists  bool // false: the record is created (compare CreateRevision == 0)
	rev     int64
	rec     registry.Block
	added   []netip.Addr
	removed []netip.Addr
}

// delAlloc is an address to free. Allocation records are never updated, so
// the CreateRevision of the address key identifies the allocation.
type delAlloc struct {
	pool    string
	ip      netip.Addr
	handle  string
	created int64
}

// handleCheck is a handle whose keys a change compares.
type handleCheck struct {
	handle string
	rev    int64
	have   []held
}

func newChange() *change {
	return &change{
		pools:  map[string]*poolState{},
		blocks: map[netip.Prefix]*blockChange{},
		picked: map[netip.Addr]bool{},
		poolOf: map[netip.Addr]string{},
	}
}

// checkHandle makes the change require that handle gained no key since rev.
func (c *change) checkHandle(handle string, rev int64) {
	if !slices.ContainsFunc(c.handles, func(h handleCheck) bool { return h.handle == handle }) {
		c.handles = append(c.handles, handleCheck{handle: handle, rev: rev})
	}
}

func (c *change) empty() bool { return len(c.puts) == 0 && len(c.dels) == 0 && len(c.unindex) == 0 }

// block returns the change of a block, starting it from the record seen
// (bs == nil: the block has no record and will be created for host).
func (c *change) block(ps *poolState, cidr netip.Prefix, bs *blockState, host string, now time.Time) *blockChange {
	if bc, ok := c.blocks[cidr]; ok {
		return bc
	}
	if _, ok := c.pools[ps.pool.Name]; !ok {
		c.pools[ps.pool.Name] = ps
		c.poolOrder = append(c.poolOrder, ps.pool.Name)
	}
	bc := &blockChange{ps: ps, cidr: cidr}
	if bs != nil {
		bc.exists, bc.rev, bc.rec = true, bs.rev, bs.rec
	} else {
		bc.rec = registry.Block{Pool: ps.pool.Name, CIDR: cidr.String(), Host: host, Claimed: now.UTC()}
	}
	c.blocks[cidr] = bc
	c.order = append(c.order, cidr)
	return bc
}

func (c *change) add(bc *blockChange, a registry.Allocation, ip netip.Addr) {
	bc.added = append(bc.added, ip)
	c.picked[ip] = true
	c.poolOf[ip] = a.Pool
	c.puts = append(c.puts, a)
}

func (c *change) remove(bc *blockChange, d delAlloc) {
	bc.removed = append(bc.removed, d.ip)
	c.dels = append(c.dels, d)
}

// commit runs the change as one transaction. It reports false when a compare
// failed; the cache is then refreshed from the Else reads.
func (i *IPAM) commitLocked(ctx context.Context, c *change) (bool, error) {
	var cmps []clientv3.Cmp
	var then, els []clientv3.Op
	for _, name := range c.poolOrder {
		ps := c.pools[name]
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(registry.PoolKey(name)), "=", ps.rev))
		els = append(els, clientv3.OpGet(registry.PoolKey(name), clientv3.WithKeysOnly()))
	}
	for _, h := range c.handles {
		prefix := registry.HandlePrefix(h.handle)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(prefix), "<", h.rev+1).WithPrefix())
		els = append(els, clientv3.OpGet(prefix, clientv3.WithPrefix()))
	}
	for _, cidr := range c.order {
		bc := c.blocks[cidr]
		key := blockKey(bc.ps.pool.Name, cidr)
		if bc.exists {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", bc.rev))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		}
		els = append(els, clientv3.OpGet(key))
		rec := bc.rec
		rec.Allocated += len(bc.added) - len(bc.removed)
		if rec.Allocated <= 0 {
			if bc.exists {
				then = append(then, clientv3.OpDelete(key))
			}
			continue
		}
		val, err := registry.EncodeJSON(rec)
		if err != nil {
			return false, err
		}
		then = append(then, clientv3.OpPut(key, string(val)))
	}
	for _, a := range c.puts {
		key := registry.IPKey(a.Pool, a.IP)
		val, err := registry.EncodeJSON(a)
		if err != nil {
			return false, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		then = append(then, clientv3.OpPut(key, string(val)), clientv3.OpPut(registry.HandleKey(a.Handle, a.IP), a.Pool))
		els = append(els, clientv3.OpGet(key, clientv3.WithKeysOnly()))
	}
	for _, d := range c.dels {
		key := ipKey(d.pool, d.ip)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", d.created))
		then = append(then, clientv3.OpDelete(key), clientv3.OpDelete(handleKey(d.handle, d.ip)))
		els = append(els, clientv3.OpGet(key, clientv3.WithKeysOnly()))
	}
	for _, k := range c.unindex {
		then = append(then, clientv3.OpDelete(k))
	}
	r, err := i.txn(ctx, cmps, then, els)
	if err != nil {
		return false, err
	}
	if r.Succeeded {
		c.committed = r.Header.Revision
		i.applyLocked(c, r.Header.Revision)
		return true, nil
	}
	i.refreshLocked(c, r)
	return false, nil
}

// applyLocked updates the cache after a committed change.
func (i *IPAM) applyLocked(c *change, rev int64) {
	for _, cidr := range c.order {
		bc := c.blocks[cidr]
		rec := bc.rec
		rec.Allocated += len(bc.added) - len(bc.removed)
		if rec.Allocated <= 0 {
			delete(bc.ps.blocks, cidr)
			continue
		}
		bs := bc.ps.blocks[cidr]
		switch {
		case !bc.exists: // we created it: we know every address in it
			bs = &blockState{used: map[netip.Addr]bool{}}
			bc.ps.blocks[cidr] = bs
		case bs == nil:
			bs = &blockState{}
			bc.ps.blocks[cidr] = bs
		}
		bs.rec, bs.rev = rec, rev
		if bs.used != nil {
			for _, ip := range bc.added {
				bs.used[ip] = true
				bs.cursor = bc.ps.geo.offset(ip) + 1
			}
			for _, ip := range bc.removed {
				delete(bs.used, ip)
			}
		}
	}
}

// refreshLocked updates the cache from the Else reads of a failed change.
func (i *IPAM) refreshLocked(c *change, r *clientv3.TxnResponse) {
	k := 0
	next := func() *clientv3.GetResponse {
		g := (*clientv3.GetResponse)(r.Responses[k].GetResponseRange())
		k++
		return g
	}
	for _, name := range c.poolOrder {
		ps := c.pools[name]
		g := next()
		if len(g.Kvs) == 0 || g.Kvs[0].ModRevision != ps.rev {
			i.poolsRead = i.poolsRead.AddDate(-1, 0, 0) // re-read pools next time
		}
	}
	c.handleSeen = map[string]handleCheck{}
	for _, h := range c.handles {
		g := next()
		h.have = parseHandleKeys(h.handle, g.Kvs)
		h.rev = r.Header.Revision
		c.handleSeen[h.handle] = h
	}
	for _, cidr := range c.order {
		bc := c.blocks[cidr]
		g := next()
		if len(g.Kvs) == 0 {
			delete(bc.ps.blocks, cidr)
			continue
		}
		b, err := registry.DecodeBlock(g.Kvs[0].Value)
		if err != nil {
			bc.ps.loaded = false
			continue
		}
		bs := bc.ps.blocks[cidr]
		if bs == nil {
			bs = &blockState{}
			bc.ps.blocks[cidr] = bs
		}
		if bs.rev != g.Kvs[0].ModRevision {
			bs.rec, bs.rev = b, g.Kvs[0].ModRevision
		}
	}
	mark := func(pool string, ip netip.Addr, used bool) {
		ps := c.pools[pool]
		if ps == nil {
			return
		}
		bs := ps.blocks[ps.geo.blockOf(ip)]
		if bs == nil || bs.used == nil {
			return
		}
		if used {
			bs.used[ip] = true
		} else {
			delete(bs.used, ip)
		}
	}
	for _, a := range c.puts {
		ip, _ := netip.ParseAddr(a.IP)
		mark(a.Pool, ip, len(next().Kvs) > 0)
	}
	for _, d := range c.dels {
		mark(d.pool, d.ip, len(next().Kvs) > 0)
	}
}
