package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/petrel-net/petrel/agent/registry"
)

// Release frees addresses: every address of handle when ips is empty, the
// given addresses otherwise (with a handle, only those the handle holds).
// An address that is already free counts as success. It returns the
// addresses it freed, IPv4 first. A block whose last address is freed loses
// its record, so no host stays affine to a block it does not use.
func (i *IPAM) Release(ctx context.Context, handle string, ips []netip.Addr) ([]netip.Addr, error) {
	if handle == "" && len(ips) == 0 {
		return nil, fieldErr("handle", "give a handle, addresses, or both")
	}
	if handle != "" {
		if err := checkHandle(handle); err != nil {
			return nil, err
		}
	}
	ips, err := parseIPs(ips)
	if err != nil {
		return nil, err
	}
	indexed := map[netip.Addr]string{}
	if handle != "" {
		have, _, err := i.readHandle(ctx, handle)
		if err != nil {
			return nil, fmt.Errorf("ipam: release %s: %w", handle, err)
		}
		for _, h := range have {
			indexed[h.ip] = h.pool
		}
		if len(ips) == 0 {
			for _, h := range have {
				ips = append(ips, h.ip)
			}
		}
	}
	var freed []netip.Addr
	for start := 0; start < len(ips); start += MaxAddresses {
		chunk := ips[start:min(start+MaxAddresses, len(ips))]
		done := false
		for attempt := 0; attempt < i.maxRetries && !done; attempt++ {
			if err := i.lock(ctx); err != nil {
				return freed, err
			}
			got, ok, err := i.releaseLocked(ctx, handle, chunk, indexed)
			i.unlock()
			if err != nil {
				return freed, fmt.Errorf("ipam: release %s %v: %w", handle, chunk, err)
			}
			if ok {
				freed = append(freed, got...)
				done = true
			}
		}
		if !done {
			return freed, fmt.Errorf("ipam: release %s %v: %w: gave up after %d conflicting attempts", handle, chunk, ErrConflict, i.maxRetries)
		}
	}
	slices.SortFunc(freed, netip.Addr.Compare)
	return freed, nil
}

func (i *IPAM) releaseLocked(ctx context.Context, handle string, ips []netip.Addr, indexed map[netip.Addr]string) ([]netip.Addr, bool, error) {
	c := newChange()
	var ts []target
	for _, ip := range ips {
		var ps *poolState
		if name, ok := indexed[ip]; ok {
			if err := i.loadPoolsLocked(ctx, false); err != nil {
				return nil, false, err
			}
			ps = i.pools[name]
		}
		if ps == nil {
			var err error
			if ps, err = i.poolOfLocked(ctx, ip); err != nil {
				return nil, false, err
			}
		}
		if ps == nil { // in no pool: nothing to free but a stale index entry
			if _, ok := indexed[ip]; ok && handle != "" {
				c.unindex = append(c.unindex, handleKey(handle, ip))
			}
			continue
		}
		ts = append(ts, target{ip: ip, ps: ps, cidr: ps.geo.blockOf(ip)})
	}
	var freed []netip.Addr
	if len(ts) > 0 {
		allocs, err := i.readTargetsLocked(ctx, ts)
		if err != nil {
			return nil, false, err
		}
		for _, t := range ts {
			_, isIndexed := indexed[t.ip]
			kv, ok := allocs[t.ip]
			var a registry.Allocation
			if ok {
				if a, err = registry.DecodeAllocation(kv.Value); err != nil {
					return nil, false, fmt.Errorf("ipam: allocation %s: %w", t.ip, err)
				}
			}
			if !ok || (handle != "" && a.Handle != handle) {
				// Already free, or now someone else's: only drop our stale index.
				if isIndexed && handle != "" {
					c.unindex = append(c.unindex, handleKey(handle, t.ip))
				}
				continue
			}
			bc := c.block(t.ps, t.cidr, t.ps.blocks[t.cidr], i.host, i.now())
			c.remove(bc, delAlloc{pool: t.ps.pool.Name, ip: t.ip, handle: a.Handle, rev: kv.ModRevision})
			freed = append(freed, t.ip)
		}
	}
	if c.empty() {
		return nil, true, nil
	}
	ok, err := i.commitLocked(ctx, c)
	if err != nil || !ok {
		return nil, false, err
	}
	return freed, true, nil
}
