package ipam

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// BenchmarkAllocate measures single-address allocation against a real
// in-process etcd. Each op allocates one address for a unique handle
// (allocate-only) from a 10.64.0.0/12 pool with /26 blocks: 2^20 addresses,
// so no run exhausts it, and block claims happen as they would on a busy
// host (one claim per 64 allocations per host). hosts is the number of
// simulated hosts (each its own IPAM and etcd client); conc is the number
// of concurrent workers per host.
//
// Metrics: allocs/s (throughput over the whole run), p50-ms and p99-ms
// (latency of one Allocate call), etcd-writes/alloc (etcd revision delta
// divided by allocations; 1.0 means exactly one transaction per allocation,
// block claims included).
//
//	go test -run '^$' -bench BenchmarkAllocate -benchtime 2000x ./agent/internal/ipam/
func BenchmarkAllocate(b *testing.B) {
	for _, tc := range []struct{ hosts, conc int }{{1, 1}, {1, 16}, {4, 1}, {4, 16}} {
		b.Run(fmt.Sprintf("hosts=%d/conc=%d", tc.hosts, tc.conc), func(b *testing.B) {
			benchAllocate(b, tc.hosts, tc.conc)
		})
	}
}

func benchAllocate(b *testing.B, hosts, conc int) {
	srv, c0 := testutil.Etcd(b)
	ctx := context.Background()
	addPool(b, newIPAM(b, c0, "admin"), "10.64.0.0/12", 26)
	ipams := make([]*IPAM, hosts)
	for h := range ipams {
		c, err := srv.Client()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		ipams[h] = newIPAM(b, c, fmt.Sprintf("bench-host-%d", h))
		// Warm up: read the pools and claim a first block.
		mustAllocate(b, ipams[h], Request{Handle: fmt.Sprintf("warm-%d", h), NumV4: 1})
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Value
	rev0 := revision(b, c0)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for h := range hosts {
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k := int(next.Add(1) - 1)
					if k >= b.N {
						return
					}
					t0 := time.Now()
					_, err := ipams[h].Allocate(ctx, Request{Handle: fmt.Sprintf("b-%d", k), NumV4: 1})
					lat[k] = time.Since(t0)
					if err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatalf("allocate: %v", err)
	}
	writes := revision(b, c0) - rev0
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "allocs/s")
	b.ReportMetric(ms(lat[b.N/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(b.N-1, b.N*99/100)]), "p99-ms")
	b.ReportMetric(float64(writes)/float64(b.N), "etcd-writes/alloc")
}

// BenchmarkChurn measures allocate+release pairs of one address (a container
// ADD then DEL) on one host, as the churn target counts them. ops/s is
// pairs per second; etcd-writes/op includes both halves.
//
//	go test -run '^$' -bench BenchmarkChurn -benchtime 2000x ./agent/internal/ipam/
func BenchmarkChurn(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			_, c := testutil.Etcd(b)
			ctx := context.Background()
			i := newIPAM(b, c, "churn-host")
			addPool(b, i, "10.96.0.0/16", 26)
			mustAllocate(b, i, Request{Handle: "warm", NumV4: 1})
			var next atomic.Int64
			var failed atomic.Value
			rev0 := revision(b, c)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						k := int(next.Add(1) - 1)
						if k >= b.N {
							return
						}
						h := fmt.Sprintf("churn-%d", k)
						if _, err := i.Allocate(ctx, Request{Handle: h, NumV4: 1}); err != nil {
							failed.Store(err)
							return
						}
						if _, err := i.Release(ctx, h, nil); err != nil {
							failed.Store(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err, ok := failed.Load().(error); ok {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(revision(b, c)-rev0)/float64(b.N), "etcd-writes/op")
		})
	}
}
