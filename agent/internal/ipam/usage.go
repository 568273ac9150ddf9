package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// BlockUsage is the utilisation of one claimed block. Borrowed counts the
// addresses held by hosts other than the block's host.
type BlockUsage struct {
	CIDR, Host                    string
	Capacity, Allocated, Borrowed uint64
}

// PoolUsage is the utilisation of one pool.
type PoolUsage struct {
	Pool                Pool
	Capacity, Allocated uint64
	Blocks              []BlockUsage
}

// matchPools returns the pools named (by name or CIDR) by ref, or all of
// them when ref is empty.
func (i *IPAM) matchPools(ctx context.Context, ref string) ([]*poolState, error) {
	pools, _, err := i.readPools(ctx)
	if err != nil {
		return nil, err
	}
	if ref == "" {
		return pools, nil
	}
	pfx, perr := netip.ParsePrefix(ref)
	for _, ps := range pools {
		if ps.pool.Name == ref || perr == nil && ps.geo.prefix == pfx.Masked() {
			return []*poolState{ps}, nil
		}
	}
	return nil, fmt.Errorf("%w: pool %s", ErrNotFound, ref)
}

// Usage reports the utilisation of one pool (by name or CIDR), or of every
// pool when pool is empty. It reads the pool's blocks and allocations, so it
// is for operators, not for the allocation path.
func (i *IPAM) Usage(ctx context.Context, pool string) ([]PoolUsage, error) {
	pools, err := i.matchPools(ctx, pool)
	if err != nil {
		return nil, err
	}
	var out []PoolUsage
	for _, ps := range pools {
		name := ps.pool.Name
		br, err := i.get(ctx, poolBlocksPrefix(name), clientv3.WithPrefix())
		if err != nil {
			return nil, err
		}
		ir, err := i.get(ctx, poolIPsPrefix(name), clientv3.WithPrefix(), clientv3.WithRev(br.Header.Revision))
		if err != nil {
			return nil, err
		}
		u := PoolUsage{Pool: ps.pool, Capacity: ps.geo.capacity(), Allocated: uint64(len(ir.Kvs))}
		idx := map[string]int{}
		for _, kv := range br.Kvs {
			b, err := registry.DecodeBlock(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("ipam: block %s: %w", kv.Key, err)
			}
			idx[b.CIDR] = len(u.Blocks)
			u.Blocks = append(u.Blocks, BlockUsage{CIDR: b.CIDR, Host: b.Host, Capacity: ps.geo.blockCap()})
		}
		for _, kv := range ir.Kvs {
			a, err := registry.DecodeAllocation(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("ipam: allocation %s: %w", kv.Key, err)
			}
			k, ok := idx[a.Block]
			if !ok {
				continue
			}
			u.Blocks[k].Allocated++
			if a.Host != u.Blocks[k].Host {
				u.Blocks[k].Borrowed++
			}
		}
		slices.SortFunc(u.Blocks, func(a, b BlockUsage) int {
			return netip.MustParsePrefix(a.CIDR).Addr().Compare(netip.MustParsePrefix(b.CIDR).Addr())
		})
		out = append(out, u)
	}
	return out, nil
}

// Allocations lists allocation records, optionally only those of one pool
// (by name or CIDR) and/or one handle, sorted by pool and address.
func (i *IPAM) Allocations(ctx context.Context, pool, handle string) ([]registry.Allocation, error) {
	if pool != "" {
		ps, err := i.matchPools(ctx, pool)
		if err != nil {
			return nil, err
		}
		pool = ps[0].pool.Name
	}
	var out []registry.Allocation
	if handle != "" {
		if err := checkHandle(handle); err != nil {
			return nil, err
		}
		have, _, err := i.readHandle(ctx, handle)
		if err != nil {
			return nil, err
		}
		for start := 0; start < len(have); start += 120 {
			var ops []clientv3.Op
			for _, h := range have[start:min(start+120, len(have))] {
				ops = append(ops, clientv3.OpGet(ipKey(h.pool, h.ip)))
			}
			r, err := i.txn(ctx, nil, ops, nil)
			if err != nil {
				return nil, err
			}
			for _, resp := range r.Responses {
				for _, kv := range resp.GetResponseRange().Kvs {
					a, err := registry.DecodeAllocation(kv.Value)
					if err != nil {
						return nil, fmt.Errorf("ipam: allocation %s: %w", kv.Key, err)
					}
					if a.Handle == handle && (pool == "" || a.Pool == pool) {
						out = append(out, a)
					}
				}
			}
		}
	} else {
		prefix := registry.IPsPrefix
		if pool != "" {
			prefix = poolIPsPrefix(pool)
		}
		r, err := i.get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return nil, err
		}
		for _, kv := range r.Kvs {
			a, err := registry.DecodeAllocation(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("ipam: allocation %s: %w", kv.Key, err)
			}
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b registry.Allocation) int {
		if c := strings.Compare(a.Pool, b.Pool); c != 0 {
			return c
		}
		x, _ := netip.ParseAddr(a.IP)
		y, _ := netip.ParseAddr(b.IP)
		return x.Compare(y)
	})
	return out, nil
}

// FreeHostBlocks drops the block records of host that hold no allocation,
// for `petrelctl host remove`. It returns the freed block CIDRs. Blocks that
// still hold addresses keep their record (and their host's affinity).
func (i *IPAM) FreeHostBlocks(ctx context.Context, host string) ([]string, error) {
	if err := checkSegment("host", host); err != nil {
		return nil, err
	}
	if err := i.lock(ctx); err != nil {
		return nil, err
	}
	defer i.unlock()
	if err := i.loadPoolsLocked(ctx, true); err != nil {
		return nil, err
	}
	r, err := i.get(ctx, registry.BlocksPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var freed []string
	for _, kv := range r.Kvs {
		b, err := registry.DecodeBlock(kv.Value)
		if err != nil {
			return freed, fmt.Errorf("ipam: block %s: %w", kv.Key, err)
		}
		if b.Host != host {
			continue
		}
		cidr, err := netip.ParsePrefix(b.CIDR)
		ps := i.pools[b.Pool]
		if err != nil || ps == nil {
			continue
		}
		// Count the addresses actually held, in case the record's count drifted.
		bs := &blockState{rec: b, rev: kv.ModRevision}
		if err := i.loadUsedLocked(ctx, ps, cidr, bs); err != nil {
			if errors.Is(err, errBlockGone) {
				continue
			}
			return freed, err
		}
		if len(bs.used) > 0 {
			continue
		}
		t, err := i.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", bs.rev)},
			[]clientv3.Op{clientv3.OpDelete(string(kv.Key))}, nil)
		if err != nil {
			return freed, fmt.Errorf("ipam: free block %s of %s: %w", b.CIDR, host, err)
		}
		if t.Succeeded {
			delete(ps.blocks, cidr)
			freed = append(freed, b.CIDR)
		}
	}
	return freed, nil
}
