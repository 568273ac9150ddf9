package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// env is an in-process gRPC server on a temporary unix socket, serving the
// real IPAM over a real etcd.
type env struct {
	ipam    petrelv1grpc.IPAMClient
	cluster petrelv1grpc.ClusterClient
	metrics *Metrics
	reg     *prometheus.Registry
	// etcd stops the etcd member; it may be called more than once.
	etcd interface{ Close() }
	kv   *clientv3.Client
}

func newEnv(t *testing.T, budget time.Duration) *env {
	t.Helper()
	srv, c := testutil.Etcd(t) // Close is idempotent: tests may stop it early
	a, err := ipam.New(c, "host-a", ipam.WithOpTimeout(budget/2))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	opts := Options{Metrics: m, Budget: budget}
	gs := NewGRPCServer(opts)
	petrelv1grpc.RegisterIPAMServer(gs, NewIPAMService(a, opts))
	petrelv1grpc.RegisterClusterServer(gs, &ClusterService{
		Host: "host-a", Version: "test", EmbeddedEtcd: true, EtcdEndpoints: []string{srv.ClientURL},
		KV: c, Pools: a, Options: opts,
	})
	conn := serve(t, gs)
	return &env{
		ipam: petrelv1grpc.NewIPAMClient(conn), cluster: petrelv1grpc.NewClusterClient(conn),
		metrics: m, reg: reg, etcd: srv, kv: c,
	}
}

// serve serves gs on a fresh unix socket and returns a client connection.
// Both stop in t.Cleanup.
func serve(t *testing.T, gs *grpc.Server) *grpc.ClientConn {
	t.Helper()
	sock := testutil.ServeGRPC(t, gs)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, want codes.Code, field string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got code %s (%v), want %s", got, err, want)
	}
	if field != "" {
		if got := FieldOf(err); got != field {
			t.Errorf("got field %q (%v), want %q", got, err, field)
		}
		if !strings.HasPrefix(status.Convert(err).Message(), field+":") {
			t.Errorf("got message %q, want it to start with %q", status.Convert(err).Message(), field+":")
		}
	}
}

func TestIPAMLifecycle(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := ctxT(t)

	p, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: "10.244.0.0/24"}})
	if err != nil {
		t.Fatalf("AddPool: %v", err)
	}
	if got, want := p.GetPool().GetName(), "10.244.0.0-24"; got != want {
		t.Errorf("pool name: got %q, want %q", got, want)
	}
	if got, want := p.GetPool().GetBlockSize(), int32(26); got != want {
		t.Errorf("block size: got %d, want %d", got, want)
	}
	_, err = e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: "fd00:1::/120", Name: "v6"}})
	if err != nil {
		t.Fatalf("AddPool v6: %v", err)
	}

	a1, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "c1", NumIpv4: 1, NumIpv6: 1, Pool: "10.244.0.0-24", PoolV6: "v6"})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if len(a1.GetIps()) != 2 || !strings.HasPrefix(a1.GetIps()[0], "10.244.0.") || !strings.HasPrefix(a1.GetIps()[1], "fd00:1::") {
		t.Fatalf("got ips %v, want one in 10.244.0.0/24 then one in fd00:1::/120", a1.GetIps())
	}
	again, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "c1", NumIpv4: 1, NumIpv6: 1, Pool: "10.244.0.0-24", PoolV6: "v6"})
	if err != nil {
		t.Fatalf("Allocate again: %v", err)
	}
	if strings.Join(again.GetIps(), ",") != strings.Join(a1.GetIps(), ",") {
		t.Errorf("idempotent allocate: got %v, want %v", again.GetIps(), a1.GetIps())
	}

	r, err := e.ipam.Reserve(ctx, &petrelv1.ReserveRequest{Handle: "static", Ips: []string{"10.244.0.200"}})
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	if got := r.GetIps(); len(got) != 1 || got[0] != "10.244.0.200" {
		t.Errorf("reserve: got %v, want [10.244.0.200]", got)
	}
	_, err = e.ipam.Reserve(ctx, &petrelv1.ReserveRequest{Handle: "other", Ips: []string{"10.244.0.201", "10.244.0.200"}})
	wantCode(t, err, codes.AlreadyExists, "")

	list, err := e.ipam.ListAllocations(ctx, &petrelv1.ListAllocationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(list.GetAllocations()), 3; got != want {
		t.Errorf("allocations: got %d, want %d: %v", got, want, list.GetAllocations())
	}
	for _, a := range list.GetAllocations() {
		if a.GetHost() != "host-a" || a.GetCreated() == nil {
			t.Errorf("allocation %v: want host host-a and a created time", a)
		}
	}

	_, err = e.ipam.DeletePool(ctx, &petrelv1.DeletePoolRequest{Name: "10.244.0.0-24"})
	wantCode(t, err, codes.FailedPrecondition, "")
	if !strings.Contains(status.Convert(err).Message(), "2 allocations") {
		t.Errorf("got %q, want the count of allocations", status.Convert(err).Message())
	}

	st, err := e.cluster.Status(ctx, &petrelv1.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.GetHost() != "host-a" || st.GetRevision() == 0 || len(st.GetPools()) != 2 || st.GetPools()[0].GetAllocated() != 2 {
		t.Errorf("status: got %v, want host-a, a revision, 2 pools with 2 allocated in the first", st)
	}

	rel, err := e.ipam.Release(ctx, &petrelv1.ReleaseRequest{Handle: "c1"})
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if len(rel.GetReleased()) != 2 {
		t.Errorf("released: got %v, want both of c1's addresses", rel.GetReleased())
	}
	rel, err = e.ipam.Release(ctx, &petrelv1.ReleaseRequest{Handle: "c1"})
	if err != nil || len(rel.GetReleased()) != 0 {
		t.Errorf("release twice: got %v, %v; want nothing released and no error", rel.GetReleased(), err)
	}
	if _, err := e.ipam.Release(ctx, &petrelv1.ReleaseRequest{Ips: []string{"10.244.0.200"}}); err != nil {
		t.Fatalf("Release by IP: %v", err)
	}
	if _, err := e.ipam.DeletePool(ctx, &petrelv1.DeletePoolRequest{Name: "10.244.0.0-24"}); err != nil {
		t.Fatalf("DeletePool after release: %v", err)
	}
	pools, err := e.ipam.ListPools(ctx, &petrelv1.ListPoolsRequest{})
	if err != nil || len(pools.GetPools()) != 1 || pools.GetPools()[0].GetName() != "v6" {
		t.Errorf("pools: got %v, %v; want only v6", pools.GetPools(), err)
	}

	// Metrics: every call above is in the RPC histogram.
	for _, name := range []string{"petrel_grpc_request_duration_seconds", "petrel_ipam_allocation_duration_seconds"} {
		if n := len(family(t, e.reg, name).GetMetric()); n == 0 {
			t.Errorf("%s has no series", name)
		}
	}
}

func TestExhaustion(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := ctxT(t)
	if _, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "tiny", Cidr: "10.9.0.0/30", BlockSize: 30}}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "c" + string(rune('a'+i)), NumIpv4: 1, Pool: "tiny"}); err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
	}
	_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "one-too-many", NumIpv4: 1, Pool: "tiny"})
	wantCode(t, err, codes.ResourceExhausted, "")
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, "tiny") || !strings.Contains(msg, "4 of 4") || !strings.Contains(msg, "100.0%") {
		t.Errorf("got %q, want the pool name and its utilisation", msg)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	ctx := ctxT(t)
	if _, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "p", Cidr: "10.8.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"allocate empty handle", func() error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{NumIpv4: 1})
			return err
		}, "handle"},
		{"allocate negative count", func() error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "h", NumIpv4: -1})
			return err
		}, "num_ipv4"},
		{"allocate negative v6 count", func() error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "h", NumIpv6: -2})
			return err
		}, "num_ipv6"},
		{"allocate nothing", func() error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "h"})
			return err
		}, "num_ipv4"},
		{"allocate unknown pool", func() error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "h", NumIpv4: 1, Pool: "nope"})
			return err
		}, "pool"},
		{"allocate handle with slash", func() error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "a/b", NumIpv4: 1})
			return err
		}, "handle"},
		{"reserve malformed ip", func() error {
			_, err := e.ipam.Reserve(ctx, &petrelv1.ReserveRequest{Handle: "h", Ips: []string{"10.8.0.1", "10.8.0.300"}})
			return err
		}, "ips[1]"},
		{"reserve no ips", func() error {
			_, err := e.ipam.Reserve(ctx, &petrelv1.ReserveRequest{Handle: "h"})
			return err
		}, "ips"},
		{"reserve empty handle", func() error {
			_, err := e.ipam.Reserve(ctx, &petrelv1.ReserveRequest{Ips: []string{"10.8.0.1"}})
			return err
		}, "handle"},
		{"release nothing", func() error {
			_, err := e.ipam.Release(ctx, &petrelv1.ReleaseRequest{})
			return err
		}, "handle"},
		{"release malformed ip", func() error {
			_, err := e.ipam.Release(ctx, &petrelv1.ReleaseRequest{Ips: []string{"fe80::1%eth0"}})
			return err
		}, "ips[0]"},
		{"add pool without pool", func() error {
			_, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{})
			return err
		}, "pool"},
		{"add pool bad cidr", func() error {
			_, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: "10.0.0.0/33"}})
			return err
		}, "pool.cidr"},
		{"add pool host bits", func() error {
			_, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: "10.0.0.1/24"}})
			return err
		}, "pool.cidr"},
		{"add pool bad block size", func() error {
			_, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: "10.0.0.0/24", BlockSize: 16}})
			return err
		}, "pool.block_size"},
		{"delete pool no name", func() error {
			_, err := e.ipam.DeletePool(ctx, &petrelv1.DeletePoolRequest{})
			return err
		}, "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(), codes.InvalidArgument, tc.field)
		})
	}
	// Nothing was written by the bad requests.
	resp, err := e.kv.Get(ctx, registry.IPsPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("got %d address records after bad requests, want 0", resp.Count)
	}
}

// TestEtcdDown checks that with etcd gone, calls fail with Unavailable once
// the server's budget runs out, well before the caller's own deadline.
func TestEtcdDown(t *testing.T) {
	e := newEnv(t, time.Second)
	ctx := ctxT(t)
	if _, err := e.ipam.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "p", Cidr: "10.7.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	e.etcd.Close()
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"allocate", func(ctx context.Context) error {
			_, err := e.ipam.Allocate(ctx, &petrelv1.AllocateRequest{Handle: "h", NumIpv4: 1, Pool: "p"})
			return err
		}},
		{"release", func(ctx context.Context) error {
			_, err := e.ipam.Release(ctx, &petrelv1.ReleaseRequest{Handle: "h"})
			return err
		}},
		{"usage", func(ctx context.Context) error {
			_, err := e.ipam.Usage(ctx, &petrelv1.UsageRequest{})
			return err
		}},
		{"status", func(ctx context.Context) error {
			_, err := e.cluster.Status(ctx, &petrelv1.StatusRequest{})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The caller allows 30s; the server's budget is 1s.
			wantCode(t, tc.call(ctxT(t)), codes.Unavailable, "")
		})
	}
}

func TestUnimplementedClusterRPCs(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	_, err := e.cluster.WaitConverged(ctxT(t), &petrelv1.WaitConvergedRequest{})
	wantCode(t, err, codes.Unimplemented, "")
}

func TestPoolGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SetPoolUsage([]ipam.PoolUsage{{Pool: ipam.Pool{Name: "a"}, Capacity: 1024, Allocated: 3}, {Pool: ipam.Pool{Name: "b"}, Capacity: 64}})
	var got dto.Metric
	if err := m.PoolAddresses.WithLabelValues("a", "allocated").Write(&got); err != nil {
		t.Fatal(err)
	}
	if v, want := got.GetGauge().GetValue(), 3.0; v != want {
		t.Errorf("a allocated: got %v, want %v", v, want)
	}
	m.SetPoolUsage([]ipam.PoolUsage{{Pool: ipam.Pool{Name: "a"}, Capacity: 1024, Allocated: 5}})
	if got, want := len(family(t, reg, "petrel_ipam_pool_addresses").GetMetric()), 2; got != want {
		t.Errorf("series after pool b went away: got %d, want %d", got, want)
	}
	var nilM *Metrics
	nilM.SetPoolUsage(nil) // must not panic
}

func family(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}
