package ipam

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

func newIPAM(t testing.TB, c *clientv3.Client, host string, opts ...Option) *IPAM {
	t.Helper()
	i, err := New(c, host, opts...)
	if err != nil {
		t.Fatalf("New(%s): %v", host, err)
	}
	return i
}

func addPool(t testing.TB, i *IPAM, cidr string, blockSize int) Pool {
	t.Helper()
	p, err := i.AddPool(context.Background(), Pool{CIDR: cidr, BlockSize: blockSize})
	if err != nil {
		t.Fatalf("AddPool(%s): %v", cidr, err)
	}
	return p
}

func mustAllocate(t testing.TB, i *IPAM, req Request) []netip.Addr {
	t.Helper()
	ips, err := i.Allocate(context.Background(), req)
	if err != nil {
		t.Fatalf("Allocate(%+v): %v", req, err)
	}
	return ips
}

func revision(t testing.TB, c *clientv3.Client) int64 {
	t.Helper()
	r, err := c.Get(context.Background(), "revision-probe")
	if err != nil {
		t.Fatalf("get revision: %v", err)
	}
	return r.Header.Revision
}

func countKeys(t testing.TB, c *clientv3.Client, prefix string) int64 {
	t.Helper()
	r, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count %s: %v", prefix, err)
	}
	return r.Count
}

// checkConsistent verifies the IPAM invariants on everything stored under
// the registry prefix at one revision: every address has its handle index
// and vice versa, every address lies in its block and pool, block counts
// match the addresses, and no block record is empty.
func checkConsistent(t testing.TB, c *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Get(ctx, registry.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("read registry: %v", err)
	}
	pools := map[string]netip.Prefix{}
	blocks := map[string]registry.Block{} // by pool + cidr
	counts := map[string]int{}
	allocs := map[string]registry.Allocation{} // by ip
	handles := map[string]string{}             // handle/ip -> pool
	for _, kv := range r.Kvs {
		k := string(kv.Key)
		switch {
		case strings.HasPrefix(k, registry.PoolsPrefix):
			p, err := decodePool(kv)
			if err != nil {
				t.Errorf("pool %s: %v", k, err)
				continue
			}
			pools[p.pool.Name] = p.geo.prefix
		case strings.HasPrefix(k, registry.BlocksPrefix):
			b, err := registry.DecodeBlock(kv.Value)
			if err != nil {
				t.Errorf("block %s: %v", k, err)
				continue
			}
			if k != registry.BlockKey(b.Pool, b.CIDR) {
				t.Errorf("block %s: record names %s/%s", k, b.Pool, b.CIDR)
			}
			if b.Allocated <= 0 {
				t.Errorf("block %s: allocated %d, want > 0 (empty blocks lose their record)", k, b.Allocated)
			}
			blocks[b.Pool+"|"+b.CIDR] = b
		case strings.HasPrefix(k, registry.IPsPrefix):
			a, err := registry.DecodeAllocation(kv.Value)
			if err != nil {
				t.Errorf("allocation %s: %v", k, err)
				continue
			}
			if k != registry.IPKey(a.Pool, a.IP) {
				t.Errorf("allocation %s: record names %s/%s", k, a.Pool, a.IP)
			}
			if _, dup := allocs[a.IP]; dup {
				t.Errorf("address %s allocated twice", a.IP)
			}
			allocs[a.IP] = a
			counts[a.Pool+"|"+a.Block]++
		case strings.HasPrefix(k, registry.HandlesPrefix):
			handles[strings.TrimPrefix(k, registry.HandlesPrefix)] = string(kv.Value)
		}
	}
	for ip, a := range allocs {
		addr := netip.MustParseAddr(ip)
		if p, ok := pools[a.Pool]; !ok || !p.Contains(addr) {
			t.Errorf("allocation %s: not in pool %s (%s)", ip, a.Pool, p)
		}
		if !netip.MustParsePrefix(a.Block).Contains(addr) {
			t.Errorf("allocation %s: not in its block %s", ip, a.Block)
		}
		if _, ok := blocks[a.Pool+"|"+a.Block]; !ok {
			t.Errorf("allocation %s: block %s has no record", ip, a.Block)
		}
		if pool, ok := handles[a.Handle+"/"+ip]; !ok || pool != a.Pool {
			t.Errorf("allocation %s: handle index %s/%s = %q, %v; want %q", ip, a.Handle, ip, pool, ok, a.Pool)
		}
	}
	for hk := range handles {
		j := strings.LastIndexByte(hk, '/')
		a, ok := allocs[hk[j+1:]]
		if !ok || a.Handle != hk[:j] {
			t.Errorf("handle index %s: no matching allocation (got %+v)", hk, a)
		}
	}
	for key, b := range blocks {
		if counts[key] != b.Allocated {
			t.Errorf("block %s: record says %d allocated, %d addresses stored", key, b.Allocated, counts[key])
		}
	}
}
