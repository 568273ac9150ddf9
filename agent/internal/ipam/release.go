package ipam

import (
	"context"
	"errors"
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
	// Releasing the whole of a handle this IPAM allocated needs no read.
	var st handleState
	remembered := false
	if handle != "" {
		st, remembered = i.takeHandle(handle) // any release of a handle forgets it
	}
	if remembered && len(ips) == 0 && len(st.have) <= MaxAddresses {
		indexed := map[netip.Addr]held{}
		var all []netip.Addr
		for _, h := range st.have {
			indexed[h.ip] = h
			all = append(all, h.ip)
		}
		call := &allocCall{rel: &releaseCall{handle: handle, ips: all, indexed: indexed, cached: true, hrev: st.rev}, done: make(chan struct{})}
		err := i.submit(ctx, call)
		if err == nil {
			slices.SortFunc(call.out, netip.Addr.Compare)
			return call.out, nil
		}
		if !errors.Is(err, errStaleHandle) {
			return nil, fmt.Errorf("ipam: release %s: %w", handle, err)
		}
	}
	indexed := map[netip.Addr]held{}
	if handle != "" {
		have, _, err := i.readHandle(ctx, handle)
		if err != nil {
			return nil, fmt.Errorf("ipam: release %s: %w", handle, err)
		}
		for _, h := range have {
			indexed[h.ip] = h
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
		call := &allocCall{rel: &releaseCall{handle: handle, ips: chunk, indexed: indexed}, done: make(chan struct{})}
		if err := i.submit(ctx, call); err != nil {
			return freed, fmt.Errorf("ipam: release %s %v: %w", handle, chunk, err)
		}
		freed = append(freed, call.out...)
	}
	slices.SortFunc(freed, netip.Addr.Compare)
	return freed, nil
}

// planReleaseLocked adds the writes of one release chunk to c and returns the
// addresses freed if c commits. On the first attempt, an address known from the handle index whose block is
// cached is freed without reading it first: the transaction compares the
// address key's CreateRevision with the handle key's (they were written
// together) and the block's ModRevision with the cached one. Other addresses,
// and every address on a retry, are read first.
func (i *IPAM) planReleaseLocked(ctx context.Context, c *change, r *releaseCall) ([]netip.Addr, error) {
	handle, ips, indexed, fast := r.handle, r.ips, r.indexed, !r.slow
	var ts []target
	var freed []netip.Addr
	for _, ip := range ips {
		var ps *poolState
		h, isIndexed := indexed[ip]
		if isIndexed {
			if err := i.loadPoolsLocked(ctx, false); err != nil {
				return nil, err
			}
			ps = i.pools[h.pool]
		}
		if ps == nil {
			var err error
			if ps, err = i.poolOfLocked(ctx, ip); err != nil {
				return nil, err
			}
		}
		if ps == nil { // in no pool: nothing to free but a stale index entry
			if isIndexed && handle != "" {
				c.unindex = append(c.unindex, handleKey(handle, ip))
			}
			continue
		}
		t := target{ip: ip, ps: ps, cidr: ps.geo.blockOf(ip)}
		if bs := ps.blocks[t.cidr]; fast && isIndexed && handle != "" && bs != nil && h.pool == ps.pool.Name {
			if r.cached {
				// The handle must hold nothing we do not know of.
				c.checkHandle(handle, r.hrev)
			}
			bc := c.block(ps, t.cidr, bs, i.host, i.now())
			c.remove(bc, delAlloc{pool: ps.pool.Name, ip: ip, handle: handle, created: h.created})
			freed = append(freed, ip)
			continue
		}
		ts = append(ts, t)
	}
	if len(ts) > 0 {
		allocs, err := i.readTargetsLocked(ctx, ts)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			_, isIndexed := indexed[t.ip]
			kv, ok := allocs[t.ip]
			var a registry.Allocation
			if ok {
				if a, err = registry.DecodeAllocation(kv.Value); err != nil {
					return nil, fmt.Errorf("ipam: allocation %s: %w", t.ip, err)
				}
			}
			if !ok || (handle != "" && a.Handle != handle) {
				// Already free, or now someone else's: only drop our stale index.
				if isIndexed && handle != "" {
					c.unindex = append(c.unindex, handleKey(handle, t.ip))
				}
				continue
			}
			i.forgetHandle(a.Handle)
			bc := c.block(t.ps, t.cidr, t.ps.blocks[t.cidr], i.host, i.now())
			c.remove(bc, delAlloc{pool: t.ps.pool.Name, ip: t.ip, handle: a.Handle, created: kv.CreateRevision})
			freed = append(freed, t.ip)
		}
	}
	return freed, nil
}
