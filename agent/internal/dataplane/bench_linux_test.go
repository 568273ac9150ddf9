package dataplane

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

// BenchmarkAttachDetach measures one Attach and one Detach into a ready
// netns, with the real kernel and either real etcd or the in-memory store.
func BenchmarkAttachDetach(b *testing.B) {
	for _, store := range []string{"etcd", "memory"} {
		b.Run(store, func(b *testing.B) {
			testutil.RequireRoot(b)
			host := testutil.NewNS(b, "dpbh")
			var s Store = NewFakeStore()
			if store == "etcd" {
				_, c := testutil.Etcd(b)
				s = NewEtcdStore(c)
			}
			dp, err := New(context.Background(), "bench", host.Path, s)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = dp.Close() })
			ctr := testutil.NewNS(b, "dpbc")
			ctx := context.Background()
			var attach, detach time.Duration
			n := 0
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("b%d", i)
				t0 := time.Now()
				if _, err := dp.Attach(ctx, Spec{ContainerID: id, Netns: ctr.Path, IPs: addrs("10.30.0.2")}); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := dp.Detach(ctx, id, "eth0", ctr.Path); err != nil {
					b.Fatal(err)
				}
				attach += t1.Sub(t0)
				detach += time.Since(t1)
				n++
			}
			b.ReportMetric(float64(attach.Microseconds())/float64(n)/1000, "attach-ms/op")
			b.ReportMetric(float64(detach.Microseconds())/float64(n)/1000, "detach-ms/op")
		})
	}
}
