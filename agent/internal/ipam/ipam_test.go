package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// TestConcurrentHostsExhaustAndRelease runs 4 hosts (each its own client)
// with 4 workers each against a /22 of /26 blocks until the pool is
// exhausted, then releases everything.
func TestConcurrentHostsExhaustAndRelease(t *testing.T) {
	srv, c0 := testutil.Etcd(t)
	ctx := context.Background()
	addPool(t, newIPAM(t, c0, "admin"), "10.20.0.0/22", 26)

	const hosts, workers = 4, 4
	type got struct {
		ip     netip.Addr
		handle string
	}
	var mu sync.Mutex
	var all []got
	var wg sync.WaitGroup
	errs := make(chan error, hosts*workers)
	ipams := make([]*IPAM, hosts)
	// Hosts 0-2 allocate from the start; host 3 starts once all 16 blocks
	// are claimed, and hosts 0-2 wait until host 3 has its first address.
	// So host 3 can only borrow, whatever the timing: without this, hosts
	// that advance in lockstep may fill their own blocks at the same moment
	// and nobody needs to borrow.
	allClaimed, lastStarted := make(chan struct{}), make(chan struct{})
	var lastOnce sync.Once
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wch := c0.Watch(wctx, registry.BlocksPrefix, clientv3.WithPrefix(), clientv3.WithRev(revision(t, c0)+1))
	go func() {
		claimed := 0
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.IsCreate() {
					claimed++
				}
			}
			if claimed == 16 {
				close(allClaimed)
				return
			}
		}
	}()
	gate := func(h int) {
		if h == hosts-1 {
			<-allClaimed
			return
		}
		select {
		case <-allClaimed:
			<-lastStarted
		default:
		}
	}
	for h := range hosts {
		c, err := srv.Client()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		ipams[h] = newIPAM(t, c, fmt.Sprintf("host-%d", h))
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if h == hosts-1 { // never leave hosts 0-2 waiting
					defer lastOnce.Do(func() { close(lastStarted) })
				}
				for n := 0; ; n++ {
					gate(h)
					handle := fmt.Sprintf("c-%d-%d-%d", h, w, n)
					ips, err := ipams[h].Allocate(ctx, Request{Handle: handle, NumV4: 1})
					if errors.Is(err, ErrExhausted) {
						return
					}
					if err != nil {
						errs <- fmt.Errorf("%s: %w", handle, err)
						return
					}
					if h == hosts-1 {
						lastOnce.Do(func() { close(lastStarted) })
					}
					mu.Lock()
					all = append(all, got{ips[0], handle})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("allocate: %v", err)
	}
	seen := map[netip.Addr]string{}
	for _, g := range all {
		if prev, dup := seen[g.ip]; dup {
			t.Fatalf("address %s handed to %s and %s", g.ip, prev, g.handle)
		}
		seen[g.ip] = g.handle
	}
	if len(seen) != 1024 {
		t.Fatalf("got %d addresses, want 1024", len(seen))
	}
	checkConsistent(t, c0)

	allocs, err := ipams[0].Allocations(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	usage, err := ipams[0].Usage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(usage) != 1 || len(usage[0].Blocks) != 16 || usage[0].Allocated != 1024 {
		t.Fatalf("usage: got %+v, want 16 blocks and 1024 allocated", usage)
	}
	// Borrowing happens only once every block is claimed: every borrowed
	// address was created after the last block claim.
	blockHost := map[string]string{}
	r, err := c0.Get(ctx, registry.BlocksPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var lastClaim registry.Block
	for _, kv := range r.Kvs {
		b, err := registry.DecodeBlock(kv.Value)
		if err != nil {
			t.Fatal(err)
		}
		blockHost[b.CIDR] = b.Host
		if b.Claimed.After(lastClaim.Claimed) {
			lastClaim = b
		}
	}
	borrowed := 0
	for _, a := range allocs {
		if a.Host == "host-3" && blockHost[a.Block] == "host-3" {
			t.Errorf("host-3 claimed block %s although every block was claimed before it started", a.Block)
		}
		if a.Host == blockHost[a.Block] {
			continue
		}
		borrowed++
		if a.Created.Before(lastClaim.Claimed) {
			t.Errorf("%s borrowed by %s at %v, before block %s was claimed at %v", a.IP, a.Host, a.Created, lastClaim.CIDR, lastClaim.Claimed)
		}
	}
	if borrowed == 0 {
		t.Errorf("got 0 borrowed addresses, want the last ones borrowed (blocks: %v)", blockHost)
	}
	t.Logf("1024 addresses, %d borrowed", borrowed)

	// Release everything, concurrently, by handle.
	var rwg sync.WaitGroup
	rerrs := make(chan error, len(all))
	for k, g := range all {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			freed, err := ipams[k%hosts].Release(ctx, g.handle, nil)
			if err != nil || len(freed) != 1 || freed[0] != g.ip {
				rerrs <- fmt.Errorf("release %s: got %v, %v; want [%s]", g.handle, freed, err, g.ip)
			}
		}()
		if k%64 == 63 {
			rwg.Wait()
		}
	}
	rwg.Wait()
	close(rerrs)
	for err := range rerrs {
		t.Error(err)
	}
	for _, p := range []string{registry.BlocksPrefix, registry.IPsPrefix, registry.HandlesPrefix} {
		if n := countKeys(t, c0, p); n != 0 {
			t.Errorf("%s: got %d keys after releasing everything, want 0", p, n)
		}
	}
	usage, err = ipams[1].Usage(ctx, "10.20.0.0/22")
	if err != nil {
		t.Fatal(err)
	}
	if usage[0].Allocated != 0 || len(usage[0].Blocks) != 0 {
		t.Errorf("usage after release: got %+v, want empty", usage[0])
	}
}

func TestBorrow(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	a, b := newIPAM(t, c, "a"), newIPAM(t, c, "b")
	addPool(t, a, "10.21.0.0/26", 28) // 4 blocks of 16
	mustAllocate(t, a, Request{Handle: "a1", NumV4: 32})
	mustAllocate(t, a, Request{Handle: "a2", NumV4: 8})  // a: 2 full blocks and one half full
	mustAllocate(t, b, Request{Handle: "b1", NumV4: 16}) // b claims the last block
	got := mustAllocate(t, b, Request{Handle: "b2", NumV4: 2})
	allocs, err := b.Allocations(ctx, "", "b2")
	if err != nil {
		t.Fatal(err)
	}
	usage, err := b.Usage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	hostOf := map[string]string{}
	for _, bu := range usage[0].Blocks {
		hostOf[bu.CIDR] = bu.Host
	}
	for _, al := range allocs {
		if al.Host != "b" || hostOf[al.Block] != "a" {
			t.Errorf("%s: held by %s in %s's block %s; want borrowed by b from a", al.IP, al.Host, hostOf[al.Block], al.Block)
		}
	}
	if len(allocs) != 2 || len(usage[0].Blocks) != 4 {
		t.Fatalf("got %v (%d records) in %d blocks, want 2 borrowed addresses in 4 blocks", got, len(allocs), len(usage[0].Blocks))
	}
	checkConsistent(t, c)
}

func TestAllocateIdempotent(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	addPool(t, i, "10.1.0.0/24", 0)

	first := mustAllocate(t, i, Request{Handle: "ctr", NumV4: 1})
	again := mustAllocate(t, i, Request{Handle: "ctr", NumV4: 1})
	if !slices.Equal(first, again) {
		t.Fatalf("second allocate: got %v, want %v", again, first)
	}
	more := mustAllocate(t, i, Request{Handle: "ctr", NumV4: 2})
	if len(more) != 2 || !slices.Contains(more, first[0]) {
		t.Fatalf("top-up to 2: got %v, want 2 addresses including %v", more, first)
	}
	if n := countKeys(t, c, registry.HandlePrefix("ctr")); n != 2 {
		t.Fatalf("handle keys: got %d, want 2", n)
	}

	// Concurrent allocates of one handle from two hosts never duplicate.
	j := newIPAM(t, c, "h2")
	var wg sync.WaitGroup
	results := make([][]netip.Addr, 8)
	for k := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := i
			if k%2 == 1 {
				who = j
			}
			ips, err := who.Allocate(ctx, Request{Handle: "racer", NumV4: 1})
			if err != nil {
				t.Errorf("allocate: %v", err)
			}
			results[k] = ips
		}()
	}
	wg.Wait()
	for _, r := range results[1:] {
		if !slices.Equal(r, results[0]) {
			t.Errorf("concurrent allocate of one handle: got %v and %v, want the same", r, results[0])
		}
	}
	if n := countKeys(t, c, registry.HandlePrefix("racer")); n != 1 {
		t.Errorf("handle keys of racer: got %d, want 1", n)
	}
	checkConsistent(t, c)
}

func TestWritesPerAllocation(t *testing.T) {
	_, c := testutil.Etcd(t)
	i := newIPAM(t, c, "h1")
	addPool(t, i, "10.2.0.0/24", 28) // 16 addresses per block
	for k := range 20 {              // crosses a block claim
		before := revision(t, c)
		mustAllocate(t, i, Request{Handle: fmt.Sprintf("c%d", k), NumV4: 1})
		if d := revision(t, c) - before; d != 1 {
			t.Fatalf("allocation %d: got %d etcd writes, want 1", k, d)
		}
	}
	// A multi-address request spanning two blocks is still one transaction.
	before := revision(t, c)
	ips := mustAllocate(t, i, Request{Handle: "multi", NumV4: 16})
	if d := revision(t, c) - before; d != 1 || len(ips) != 16 {
		t.Fatalf("16 addresses: got %d addresses in %d writes, want 16 in 1", len(ips), d)
	}
	checkConsistent(t, c)
}

func TestReserve(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	j := newIPAM(t, c, "h2")
	addPool(t, i, "10.3.0.0/24", 26)
	a, b, x := netip.MustParseAddr("10.3.0.10"), netip.MustParseAddr("10.3.0.70"), netip.MustParseAddr("10.3.0.11")

	got, err := i.Reserve(ctx, "static", []netip.Addr{b, a}, []string{"web"}, map[string]string{"app": "db"})
	if err != nil || !slices.Equal(got, []netip.Addr{a, b}) {
		t.Fatalf("reserve: got %v, %v; want [%s %s]", got, err, a, b)
	}
	// Same handle again: success, nothing written.
	before := revision(t, c)
	if _, err := i.Reserve(ctx, "static", []netip.Addr{a}, nil, nil); err != nil {
		t.Fatalf("reserve again: %v", err)
	}
	if d := revision(t, c) - before; d != 0 {
		t.Errorf("idempotent reserve: got %d writes, want 0", d)
	}
	// A conflict rolls back the whole reservation.
	before = revision(t, c)
	_, err = j.Reserve(ctx, "other", []netip.Addr{x, a}, nil, nil)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), a.String()) {
		t.Fatalf("conflicting reserve: got %v, want ErrConflict naming %s", err, a)
	}
	if d := revision(t, c) - before; d != 0 {
		t.Errorf("conflicting reserve: got %d writes, want 0", d)
	}
	if n := countKeys(t, c, registry.IPKey("10.3.0.0-24", x.String())); n != 0 {
		t.Errorf("conflicting reserve wrote %s", x)
	}
	// x lies in h1's block: reserving it from h2 borrows it.
	if _, err := j.Reserve(ctx, "other", []netip.Addr{x}, nil, nil); err != nil {
		t.Fatalf("reserve %s from h2: %v", x, err)
	}
	allocs, err := j.Allocations(ctx, "", "other")
	if err != nil || len(allocs) != 1 || allocs[0].Host != "h2" || allocs[0].Block != "10.3.0.0/26" {
		t.Fatalf("allocations of other: got %+v, %v; want %s held by h2 in 10.3.0.0/26", allocs, err, x)
	}
	usage, err := i.Usage(ctx, "10.3.0.0-24")
	if err != nil {
		t.Fatal(err)
	}
	wantBlocks := []BlockUsage{
		{CIDR: "10.3.0.0/26", Host: "h1", Capacity: 64, Allocated: 2, Borrowed: 1},
		{CIDR: "10.3.0.64/26", Host: "h1", Capacity: 64, Allocated: 1},
	}
	if diff := cmp.Diff(wantBlocks, usage[0].Blocks); diff != "" {
		t.Errorf("usage blocks (-want +got):\n%s", diff)
	}
	// Allocation avoids reserved addresses.
	for k := range 64 {
		ips := mustAllocate(t, i, Request{Handle: fmt.Sprintf("dyn%d", k), NumV4: 1})
		if ips[0] == a || ips[0] == b || ips[0] == x {
			t.Fatalf("allocate handed out reserved %s", ips[0])
		}
	}
	_, err = i.Reserve(ctx, "static", []netip.Addr{netip.MustParseAddr("10.99.0.1")}, nil, nil)
	if !errors.Is(err, ErrInvalidArgument) || !errors.Is(err, ErrNotFound) {
		t.Errorf("reserve outside pools: got %v, want ErrInvalidArgument and ErrNotFound", err)
	}
	checkConsistent(t, c)
}

func TestRelease(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	addPool(t, i, "10.4.0.0/24", 26)
	ips := mustAllocate(t, i, Request{Handle: "a", NumV4: 3})
	other := mustAllocate(t, i, Request{Handle: "b", NumV4: 1})

	// By handle and IPs: only what the handle holds is freed.
	freed, err := i.Release(ctx, "a", []netip.Addr{ips[0], other[0]})
	if err != nil || !slices.Equal(freed, ips[:1]) {
		t.Fatalf("release a %v: got %v, %v; want %v", []netip.Addr{ips[0], other[0]}, freed, err, ips[:1])
	}
	// By IPs alone.
	freed, err = i.Release(ctx, "", []netip.Addr{ips[1]})
	if err != nil || !slices.Equal(freed, ips[1:2]) {
		t.Fatalf("release %s: got %v, %v", ips[1], freed, err)
	}
	// By handle, twice.
	for n, want := range [][]netip.Addr{ips[2:], nil} {
		freed, err = i.Release(ctx, "a", nil)
		if err != nil || !slices.Equal(freed, want) {
			t.Fatalf("release a #%d: got %v, %v; want %v", n+1, freed, err, want)
		}
	}
	// Freeing a free address succeeds.
	if freed, err = i.Release(ctx, "", []netip.Addr{ips[0]}); err != nil || len(freed) != 0 {
		t.Fatalf("release free %s: got %v, %v; want nothing freed", ips[0], freed, err)
	}
	if n := countKeys(t, c, registry.BlocksPrefix); n != 1 {
		t.Errorf("blocks while b holds one address: got %d, want 1", n)
	}
	if _, err := i.Release(ctx, "b", nil); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, c, registry.Prefix) - countKeys(t, c, registry.PoolsPrefix); n != 0 {
		t.Errorf("keys besides pools after releasing all: got %d, want 0", n)
	}
	if _, err := i.Release(ctx, "", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("release of nothing: got %v, want ErrInvalidArgument", err)
	}
	checkConsistent(t, c)
}

func TestDualStackAndLargeIPv6(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	v4 := addPool(t, i, "10.5.0.0/16", 0)
	v6 := addPool(t, i, "fd00::/8", 0) // 2^114 blocks: must never be enumerated
	if v4.BlockSize != 26 || v6.BlockSize != 122 || v6.Name != "fd00::-8" {
		t.Fatalf("defaults: got %+v and %+v", v4, v6)
	}
	ips := mustAllocate(t, i, Request{Handle: "ds", NumV4: 1, NumV6: 2, Netgroups: []string{"public"}})
	if len(ips) != 3 || !ips[0].Is4() || !ips[1].Is6() || !ips[2].Is6() {
		t.Fatalf("dual stack: got %v, want one IPv4 then two IPv6", ips)
	}
	if !netip.MustParsePrefix("fd00::/8").Contains(ips[1]) {
		t.Fatalf("%s not in fd00::/8", ips[1])
	}
	if p, _ := ips[1].Prefix(122); !p.Contains(ips[2]) {
		t.Errorf("two IPv6 addresses %v not in one /122", ips[1:])
	}
	again := mustAllocate(t, i, Request{Handle: "ds", NumV4: 1, NumV6: 2, Pool: v4.Name, PoolV6: "fd00::/8"})
	if !slices.Equal(ips, again) {
		t.Errorf("dual stack again: got %v, want %v", again, ips)
	}
	// A /122 block holds 64 addresses; 70 spans two blocks.
	many := mustAllocate(t, i, Request{Handle: "many6", NumV6: 30, Pool: v6.Name})
	many = append(many, mustAllocate(t, i, Request{Handle: "many6b", NumV6: 30, Pool: v6.Name})...)
	many = append(many, mustAllocate(t, i, Request{Handle: "many6c", NumV6: 10, Pool: v6.Name})...)
	blocks := map[netip.Prefix]bool{}
	for _, ip := range many {
		p, _ := ip.Prefix(122)
		blocks[p] = true
	}
	if len(blocks) != 2 {
		t.Errorf("72 IPv6 addresses in %d blocks, want 2", len(blocks))
	}
	u, err := i.Usage(ctx, v6.Name)
	if err != nil || u[0].Allocated != 72 || u[0].Capacity != ^uint64(0) {
		t.Errorf("v6 usage: got %+v, %v", u, err)
	}
	checkConsistent(t, c)
	for _, h := range []string{"ds", "many6", "many6b", "many6c"} {
		if _, err := i.Release(ctx, h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := countKeys(t, c, registry.BlocksPrefix); n != 0 {
		t.Errorf("blocks after release: got %d, want 0", n)
	}
}

func TestAgentRestart(t *testing.T) {
	_, c := testutil.Etcd(t)
	i := newIPAM(t, c, "h1")
	addPool(t, i, "10.6.0.0/24", 26)
	old := mustAllocate(t, i, Request{Handle: "keep", NumV4: 1})
	mustAllocate(t, i, Request{Handle: "keep2", NumV4: 1})
	mustAllocate(t, newIPAM(t, c, "h2"), Request{Handle: "elsewhere", NumV4: 1})

	restarted := newIPAM(t, c, "h1")
	if got := mustAllocate(t, restarted, Request{Handle: "keep", NumV4: 1}); !slices.Equal(got, old) {
		t.Fatalf("after restart: got %v, want %v", got, old)
	}
	blocksBefore := countKeys(t, c, registry.BlocksPrefix)
	next := mustAllocate(t, restarted, Request{Handle: "new", NumV4: 1})
	if p, _ := old[0].Prefix(26); !p.Contains(next[0]) {
		t.Errorf("after restart: new address %s not in the affine block %s", next[0], p)
	}
	if n := countKeys(t, c, registry.BlocksPrefix); n != blocksBefore {
		t.Errorf("after restart: blocks went from %d to %d, want the affine block reused", blocksBefore, n)
	}
	checkConsistent(t, c)
}

func TestExhausted(t *testing.T) {
	_, c := testutil.Etcd(t)
	i := newIPAM(t, c, "h1")
	addPool(t, i, "10.7.0.0/30", 30)
	mustAllocate(t, i, Request{Handle: "a", NumV4: 4})
	_, err := i.Allocate(context.Background(), Request{Handle: "b", NumV4: 1})
	var ee *ExhaustedError
	if !errors.As(err, &ee) || !errors.Is(err, ErrExhausted) || ee.Pool != "10.7.0.0-30" || ee.Allocated != 4 || ee.Capacity != 4 {
		t.Fatalf("got %v, want ExhaustedError for 10.7.0.0-30 with 4 of 4", err)
	}
	if !strings.Contains(err.Error(), "10.7.0.0-30 has 4 of 4 addresses allocated (100.0%)") {
		t.Errorf("message %q does not name pool and utilisation", err)
	}
	if n := countKeys(t, c, registry.HandlePrefix("b")); n != 0 {
		t.Errorf("failed allocate left %d handle keys", n)
	}
}

func TestPools(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	p := addPool(t, i, "10.8.0.0/16", 0)
	if want := (Pool{Name: "10.8.0.0-16", CIDR: "10.8.0.0/16", BlockSize: 26}); !cmp.Equal(p, want) {
		t.Fatalf("AddPool defaults: got %+v, want %+v", p, want)
	}
	if again := addPool(t, i, "10.8.0.0/16", 26); !cmp.Equal(again, p) {
		t.Errorf("identical AddPool: got %+v, want %+v", again, p)
	}
	for _, tc := range []struct {
		name  string
		pool  Pool
		want  error
		field string
	}{
		{"overlap", Pool{CIDR: "10.8.4.0/24"}, ErrConflict, ""},
		{"same name other cidr", Pool{Name: "10.8.0.0-16", CIDR: "10.9.0.0/16"}, ErrConflict, ""},
		{"empty cidr", Pool{}, ErrInvalidArgument, "cidr"},
		{"bad cidr", Pool{CIDR: "10.9.0.0/33"}, ErrInvalidArgument, "cidr"},
		{"host bits", Pool{CIDR: "10.9.0.1/24"}, ErrInvalidArgument, "cidr"},
		{"block too big", Pool{CIDR: "10.9.0.0/16", BlockSize: 12}, ErrInvalidArgument, "block_size"},
		{"block smaller than pool", Pool{CIDR: "10.9.0.0/24", BlockSize: 23}, ErrInvalidArgument, "block_size"},
		{"v6 block too big", Pool{CIDR: "fd00:1::/64", BlockSize: 64}, ErrInvalidArgument, "block_size"},
		{"bad name", Pool{Name: "a/b", CIDR: "10.9.0.0/24"}, ErrInvalidArgument, "name"},
		{"mapped", Pool{CIDR: "::ffff:10.9.0.0/120"}, ErrInvalidArgument, "cidr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := i.AddPool(ctx, tc.pool)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var fe *FieldError
			if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Errorf("got %v, want field %s", err, tc.field)
			}
		})
	}
	small := addPool(t, i, "10.9.0.0/28", 0)
	if small.BlockSize != 28 {
		t.Errorf("small pool block: got %d, want 28", small.BlockSize)
	}
	pools, err := i.ListPools(ctx)
	if err != nil || len(pools) != 2 || pools[0].Name != "10.8.0.0-16" {
		t.Fatalf("ListPools: got %+v, %v", pools, err)
	}

	mustAllocate(t, i, Request{Handle: "x", NumV4: 2, Pool: "10.9.0.0/28"})
	err = i.DeletePool(ctx, small.Name)
	var pe *PoolInUseError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPoolInUse) || pe.Count != 2 || pe.Pool != small.Name {
		t.Fatalf("DeletePool in use: got %v, want PoolInUseError{%s, 2}", err, small.Name)
	}
	if _, err := i.Release(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if err := i.DeletePool(ctx, small.Name); err != nil {
		t.Fatalf("DeletePool: %v", err)
	}
	if err := i.DeletePool(ctx, small.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeletePool again: got %v, want ErrNotFound", err)
	}
	_, err = i.Allocate(ctx, Request{Handle: "y", NumV4: 1, Pool: small.Name})
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("allocate from deleted pool: got %v, want ErrNotFound", err)
	}
	if _, err := i.Usage(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("usage of unknown pool: got %v, want ErrNotFound", err)
	}
	_, err = i.Allocate(ctx, Request{Handle: "y", NumV6: 1})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("allocate IPv6 without an IPv6 pool: got %v, want ErrNotFound", err)
	}
}

func TestFreeHostBlocks(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	p := addPool(t, i, "10.10.0.0/24", 26)
	held, err := i.Reserve(ctx, "live", []netip.Addr{netip.MustParseAddr("10.10.0.5")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two records a crash could leave behind: an empty block, and a block
	// whose count drifted from its (absent) addresses.
	for _, b := range []registry.Block{
		{Pool: p.Name, CIDR: "10.10.0.64/26", Host: "h1", Allocated: 0},
		{Pool: p.Name, CIDR: "10.10.0.128/26", Host: "h1", Allocated: 3},
		{Pool: p.Name, CIDR: "10.10.0.192/26", Host: "h2", Allocated: 0},
	} {
		v, _ := registry.EncodeJSON(b)
		if _, err := c.Put(ctx, registry.BlockKey(b.Pool, b.CIDR), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	freed, err := newIPAM(t, c, "admin").FreeHostBlocks(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.10.0.128/26", "10.10.0.64/26"}; !slices.Equal(freed, want) {
		t.Errorf("freed: got %v, want %v", freed, want)
	}
	if n := countKeys(t, c, registry.BlocksPrefix); n != 2 {
		t.Errorf("blocks left: got %d, want 2 (h1's live block and h2's)", n)
	}
	if _, err := i.Release(ctx, "live", held); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   Request
		field string
	}{
		{"ok", Request{Handle: "abc", NumV4: 1}, ""},
		{"ok v6 cidr pool", Request{Handle: "abc", NumV6: 1, Pool: "fd00::/64"}, ""},
		{"empty handle", Request{NumV4: 1}, "handle"},
		{"slash in handle", Request{Handle: "a/b", NumV4: 1}, "handle"},
		{"newline in handle", Request{Handle: "abc\r\neth0", NumV4: 1}, "handle"},
		{"space in handle", Request{Handle: "a b", NumV4: 1}, "handle"},
		{"bad utf8 handle", Request{Handle: "a\xff", NumV4: 1}, "handle"},
		{"long handle", Request{Handle: strings.Repeat("a", 300), NumV4: 1}, "handle"},
		{"negative v4", Request{Handle: "a", NumV4: -1, NumV6: 1}, "num_ipv4"},
		{"negative v6", Request{Handle: "a", NumV4: 1, NumV6: -1}, "num_ipv6"},
		{"both zero", Request{Handle: "a"}, "num_ipv4"},
		{"too many", Request{Handle: "a", NumV4: 20, NumV6: 20}, "num_ipv4"},
		{"bad pool cidr", Request{Handle: "a", NumV4: 1, Pool: "10.0.0.0/99"}, "pool"},
		{"bad pool name", Request{Handle: "a", NumV4: 1, Pool: "po ol"}, "pool"},
		{"bad pool_v6", Request{Handle: "a", NumV6: 1, PoolV6: "x/y"}, "pool_v6"},
		{"empty netgroup", Request{Handle: "a", NumV4: 1, Netgroups: []string{""}}, "netgroups"},
		{"empty label key", Request{Handle: "a", NumV4: 1, Labels: map[string]string{"": "v"}}, "labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("got %v, want ErrInvalidArgument on field %s", err, tc.field)
			}
			if !strings.HasPrefix(err.Error(), "ipam: ") {
				t.Errorf("message %q lacks the ipam: prefix", err)
			}
		})
	}
}

// TestInvalidCalls checks that every entry point refuses bad input with
// ErrInvalidArgument before touching etcd.
func TestInvalidCalls(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	i := newIPAM(t, c, "h1")
	addPool(t, i, "10.11.0.0/24", 0)
	before := revision(t, c)
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"allocate empty handle", func() error { _, err := i.Allocate(ctx, Request{NumV4: 1}); return err }, "handle"},
		{"allocate unknown pool", func() error { _, err := i.Allocate(ctx, Request{Handle: "a", NumV4: 1, Pool: "nope"}); return err }, "pool"},
		{"allocate v4 pool as pool_v6", func() error {
			_, err := i.Allocate(ctx, Request{Handle: "a", NumV6: 1, PoolV6: "10.11.0.0/24"})
			return err
		}, "pool_v6"},
		{"reserve no ips", func() error { _, err := i.Reserve(ctx, "a", nil, nil, nil); return err }, "ips"},
		{"reserve invalid ip", func() error { _, err := i.Reserve(ctx, "a", []netip.Addr{{}}, nil, nil); return err }, "ips"},
		{"reserve bad handle", func() error {
			_, err := i.Reserve(ctx, "a/b", []netip.Addr{netip.MustParseAddr("10.11.0.1")}, nil, nil)
			return err
		}, "handle"},
		{"release bad handle", func() error { _, err := i.Release(ctx, "a\n", nil); return err }, "handle"},
		{"free blocks bad host", func() error { _, err := i.FreeHostBlocks(ctx, ""); return err }, "host"},
		{"delete bad name", func() error { return i.DeletePool(ctx, "a/b") }, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalidArgument) || fe.Field != tc.field {
				t.Fatalf("got %v, want ErrInvalidArgument on field %s", err, tc.field)
			}
		})
	}
	if d := revision(t, c) - before; d != 0 {
		t.Errorf("invalid calls wrote %d revisions, want 0", d)
	}
	if _, err := New(c, "bad host"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("New with a bad host: got %v, want ErrInvalidArgument", err)
	}
}

func FuzzRequestValidate(f *testing.F) {
	// Seeds: a good request, each kind of bad field, and odd encodings.
	f.Add("ctr-1", 1, 0, "", "")
	f.Add("ctr-1", 1, 1, "10.0.0.0/16", "fd00::/64")
	f.Add("", 1, 0, "", "")
	f.Add("a/b", 1, 0, "", "")
	f.Add("abc\r\neth0", 1, 0, "", "")
	f.Add("x", -1, 0, "", "")
	f.Add("x", 0, 0, "", "")
	f.Add("x", 1, 0, "10.0.0.0/99", "")
	f.Add("x", 1, 0, "pool name", "")
	f.Add("\xff\xfe", 1, 0, "", "")
	f.Fuzz(func(t *testing.T, handle string, n4, n6 int, pool, pool6 string) {
		req := Request{Handle: handle, NumV4: n4, NumV6: n6, Pool: pool, PoolV6: pool6}
		err := req.Validate()
		if err != nil {
			var fe *FieldError
			if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("Validate(%+v) = %v: not a FieldError naming a field", req, err)
			}
			return
		}
		if handle == "" || strings.ContainsAny(handle, "/ \n\r\t") || n4 < 0 || n6 < 0 || n4+n6 == 0 || n4+n6 > MaxAddresses {
			t.Fatalf("Validate(%+v) accepted a bad request", req)
		}
		// A valid handle makes valid keys: the handle is one key segment.
		if k := registry.HandleKey(handle, "10.0.0.1"); strings.Count(k, "/") != strings.Count(registry.HandlesPrefix, "/")+1 {
			t.Fatalf("handle %q makes key %q with extra segments", handle, k)
		}
	})
}

// TestChurn mixes allocations and releases (by handle and by address) from
// concurrent workers on two hosts, so that group-committed batches hold
// both, and checks the registry stays consistent and ends empty.
func TestChurn(t *testing.T) {
	srv, c := testutil.Etcd(t)
	ctx := context.Background()
	c2, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	hosts := []*IPAM{newIPAM(t, c, "h1"), newIPAM(t, c2, "h2")}
	addPool(t, hosts[0], "10.30.0.0/25", 28) // 8 small blocks: claims, deletes and borrowing all happen
	addPool(t, hosts[0], "fd00:30::/120", 124)
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := hosts[w%2]
			for n := range 30 {
				h := fmt.Sprintf("churn-%d-%d", w, n)
				req := Request{Handle: h, NumV4: 1 + n%2, NumV6: n % 3 / 2}
				ips, err := i.Allocate(ctx, req)
				if err != nil {
					t.Errorf("allocate %s: %v", h, err)
					return
				}
				if len(ips) != req.NumV4+req.NumV6 {
					t.Errorf("allocate %s: got %v, want %d addresses", h, ips, req.NumV4+req.NumV6)
				}
				var freed []netip.Addr
				if n%2 == 0 {
					freed, err = hosts[(w+n)%2].Release(ctx, h, nil)
				} else {
					freed, err = hosts[(w+n)%2].Release(ctx, "", ips)
				}
				if err != nil || !slices.Equal(freed, ips) {
					t.Errorf("release %s: got %v, %v; want %v", h, freed, err, ips)
				}
			}
		}()
	}
	wg.Wait()
	checkConsistent(t, c)
	for _, p := range []string{registry.BlocksPrefix, registry.IPsPrefix, registry.HandlesPrefix} {
		if n := countKeys(t, c, p); n != 0 {
			t.Errorf("%s: got %d keys after churn, want 0", p, n)
		}
	}
}

// TestReleaseRememberedHandle covers releasing a handle this IPAM
// allocated (which it does without reading the handle) after another host
// changed the handle behind its back.
func TestReleaseRememberedHandle(t *testing.T) {
	_, c := testutil.Etcd(t)
	ctx := context.Background()
	a, b := newIPAM(t, c, "a"), newIPAM(t, c, "b")
	addPool(t, a, "10.31.0.0/24", 26)

	// b tops the handle up: a's memory misses the second address.
	first := mustAllocate(t, a, Request{Handle: "topped", NumV4: 1})
	both := mustAllocate(t, b, Request{Handle: "topped", NumV4: 2})
	if !slices.Contains(both, first[0]) {
		t.Fatalf("top-up on b: got %v, want it to include %v", both, first)
	}
	freed, err := a.Release(ctx, "topped", nil)
	if err != nil || !slices.Equal(freed, both) {
		t.Fatalf("release topped on a: got %v, %v; want %v", freed, err, both)
	}

	// b frees the address by IP: a's release finds it already free.
	ips := mustAllocate(t, a, Request{Handle: "gone", NumV4: 1})
	if freed, err := b.Release(ctx, "", ips); err != nil || !slices.Equal(freed, ips) {
		t.Fatalf("release %v on b: got %v, %v", ips, freed, err)
	}
	// ... and b reuses it for another handle, which a must not free.
	if _, err := b.Reserve(ctx, "other", ips, nil, nil); err != nil {
		t.Fatal(err)
	}
	if freed, err := a.Release(ctx, "gone", nil); err != nil || len(freed) != 0 {
		t.Fatalf("release gone on a: got %v, %v; want nothing freed", freed, err)
	}
	if got, err := a.Allocations(ctx, "", "other"); err != nil || len(got) != 1 {
		t.Fatalf("other's reservation: got %+v, %v; want it kept", got, err)
	}
	if _, err := b.Release(ctx, "other", nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{registry.BlocksPrefix, registry.IPsPrefix, registry.HandlesPrefix} {
		if n := countKeys(t, c, p); n != 0 {
			t.Errorf("%s: got %d keys, want 0", p, n)
		}
	}
	checkConsistent(t, c)
}
