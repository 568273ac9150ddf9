package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func newFakeDP(t *testing.T, opts ...Option) (*Dataplane, *fakeKernel, *FakeStore) {
	t.Helper()
	k := newFakeKernel()
	s := NewFakeStore()
	clock := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	return newWithDeps("h1", k, s, 1500, append([]Option{WithClock(clock)}, opts...)...), k, s
}

func TestSpecValidation(t *testing.T) {
	dp, _, _ := newFakeDP(t)
	tests := []struct {
		name  string
		spec  Spec
		field string
	}{
		{"no container id", Spec{Netns: "/n", IPs: addrs("10.0.0.2")}, "container_id"},
		{"slash in id", Spec{ContainerID: "a/b", Netns: "/n", IPs: addrs("10.0.0.2")}, "container_id"},
		{"long ifname", Spec{ContainerID: "a", IfName: "0123456789abcdef", Netns: "/n", IPs: addrs("10.0.0.2")}, "ifname"},
		{"no netns", Spec{ContainerID: "a", IPs: addrs("10.0.0.2")}, "netns"},
		{"netns and pid", Spec{ContainerID: "a", Netns: "/n", PID: 3, IPs: addrs("10.0.0.2")}, "netns"},
		{"relative netns", Spec{ContainerID: "a", Netns: "n", IPs: addrs("10.0.0.2")}, "netns"},
		{"negative pid", Spec{ContainerID: "a", PID: -1, IPs: addrs("10.0.0.2")}, "pid"},
		{"no ips", Spec{ContainerID: "a", Netns: "/n"}, "ips"},
		{"loopback", Spec{ContainerID: "a", Netns: "/n", IPs: addrs("127.0.0.1")}, "ips"},
		{"link-local", Spec{ContainerID: "a", Netns: "/n", IPs: addrs("fe80::1")}, "ips"},
		{"duplicate", Spec{ContainerID: "a", Netns: "/n", IPs: addrs("10.0.0.2", "10.0.0.2")}, "ips"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dp.Attach(context.Background(), tc.spec)
			var ia *InvalidArgumentError
			if !errors.As(err, &ia) || !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want InvalidArgumentError", err)
			}
			if ia.Field != tc.field {
				t.Errorf("field = %q, want %q", ia.Field, tc.field)
			}
		})
	}
}

func TestAttachFake(t *testing.T) {
	ctx := context.Background()
	dp, k, s := newFakeDP(t, WithOverhead(50))
	k.addNetns("/n/a")
	spec := Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.2"), Handle: "h", Source: petrelv1.Source_SOURCE_NETMODULES,
		PortMappings: []*petrelv1.PortMapping{{HostPort: 80, ContainerPort: 8080, Protocol: "tcp"}}}
	res, err := dp.Attach(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.MTU != 1450 {
		t.Errorf("MTU = %d, want 1450 (1500 - 50)", res.MTU)
	}
	hn := HostIfName("a", "eth0")
	want := "/n/a: link eth0 up=true mtu=1450 addrs=[10.0.0.2/32]\nlink " + hn + " up=true mtu=1450 peer=/n/a/eth0\nroute 10.0.0.2/32 dev " + hn
	if got := k.render(); got != want {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, want)
	}
	rec, _, _ := s.Get(ctx, "h1", "a", "eth0")
	if rec == nil || rec.GetHandle() != "h" || rec.GetPortMappings()[0].GetHostPort() != 80 || rec.GetMac() == "" ||
		!rec.GetCreated().AsTime().Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("record = %v", rec)
	}
	k.takeCalls()
	puts := s.Puts
	res, err = dp.Attach(ctx, spec)
	if err != nil || res.Changed {
		t.Fatalf("second Attach = %+v, %v; want unchanged", res, err)
	}
	if calls := k.takeCalls(); len(calls) != 0 {
		t.Errorf("second Attach touched the kernel: %v", calls)
	}
	if s.Puts != puts {
		t.Errorf("second Attach rewrote the record")
	}
	// A changed label rewrites the record only.
	spec.Labels = map[string]string{"x": "y"}
	if res, err := dp.Attach(ctx, spec); err != nil || !res.Changed {
		t.Errorf("relabel Attach = %+v, %v", res, err)
	}
	if calls := k.takeCalls(); len(calls) != 0 {
		t.Errorf("relabel touched the kernel: %v", calls)
	}
}

func TestAttachAllocate(t *testing.T) {
	ctx := context.Background()
	hn := HostIfName("a", "eth0")
	t.Run("fresh", func(t *testing.T) {
		dp, k, s := newFakeDP(t)
		k.addNetns("/n/a")
		k.created = make(chan string, 1)
		calls := 0
		spec := Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.9"), Handle: "h",
			Allocate: func(context.Context) ([]netip.Addr, error) {
				calls++
				// The pair is made while the addresses are found: this
				// returns only once createVeth has run.
				select {
				case got := <-k.created:
					if got != hn {
						t.Errorf("created %s, want %s", got, hn)
					}
				case <-time.After(10 * time.Second):
					t.Error("the pair was not created during the allocation")
				}
				return addrs("10.0.0.2", "10.0.0.9"), nil
			}}
		res, err := dp.Attach(ctx, spec)
		if err != nil || !res.Changed || calls != 1 {
			t.Fatalf("Attach = %+v, %v after %d allocations", res, err, calls)
		}
		if got := res.Endpoint.GetIps(); !slices.Equal(got, []string{"10.0.0.9", "10.0.0.2"}) {
			t.Errorf("ips = %v, want the static one and then the new one, none twice", got)
		}
		want := "/n/a: link eth0 up=true mtu=1500 addrs=[10.0.0.9/32 10.0.0.2/32]\nlink " + hn +
			" up=true mtu=1500 peer=/n/a/eth0\nroute 10.0.0.2/32 dev " + hn + "\nroute 10.0.0.9/32 dev " + hn
		if got := k.render(); got != want {
			t.Errorf("kernel:\n%s\nwant:\n%s", got, want)
		}
		if rec, _, _ := s.Get(ctx, "h1", "a", "eth0"); rec == nil || len(rec.GetIps()) != 2 {
			t.Errorf("record = %v", rec)
		}
		// Again: the endpoint is whole, so nothing is created or touched.
		k.created = nil
		k.takeCalls()
		spec.Allocate = func(context.Context) ([]netip.Addr, error) { return addrs("10.0.0.2"), nil }
		if res, err := dp.Attach(ctx, spec); err != nil || res.Changed {
			t.Fatalf("second Attach = %+v, %v; want unchanged", res, err)
		}
		if calls := k.takeCalls(); len(calls) != 0 {
			t.Errorf("second Attach touched the kernel: %v", calls)
		}
	})
	t.Run("allocation fails", func(t *testing.T) {
		dp, k, s := newFakeDP(t)
		k.addNetns("/n/a")
		k.created = make(chan string, 1)
		errFull := errors.New("pool exhausted")
		_, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", Allocate: func(context.Context) ([]netip.Addr, error) {
			select {
			case <-k.created:
			case <-time.After(10 * time.Second):
				t.Error("the pair was not created during the allocation")
			}
			return nil, errFull
		}})
		if err != errFull {
			t.Fatalf("err = %v, want the allocator's own error", err)
		}
		assertNothingLeft(t, k, s)
	})
	t.Run("no address at all", func(t *testing.T) {
		dp, k, _ := newFakeDP(t)
		k.addNetns("/n/a")
		_, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", Allocate: func(context.Context) ([]netip.Addr, error) {
			return nil, nil
		}})
		var iae *InvalidArgumentError
		if !errors.As(err, &iae) || iae.Field != "ips" {
			t.Fatalf("err = %v, want an invalid ips", err)
		}
		if got := k.render(); got != "" {
			t.Errorf("left behind:\n%s", got)
		}
	})
	t.Run("pair not creatable", func(t *testing.T) {
		// The early creation fails (no netns): the attach proper reports it.
		dp, _, _ := newFakeDP(t)
		_, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/gone", Allocate: func(context.Context) ([]netip.Addr, error) {
			return addrs("10.0.0.2"), nil
		}})
		if !errors.Is(err, ErrNetnsNotFound) {
			t.Fatalf("err = %v, want ErrNetnsNotFound", err)
		}
	})
}

func TestAttachRollback(t *testing.T) {
	ctx := context.Background()
	for _, step := range []string{"configureHost", "replaceHostRoute", "configureContainer"} {
		t.Run(step, func(t *testing.T) {
			dp, k, s := newFakeDP(t)
			k.addNetns("/n/a")
			k.failOn[step] = errors.New("boom")
			if _, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.2")}); err == nil {
				t.Fatal("Attach succeeded")
			}
			assertNothingLeft(t, k, s)
		})
	}
	t.Run("record read fails", func(t *testing.T) {
		dp, k, s := newFakeDP(t)
		k.addNetns("/n/a")
		// The read runs beside the kernel work: what that made is undone.
		errRead := errors.New("etcd down")
		dp.store = &failingStore{FakeStore: s, getErr: errRead}
		if _, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.2")}); !errors.Is(err, errRead) {
			t.Fatalf("err = %v, want %v", err, errRead)
		}
		assertNothingLeft(t, k, s)
	})
	t.Run("record write conflict", func(t *testing.T) {
		dp, k, s := newFakeDP(t)
		k.addNetns("/n/a")
		// A record is there, and changes between our read and write.
		cs := &conflictStore{FakeStore: s}
		dp.store = cs
		if _, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.2")}); !errors.Is(err, ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
		if got := k.render(); got != "" {
			t.Errorf("left behind:\n%s", got)
		}
	})
}

type conflictStore struct{ *FakeStore }

func (c *conflictStore) Create(context.Context, *petrelv1.Endpoint) (int64, *petrelv1.Endpoint, int64, error) {
	return 0, &petrelv1.Endpoint{ContainerId: "a", Ifname: "eth0", Ips: []string{"10.0.0.9"}}, 5, nil
}

func (c *conflictStore) Put(ctx context.Context, ep *petrelv1.Endpoint, _ int64) (int64, error) {
	return c.FakeStore.Put(ctx, ep, 99)
}

// failingStore fails Create and Get (getErr) and List (listErr).
type failingStore struct {
	*FakeStore
	getErr, listErr error
}

func (f *failingStore) Create(ctx context.Context, ep *petrelv1.Endpoint) (int64, *petrelv1.Endpoint, int64, error) {
	if f.getErr != nil {
		return 0, nil, 0, f.getErr
	}
	return f.FakeStore.Create(ctx, ep)
}

func (f *failingStore) Get(ctx context.Context, host, containerID, ifname string) (*petrelv1.Endpoint, int64, error) {
	if f.getErr != nil {
		return nil, 0, f.getErr
	}
	return f.FakeStore.Get(ctx, host, containerID, ifname)
}

func (f *failingStore) List(ctx context.Context, host, containerID string) ([]StoredEndpoint, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	return f.FakeStore.List(ctx, host, containerID)
}

func TestDetachNamedInterfaceNeedsNoList(t *testing.T) {
	ctx := context.Background()
	dp, k, s := newFakeDP(t)
	k.addNetns("/n/a")
	if _, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	errList := errors.New("list refused")
	dp.store = &failingStore{FakeStore: s, listErr: errList}
	if removed, err := dp.Detach(ctx, "a", "eth0", "/n/a"); err != nil || !removed {
		t.Fatalf("Detach eth0 = %v, %v", removed, err)
	}
	if _, err := dp.reapNow(ctx); err != nil {
		t.Fatal(err)
	}
	if got := k.render(); got != "" {
		t.Errorf("left behind:\n%s", got)
	}
	if rec, _, _ := s.Get(ctx, "h1", "a", "eth0"); rec != nil {
		t.Errorf("record left: %v", rec)
	}
	// Every interface of a container still needs the list.
	if _, err := dp.Detach(ctx, "a", "", ""); !errors.Is(err, errList) {
		t.Errorf("Detach all = %v, want %v", err, errList)
	}
}

func TestDetachFake(t *testing.T) {
	ctx := context.Background()
	dp, k, _ := newFakeDP(t)
	k.addNetns("/n/a")
	for _, ifn := range []string{"eth0", "eth1"} {
		if _, err := dp.Attach(ctx, Spec{ContainerID: "a", IfName: ifn, Netns: "/n/a", IPs: addrs("10.0.0.2")}); err != nil {
			t.Fatal(err)
		}
	}
	k.delNetns("/n/a")
	removed, err := dp.Detach(ctx, "a", "", "/n/a")
	if err != nil || !removed {
		t.Fatalf("Detach = %v, %v", removed, err)
	}
	if eps, _ := dp.ListEndpoints(ctx, "*"); len(eps) != 0 {
		t.Errorf("records left: %v", eps)
	}
	if removed, err := dp.Detach(ctx, "a", "", ""); err != nil || removed {
		t.Errorf("second Detach = %v, %v", removed, err)
	}
	if _, err := dp.GetEndpoint(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetEndpoint = %v, want ErrNotFound", err)
	}
}

type recReleaser struct{ got []string }

func (r *recReleaser) ReleaseHandle(_ context.Context, h string) error {
	r.got = append(r.got, h)
	return nil
}

func TestReconcileFakeNoFlap(t *testing.T) {
	ctx := context.Background()
	rel := &recReleaser{}
	dp, k, _ := newFakeDP(t, WithReleaser(rel))
	k.addNetns("/n/ok")
	k.addNetns("/n/gone")
	for _, c := range []struct{ id, ns, ip string }{{"ok", "/n/ok", "10.0.0.2"}, {"gone", "/n/gone", "10.0.0.3"}} {
		if _, err := dp.Attach(ctx, Spec{ContainerID: c.id, Netns: c.ns, IPs: addrs(c.ip), Handle: "h-" + c.id}); err != nil {
			t.Fatal(err)
		}
	}
	k.delNetns("/n/gone")
	k.takeCalls()
	rep, err := dp.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (ReconcileReport{Healthy: 1, Removed: 1, Released: 1}) {
		t.Errorf("report = %+v", rep)
	}
	for _, c := range k.takeCalls() {
		if strings.Contains(c, HostIfName("ok", "eth0")) || strings.Contains(c, "/n/ok") {
			t.Errorf("healthy endpoint touched: %s", c)
		}
	}
	if len(rel.got) != 1 || rel.got[0] != "h-gone" {
		t.Errorf("released %v", rel.got)
	}
}

func TestReconcileProcPathNotRebuilt(t *testing.T) {
	ctx := context.Background()
	rel := &recReleaser{}
	dp, k, s := newFakeDP(t, WithReleaser(rel))
	k.addNetns("/proc/123/ns/net")
	k.addNetns("/run/netns/cni1")
	for _, c := range []struct{ id, ns string }{{"nm", "/proc/123/ns/net"}, {"cni", "/run/netns/cni1"}} {
		if _, err := dp.Attach(ctx, Spec{ContainerID: c.id, Netns: c.ns, IPs: addrs("10.0.0.2"), Handle: "h-" + c.id}); err != nil {
			t.Fatal(err)
		}
	}
	// Both pairs vanish; the pid now belongs to another process (the
	// path is still a live netns).
	for _, id := range []string{"nm", "cni"} {
		if _, err := k.deleteHostIf(ctx, HostIfName(id, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := dp.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (ReconcileReport{Repaired: 1, Removed: 1, Released: 1}) {
		t.Errorf("report = %+v, want the /proc endpoint removed and the CNI one rebuilt", rep)
	}
	if rec, _, _ := s.Get(ctx, "h1", "nm", "eth0"); rec != nil {
		t.Errorf("record of the /proc endpoint kept")
	}
	if len(rel.got) != 1 || rel.got[0] != "h-nm" {
		t.Errorf("released %v, want [h-nm]", rel.got)
	}
}

// TestRetireAndReap checks the batched deletion with the fake kernel: a
// detach frees the container's interface name at once, the retired pair is
// deleted by the scheduled reap, and the hook sees every deletion and error.
func TestRetireAndReap(t *testing.T) {
	ctx := context.Background()
	type reap struct {
		n   int
		err error
	}
	reaps := make(chan reap, 10)
	dp, k, _ := newFakeDP(t, WithReapHook(func(n int, err error) { reaps <- reap{n, err} }))
	k.addNetns("/n/a")
	if _, err := dp.Attach(ctx, Spec{ContainerID: "a", Netns: "/n/a", IPs: addrs("10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Detach(ctx, "a", "eth0", "/n/a"); err != nil {
		t.Fatal(err)
	}
	// The name is free before the reap.
	if _, err := dp.Attach(ctx, Spec{ContainerID: "b", Netns: "/n/a", IPs: addrs("10.0.0.3")}); err != nil {
		t.Fatalf("attach into the same namespace right after a detach: %v", err)
	}
	select {
	case r := <-reaps:
		if r.n != 1 || r.err != nil {
			t.Errorf("scheduled reap = %d, %v; want 1, nil", r.n, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reap within 10s of a detach")
	}
	if _, err := dp.Detach(ctx, "b", "eth0", "/n/a"); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("rtnl busy")
	k.mu.Lock()
	k.failOn["reapRetired"] = boom
	k.mu.Unlock()
	if _, err := dp.reapNow(ctx); !errors.Is(err, boom) {
		t.Errorf("reapNow = %v, want %v", err, boom)
	}
	if r := <-reaps; !errors.Is(r.err, boom) {
		t.Errorf("hook saw %v, want %v", r.err, boom)
	}
	k.mu.Lock()
	delete(k.failOn, "reapRetired")
	k.mu.Unlock()
	// Close deletes what is left.
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := k.render(); got != "" {
		t.Errorf("left after Close:\n%s", got)
	}
}

// assertNothingLeft fails t if the kernel or the registry holds anything.
func assertNothingLeft(t *testing.T, k *fakeKernel, s *FakeStore) {
	t.Helper()
	if got := k.render(); got != "" {
		t.Errorf("left behind:\n%s", got)
	}
	if recs, _ := s.List(context.Background(), "", ""); len(recs) != 0 {
		t.Errorf("record written: %v", recs)
	}
}
