package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// Reserve claims the given addresses for handle in one transaction: all of
// them or none. Addresses the handle already holds count as reserved; an
// address held by another handle fails the call with ErrConflict naming it.
// A reserved address in a block without a record claims that block for this
// host; one in another host's block is borrowed.
func (i *IPAM) Reserve(ctx context.Context, handle string, ips []netip.Addr, netgroups []string, labels map[string]string) ([]netip.Addr, error) {
	if err := checkHandle(handle); err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fieldErr("ips", "must not be empty")
	}
	ips, err := parseIPs(ips)
	if err != nil {
		return nil, err
	}
	if err := checkMeta(netgroups, labels); err != nil {
		return nil, err
	}
	for range i.maxRetries {
		if err := i.lock(ctx); err != nil {
			return nil, err
		}
		ok, err := i.reserveLocked(ctx, handle, ips, netgroups, labels)
		i.unlock()
		if err != nil {
			return nil, fmt.Errorf("ipam: reserve %v for %s: %w", ips, handle, err)
		}
		if ok {
			out := slices.Clone(ips)
			slices.SortFunc(out, netip.Addr.Compare)
			return out, nil
		}
	}
	return nil, fmt.Errorf("ipam: reserve %v for %s: %w: gave up after %d conflicting attempts", ips, handle, ErrConflict, i.maxRetries)
}

// target is an address with the pool and block it lies in.
type target struct {
	ip   netip.Addr
	ps   *poolState
	cidr netip.Prefix
}

// readTargets reads the allocation and block records of targets in one
// read-only transaction. It returns the allocation records by address and
// refreshes the cached blocks (a block without a record is dropped).
func (i *IPAM) readTargetsLocked(ctx context.Context, ts []target) (map[netip.Addr]*mvccpb.KeyValue, error) {
	var ops []clientv3.Op
	var blocks []target
	seen := map[netip.Prefix]bool{}
	for _, t := range ts {
		ops = append(ops, clientv3.OpGet(ipKey(t.ps.pool.Name, t.ip)))
	}
	for _, t := range ts {
		if !seen[t.cidr] {
			seen[t.cidr] = true
			blocks = append(blocks, t)
			ops = append(ops, clientv3.OpGet(blockKey(t.ps.pool.Name, t.cidr)))
		}
	}
	r, err := i.txn(ctx, nil, ops, nil)
	if err != nil {
		return nil, err
	}
	allocs := map[netip.Addr]*mvccpb.KeyValue{}
	for k, t := range ts {
		if kvs := r.Responses[k].GetResponseRange().Kvs; len(kvs) > 0 {
			allocs[t.ip] = kvs[0]
		}
	}
	for k, t := range blocks {
		kvs := r.Responses[len(ts)+k].GetResponseRange().Kvs
		if len(kvs) == 0 {
			delete(t.ps.blocks, t.cidr)
			continue
		}
		b, err := registry.DecodeBlock(kvs[0].Value)
		if err != nil {
			return nil, fmt.Errorf("ipam: block %s: %w", t.cidr, err)
		}
		bs := t.ps.blocks[t.cidr]
		if bs == nil {
			bs = &blockState{}
			t.ps.blocks[t.cidr] = bs
		}
		if bs.rev != kvs[0].ModRevision {
			bs.rec, bs.rev = b, kvs[0].ModRevision
		}
	}
	return allocs, nil
}

func (i *IPAM) reserveLocked(ctx context.Context, handle string, ips []netip.Addr, netgroups []string, labels map[string]string) (bool, error) {
	ts := make([]target, 0, len(ips))
	for _, ip := range ips {
		ps, err := i.poolOfLocked(ctx, ip)
		if err != nil {
			return false, err
		}
		if ps == nil {
			return false, &FieldError{Field: "ips", Reason: fmt.Sprintf("%s is in no pool", ip), cause: ErrNotFound}
		}
		ts = append(ts, target{ip: ip, ps: ps, cidr: ps.geo.blockOf(ip)})
	}
	allocs, err := i.readTargetsLocked(ctx, ts)
	if err != nil {
		return false, err
	}
	c := newChange()
	for _, t := range ts {
		if kv, ok := allocs[t.ip]; ok {
			a, err := registry.DecodeAllocation(kv.Value)
			if err != nil {
				return false, fmt.Errorf("ipam: allocation %s: %w", t.ip, err)
			}
			if a.Handle == handle {
				continue // reserved before: idempotent
			}
			return false, fmt.Errorf("%w: %s is held by handle %s", ErrConflict, t.ip, a.Handle)
		}
		bc := c.block(t.ps, t.cidr, t.ps.blocks[t.cidr], i.host, i.now())
		c.add(bc, registry.Allocation{
			IP: t.ip.String(), Handle: handle, Host: i.host, Pool: t.ps.pool.Name, Block: t.cidr.String(),
			Created: i.now().UTC(), Netgroups: netgroups, Labels: labels,
		}, t.ip)
	}
	if c.empty() {
		return true, nil
	}
	return i.commitLocked(ctx, c)
}
