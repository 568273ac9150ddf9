package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// Pool is a range of addresses cut into blocks, stored as JSON under
// registry.PoolKey(Name).
type Pool struct {
	// Name is unique; it defaults to the CIDR with '/' replaced by '-'.
	Name string `json:"name"`
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of a block: default 26 (IPv4), 122 (IPv6).
	BlockSize int `json:"block_size"`
	// Disabled pools are skipped when a request names no pool.
	Disabled bool              `json:"disabled,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// Block size limits: a block holds at most 4096 addresses, so scanning one
// is cheap; the defaults follow Calico's.
const (
	defaultBlockV4 = 26
	defaultBlockV6 = 122
	minBlockV4     = 20
	minBlockV6     = 116
)

// normalize validates p and fills its defaults.
func (p Pool) normalize() (Pool, netip.Prefix, error) {
	if p.CIDR == "" {
		return p, netip.Prefix{}, fieldErr("cidr", "must not be empty")
	}
	pfx, err := netip.ParsePrefix(p.CIDR)
	if err != nil {
		return p, netip.Prefix{}, fieldErr("cidr", "%q is not a CIDR", p.CIDR)
	}
	if pfx.Addr().Zone() != "" || pfx.Addr().Is4In6() {
		return p, netip.Prefix{}, fieldErr("cidr", "%s: use a plain IPv4 or IPv6 CIDR", p.CIDR)
	}
	if pfx != pfx.Masked() {
		return p, netip.Prefix{}, fieldErr("cidr", "%s has host bits set (did you mean %s?)", p.CIDR, pfx.Masked())
	}
	p.CIDR = pfx.String()
	bits, lo, def := 32, minBlockV4, defaultBlockV4
	if pfx.Addr().Is6() {
		bits, lo, def = 128, minBlockV6, defaultBlockV6
	}
	if p.BlockSize == 0 {
		p.BlockSize = max(def, pfx.Bits())
	}
	if p.BlockSize < max(lo, pfx.Bits()) || p.BlockSize > bits {
		return p, netip.Prefix{}, fieldErr("block_size", "%d must lie in [%d, %d] for pool %s",
			p.BlockSize, max(lo, pfx.Bits()), bits, p.CIDR)
	}
	if p.Name == "" {
		p.Name = registry.CIDRKey(p.CIDR)
	}
	if err := checkPoolName("name", p.Name); err != nil {
		return p, netip.Prefix{}, err
	}
	if err := checkMeta(nil, p.Labels); err != nil {
		return p, netip.Prefix{}, err
	}
	return p, pfx, nil
}

func decodePool(kv *mvccpb.KeyValue) (*poolState, error) {
	var p Pool
	if err := json.Unmarshal(kv.Value, &p); err != nil {
		return nil, fmt.Errorf("ipam: decode pool %s: %w", kv.Key, err)
	}
	pfx, err := netip.ParsePrefix(p.CIDR)
	if err != nil || p.BlockSize < pfx.Bits() || p.BlockSize > pfx.Addr().BitLen() || p.BlockSize < pfx.Addr().BitLen()-12 {
		return nil, fmt.Errorf("ipam: pool record %s: bad cidr %q or block size %d", kv.Key, p.CIDR, p.BlockSize)
	}
	return &poolState{pool: p, geo: newGeometry(pfx, p.BlockSize), rev: kv.ModRevision, blocks: map[netip.Prefix]*blockState{}}, nil
}

// readPools reads every pool record, sorted by name.
func (i *IPAM) readPools(ctx context.Context) ([]*poolState, int64, error) {
	r, err := i.get(ctx, registry.PoolsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make([]*poolState, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		ps, err := decodePool(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b *poolState) int { return cmpString(a.pool.Name, b.pool.Name) })
	return out, r.Header.Revision, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// AddPool creates a pool. Adding an identical pool again returns it; a pool
// that overlaps another, or reuses a name, fails with ErrConflict.
func (i *IPAM) AddPool(ctx context.Context, p Pool) (Pool, error) {
	p, pfx, err := p.normalize()
	if err != nil {
		return Pool{}, err
	}
	val, err := json.Marshal(p)
	if err != nil {
		return Pool{}, fmt.Errorf("ipam: encode pool %s: %w", p.Name, err)
	}
	key := registry.PoolKey(p.Name)
	for range i.maxRetries {
		pools, rev, err := i.readPools(ctx)
		if err != nil {
			return Pool{}, err
		}
		for _, o := range pools {
			if o.pool.Name == p.Name {
				if o.pool.CIDR == p.CIDR && o.pool.BlockSize == p.BlockSize {
					return o.pool, nil
				}
				return Pool{}, fmt.Errorf("%w: pool %s exists with cidr %s and block size %d",
					ErrConflict, p.Name, o.pool.CIDR, o.pool.BlockSize)
			}
			if o.geo.prefix.Overlaps(pfx) {
				return Pool{}, fmt.Errorf("%w: pool %s (%s) overlaps pool %s (%s)",
					ErrConflict, p.Name, p.CIDR, o.pool.Name, o.pool.CIDR)
			}
		}
		// Nothing was added under pools/ since we read it, so no
		// overlapping pool slipped in.
		r, err := i.txn(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(registry.PoolsPrefix), "<", rev+1).WithPrefix(),
		}, []clientv3.Op{clientv3.OpPut(key, string(val))}, nil)
		if err != nil {
			return Pool{}, fmt.Errorf("ipam: add pool %s: %w", p.Name, err)
		}
		if r.Succeeded {
			i.invalidatePools(ctx)
			return p, nil
		}
	}
	return Pool{}, fmt.Errorf("ipam: add pool %s: %w: too many concurrent pool changes", p.Name, ErrConflict)
}

// ListPools returns every pool, sorted by name.
func (i *IPAM) ListPools(ctx context.Context) ([]Pool, error) {
	pools, _, err := i.readPools(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Pool, len(pools))
	for k, ps := range pools {
		out[k] = ps.pool
	}
	return out, nil
}

// DeletePool deletes a pool and its (empty) block records. It fails with a
// *PoolInUseError while the pool holds allocations.
func (i *IPAM) DeletePool(ctx context.Context, name string) error {
	if err := checkPoolName("name", name); err != nil {
		return err
	}
	key := registry.PoolKey(name)
	for range i.maxRetries {
		r, err := i.get(ctx, key)
		if err != nil {
			return err
		}
		if len(r.Kvs) == 0 {
			return fmt.Errorf("%w: pool %s", ErrNotFound, name)
		}
		n, err := i.get(ctx, poolIPsPrefix(name), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if n.Count > 0 {
			return &PoolInUseError{Pool: name, Count: int(n.Count)}
		}
		t, err := i.txn(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(key), "=", r.Kvs[0].ModRevision),
			clientv3.Compare(clientv3.CreateRevision(poolIPsPrefix(name)), "=", 0).WithPrefix(),
		}, []clientv3.Op{
			clientv3.OpDelete(key),
			clientv3.OpDelete(poolBlocksPrefix(name), clientv3.WithPrefix()),
		}, nil)
		if err != nil {
			return fmt.Errorf("ipam: delete pool %s: %w", name, err)
		}
		if t.Succeeded {
			i.invalidatePools(ctx)
			return nil
		}
	}
	return fmt.Errorf("ipam: delete pool %s: %w: too many concurrent changes", name, ErrConflict)
}

// invalidatePools makes the next call read the pools again.
func (i *IPAM) invalidatePools(ctx context.Context) {
	if i.lock(ctx) != nil {
		return
	}
	i.poolsRead = i.poolsRead.AddDate(-1, 0, 0)
	i.unlock()
}

// loadPoolsLocked refreshes the cached pools when forced or stale. Pools
// whose record did not change keep their cached blocks.
func (i *IPAM) loadPoolsLocked(ctx context.Context, force bool) error {
	if !force && len(i.pools) > 0 && i.now().Sub(i.poolsRead) < i.poolTTL {
		return nil
	}
	pools, _, err := i.readPools(ctx)
	if err != nil {
		return err
	}
	next := make(map[string]*poolState, len(pools))
	for _, ps := range pools {
		if old, ok := i.pools[ps.pool.Name]; ok && old.rev == ps.rev {
			ps = old
		}
		next[ps.pool.Name] = ps
	}
	i.pools = next
	i.poolsRead = i.now()
	return nil
}

// sortedPoolsLocked returns the cached pools by name.
func (i *IPAM) sortedPoolsLocked() []*poolState {
	names := slices.Sorted(maps.Keys(i.pools))
	out := make([]*poolState, len(names))
	for k, n := range names {
		out[k] = i.pools[n]
	}
	return out
}

// findPoolLocked resolves a pool name or CIDR, reading the pools again on a miss.
func (i *IPAM) findPoolLocked(ctx context.Context, field, ref string) (*poolState, error) {
	for attempt := range 2 {
		if err := i.loadPoolsLocked(ctx, attempt > 0); err != nil {
			return nil, err
		}
		if ps, ok := i.pools[ref]; ok {
			return ps, nil
		}
		if pfx, err := netip.ParsePrefix(ref); err == nil {
			for _, ps := range i.pools {
				if ps.geo.prefix == pfx.Masked() {
					return ps, nil
				}
			}
		}
	}
	return nil, &FieldError{Field: field, Reason: fmt.Sprintf("unknown pool %q", ref), cause: ErrNotFound}
}

// poolOfLocked returns the pool holding ip, reading the pools again on a miss.
func (i *IPAM) poolOfLocked(ctx context.Context, ip netip.Addr) (*poolState, error) {
	for attempt := range 2 {
		if err := i.loadPoolsLocked(ctx, attempt > 0); err != nil {
			return nil, err
		}
		for _, ps := range i.pools {
			if ps.geo.prefix.Contains(ip) {
				return ps, nil
			}
		}
	}
	return nil, nil
}

// loadBlocksLocked reads every block record of a pool once.
func (i *IPAM) loadBlocksLocked(ctx context.Context, ps *poolState) error {
	if ps.loaded {
		return nil
	}
	r, err := i.get(ctx, poolBlocksPrefix(ps.pool.Name), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	old := ps.blocks
	ps.blocks = make(map[netip.Prefix]*blockState, len(r.Kvs))
	for _, kv := range r.Kvs {
		b, err := registry.DecodeBlock(kv.Value)
		if err != nil {
			return fmt.Errorf("ipam: block %s: %w", kv.Key, err)
		}
		cidr, err := netip.ParsePrefix(b.CIDR)
		if err != nil {
			return fmt.Errorf("ipam: block %s: bad cidr %q", kv.Key, b.CIDR)
		}
		bs := &blockState{rec: b, rev: kv.ModRevision}
		if o, ok := old[cidr]; ok && o.rev == kv.ModRevision {
			bs.used, bs.cursor = o.used, o.cursor
		} else if o != nil {
			bs.cursor = o.cursor
		}
		ps.blocks[cidr] = bs
	}
	ps.loaded = true
	return nil
}

// loadUsedLocked reads which addresses of a block are allocated, along with
// the block record, at one revision.
func (i *IPAM) loadUsedLocked(ctx context.Context, ps *poolState, cidr netip.Prefix, bs *blockState) error {
	if bs.used != nil && len(bs.used) == bs.rec.Allocated {
		return nil
	}
	n := ps.geo.blockCap()
	used := map[netip.Addr]bool{}
	var rev int64
	const chunk = 120
	for start := uint64(0); start < n; start += chunk {
		var ops []clientv3.Op
		var opt []clientv3.OpOption
		opt = append(opt, clientv3.WithKeysOnly())
		if rev != 0 {
			opt = append(opt, clientv3.WithRev(rev))
		} else {
			ops = append(ops, clientv3.OpGet(blockKey(ps.pool.Name, cidr)))
		}
		var addrs []netip.Addr
		for j := start; j < min(start+chunk, n); j++ {
			ip := ps.geo.nth(cidr, j)
			addrs = append(addrs, ip)
			ops = append(ops, clientv3.OpGet(ipKey(ps.pool.Name, ip), opt...))
		}
		r, err := i.txn(ctx, nil, ops, nil)
		if err != nil {
			return fmt.Errorf("ipam: read block %s: %w", cidr, err)
		}
		resps := r.Responses
		if rev == 0 {
			rev = r.Header.Revision
			g := resps[0].GetResponseRange()
			resps = resps[1:]
			if len(g.Kvs) == 0 {
				delete(ps.blocks, cidr)
				return errBlockGone
			}
			b, err := registry.DecodeBlock(g.Kvs[0].Value)
			if err != nil {
				return fmt.Errorf("ipam: block %s: %w", cidr, err)
			}
			bs.rec, bs.rev = b, g.Kvs[0].ModRevision
		}
		for k, resp := range resps {
			if len(resp.GetResponseRange().Kvs) > 0 {
				used[addrs[k]] = true
			}
		}
	}
	bs.used = used
	return nil
}

// errBlockGone reports that a cached block record no longer exists.
var errBlockGone = errors.New("ipam: block record gone")
