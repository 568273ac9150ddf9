// Package fake is an in-memory petreld for the shims' tests: it implements
// the IPAM, Dataplane and Cluster services of petrel.v1 and serves them on a
// real unix socket, so the shims run their production client code.
package fake

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// Agent is the fake agent's state. Tests read it after a shim call.
type Agent struct {
	petrelv1grpc.UnimplementedIPAMServer
	petrelv1grpc.UnimplementedDataplaneServer
	petrelv1grpc.UnimplementedClusterServer

	// Host is the name the fake reports and records endpoints under.
	Host string

	mu        sync.Mutex
	pool4     netip.Prefix
	pool6     netip.Prefix
	next4     netip.Addr
	next6     netip.Addr
	allocs    map[netip.Addr]string // ip -> handle
	endpoints map[string]*petrelv1.Endpoint
	calls     []string
	hook      func(ctx context.Context, method string) error
	attached  []*petrelv1.AttachRequest
}

// New returns an agent with pools 10.77.0.0/24 and fd00:77::/120.
func New() *Agent {
	a := &Agent{
		Host:      "fake-host",
		pool4:     netip.MustParsePrefix("10.77.0.0/24"),
		pool6:     netip.MustParsePrefix("fd00:77::/120"),
		allocs:    map[netip.Addr]string{},
		endpoints: map[string]*petrelv1.Endpoint{},
	}
	a.next4 = a.pool4.Addr().Next()
	a.next6 = a.pool6.Addr().Next()
	return a
}

// Start serves a new Agent on a socket in t.TempDir and stops it in
// t.Cleanup. It returns the agent and the socket path.
func Start(t testing.TB) (*Agent, string) {
	t.Helper()
	a := New()
	// unix socket paths are limited to 108 bytes; TempDir can be long.
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	sock := filepath.Join(dir, "a.sock")
	stop, err := a.Serve(sock)
	if err != nil {
		t.Fatalf("serve fake agent: %v", err)
	}
	t.Cleanup(stop)
	return a, sock
}

// Serve listens on the unix socket path and returns a stop function.
func (a *Agent) Serve(sock string) (stop func(), err error) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", sock, err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(a.intercept))
	petrelv1grpc.RegisterIPAMServer(s, a)
	petrelv1grpc.RegisterDataplaneServer(s, a)
	petrelv1grpc.RegisterClusterServer(s, a)
	done := make(chan struct{})
	go func() { _ = s.Serve(l); close(done) }()
	return func() { s.Stop(); <-done }, nil
}

// SetHook installs a function run before every RPC with the method's short
// name ("Allocate", "Attach", ...). A non-nil error fails the call with it.
func (a *Agent) SetHook(h func(ctx context.Context, method string) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hook = h
}

// Calls returns the short names of the RPCs served so far, in order.
func (a *Agent) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Allocations returns ip -> handle for every held address.
func (a *Agent) Allocations() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[string]string{}
	for ip, h := range a.allocs {
		m[ip.String()] = h
	}
	return m
}

// Endpoints returns copies of the endpoint records, sorted by key.
func (a *Agent) Endpoints() []*petrelv1.Endpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]string, 0, len(a.endpoints))
	for k := range a.endpoints {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*petrelv1.Endpoint, 0, len(keys))
	for _, k := range keys {
		out = append(out, a.endpoints[k])
	}
	return out
}

// LastAttach returns the most recent Attach request, or nil.
func (a *Agent) LastAttach() *petrelv1.AttachRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.attached) == 0 {
		return nil
	}
	return a.attached[len(a.attached)-1]
}

func (a *Agent) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	name := filepath.Base(info.FullMethod)
	a.mu.Lock()
	a.calls = append(a.calls, name)
	hook := a.hook
	a.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, name); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (a *Agent) take(handle string, v6 bool) (netip.Addr, error) {
	pool, next := a.pool4, &a.next4
	if v6 {
		pool, next = a.pool6, &a.next6
	}
	for ip := *next; pool.Contains(ip); ip = ip.Next() {
		if _, used := a.allocs[ip]; !used {
			a.allocs[ip] = handle
			*next = ip.Next()
			return ip, nil
		}
	}
	return netip.Addr{}, status.Errorf(codes.ResourceExhausted, "pool %s exhausted", pool)
}

func (a *Agent) held(handle string, v6 bool) []netip.Addr {
	var out []netip.Addr
	for ip, h := range a.allocs {
		if h == handle && ip.Is6() == v6 {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Allocate is idempotent per handle: it tops the handle's addresses up to the
// requested count and returns that many.
func (a *Agent) Allocate(_ context.Context, r *petrelv1.AllocateRequest) (*petrelv1.AllocateResponse, error) {
	if r.GetHandle() == "" {
		return nil, status.Error(codes.InvalidArgument, "handle is required")
	}
	if r.GetNumIpv4() < 0 || r.GetNumIpv6() < 0 || r.GetNumIpv4()+r.GetNumIpv6() == 0 {
		return nil, status.Error(codes.InvalidArgument, "request at least one address")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, fam := range []struct {
		n  int32
		v6 bool
	}{{r.GetNumIpv4(), false}, {r.GetNumIpv6(), true}} {
		have := a.held(r.GetHandle(), fam.v6)
		for int32(len(have)) < fam.n {
			ip, err := a.take(r.GetHandle(), fam.v6)
			if err != nil {
				return nil, err
			}
			have = append(have, ip)
		}
		for _, ip := range have[:fam.n] {
			out = append(out, ip.String())
		}
	}
	return &petrelv1.AllocateResponse{Ips: out}, nil
}

// Reserve claims static addresses, all or nothing.
func (a *Agent) Reserve(_ context.Context, r *petrelv1.ReserveRequest) (*petrelv1.ReserveResponse, error) {
	if r.GetHandle() == "" {
		return nil, status.Error(codes.InvalidArgument, "handle is required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var ips []netip.Addr
	for _, s := range r.GetIps() {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "bad address %q", s)
		}
		if !a.pool4.Contains(ip) && !a.pool6.Contains(ip) {
			return nil, status.Errorf(codes.InvalidArgument, "%s is in no pool", ip)
		}
		if h, used := a.allocs[ip]; used && h != r.GetHandle() {
			return nil, status.Errorf(codes.AlreadyExists, "%s is held by %s", ip, h)
		}
		ips = append(ips, ip)
	}
	for _, ip := range ips {
		a.allocs[ip] = r.GetHandle()
	}
	return &petrelv1.ReserveResponse{Ips: r.GetIps()}, nil
}

// Release frees a handle's addresses and/or the listed ones.
func (a *Agent) Release(_ context.Context, r *petrelv1.ReleaseRequest) (*petrelv1.ReleaseResponse, error) {
	if r.GetHandle() == "" && len(r.GetIps()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "handle or ips required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for ip, h := range a.allocs {
		if r.GetHandle() != "" && h == r.GetHandle() {
			delete(a.allocs, ip)
			out = append(out, ip.String())
		}
	}
	for _, s := range r.GetIps() {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "bad address %q", s)
		}
		if _, ok := a.allocs[ip]; ok {
			delete(a.allocs, ip)
			out = append(out, ip.String())
		}
	}
	sort.Strings(out)
	return &petrelv1.ReleaseResponse{Released: out}, nil
}

// ListAllocations lists held addresses, filtered by handle.
func (a *Agent) ListAllocations(_ context.Context, r *petrelv1.ListAllocationsRequest) (*petrelv1.ListAllocationsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*petrelv1.Allocation
	for ip, h := range a.allocs {
		if r.GetHandle() != "" && h != r.GetHandle() {
			continue
		}
		out = append(out, &petrelv1.Allocation{Ip: ip.String(), Handle: h, Host: a.Host})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ip < out[j].Ip })
	return &petrelv1.ListAllocationsResponse{Allocations: out}, nil
}

func epKey(cid, ifname string) string { return cid + "/" + ifname }

// Attach records the endpoint. It is idempotent.
func (a *Agent) Attach(_ context.Context, r *petrelv1.AttachRequest) (*petrelv1.AttachResponse, error) {
	ep := r.GetEndpoint()
	if ep.GetContainerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "endpoint.container_id is required")
	}
	if len(ep.GetIps()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "endpoint.ips is required")
	}
	if r.GetNetns() == "" && r.GetPid() == 0 {
		return nil, status.Error(codes.InvalidArgument, "netns or pid is required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attached = append(a.attached, r)
	rec := &petrelv1.Endpoint{}
	*rec = petrelv1.Endpoint{
		ContainerId: ep.GetContainerId(), Host: a.Host, Ips: ep.GetIps(), Netns: r.GetNetns(),
		Ifname: ep.GetIfname(), HostIfname: "ptlfake" + fmt.Sprint(len(a.endpoints)), Source: ep.GetSource(),
		Netgroups: ep.GetNetgroups(), Labels: ep.GetLabels(), NetworkName: ep.GetNetworkName(),
		PortMappings: ep.GetPortMappings(), Handle: ep.GetHandle(), Mac: "02:00:00:00:00:01",
	}
	if rec.Ifname == "" {
		rec.Ifname = "eth0"
	}
	a.endpoints[epKey(rec.ContainerId, rec.Ifname)] = rec
	return &petrelv1.AttachResponse{Endpoint: rec, Gateway: "169.254.1.1", Ipv6Gateway: "fe80::1", Mtu: 1500}, nil
}

// Detach removes endpoint records; it is idempotent.
func (a *Agent) Detach(_ context.Context, r *petrelv1.DetachRequest) (*petrelv1.DetachResponse, error) {
	if r.GetContainerId() == "" {
		return nil, status.Error(codes.InvalidArgument, "container_id is required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	removed := false
	for k, ep := range a.endpoints {
		if ep.GetContainerId() == r.GetContainerId() && (r.GetIfname() == "" || ep.GetIfname() == r.GetIfname()) {
			delete(a.endpoints, k)
			removed = true
		}
	}
	return &petrelv1.DetachResponse{Removed: removed}, nil
}

// Check compares the record with the request.
func (a *Agent) Check(_ context.Context, r *petrelv1.CheckRequest) (*petrelv1.CheckResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ep, ok := a.endpoints[epKey(r.GetContainerId(), r.GetIfname())]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no endpoint %s/%s", r.GetContainerId(), r.GetIfname())
	}
	var problems []string
	for _, ip := range r.GetIps() {
		if !slices.Contains(ep.GetIps(), ip) {
			problems = append(problems, fmt.Sprintf("address %s not on %s", ip, ep.GetIfname()))
		}
	}
	return &petrelv1.CheckResponse{Problems: problems}, nil
}

// ListEndpoints lists every record.
func (a *Agent) ListEndpoints(context.Context, *petrelv1.ListEndpointsRequest) (*petrelv1.ListEndpointsResponse, error) {
	return &petrelv1.ListEndpointsResponse{Endpoints: a.Endpoints()}, nil
}

// GetEndpoint returns the records of one container.
func (a *Agent) GetEndpoint(_ context.Context, r *petrelv1.GetEndpointRequest) (*petrelv1.GetEndpointResponse, error) {
	var out []*petrelv1.Endpoint
	for _, ep := range a.Endpoints() {
		if ep.GetContainerId() == r.GetContainerId() {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		return nil, status.Errorf(codes.NotFound, "no endpoint for container %s", r.GetContainerId())
	}
	return &petrelv1.GetEndpointResponse{Endpoints: out}, nil
}

// Status reports the fake host.
func (a *Agent) Status(context.Context, *petrelv1.StatusRequest) (*petrelv1.StatusResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &petrelv1.StatusResponse{Host: a.Host, Version: "fake", Endpoints: int64(len(a.endpoints))}, nil
}

// Add is Allocate then Attach, as petreld serves it.
func (a *Agent) Add(ctx context.Context, r *petrelv1.AddRequest) (*petrelv1.AttachResponse, error) {
	att := r.GetAttach()
	if att == nil || r.GetAllocate() == nil {
		return nil, status.Error(codes.InvalidArgument, "attach and allocate are required")
	}
	alloc := proto.CloneOf(r.GetAllocate())
	if alloc.Handle == "" {
		alloc.Handle = att.GetEndpoint().GetHandle()
	}
	got, err := a.Allocate(ctx, alloc)
	if err != nil {
		return nil, err
	}
	att = proto.CloneOf(att)
	if att.Endpoint == nil {
		att.Endpoint = &petrelv1.Endpoint{}
	}
	att.Endpoint.Ips = append(att.Endpoint.Ips, got.GetIps()...)
	return a.Attach(ctx, att)
}

// Remove is Detach then Release of the handle, as petreld serves it.
func (a *Agent) Remove(ctx context.Context, r *petrelv1.RemoveRequest) (*petrelv1.RemoveResponse, error) {
	if r.GetReleaseHandle() == "" {
		return nil, status.Error(codes.InvalidArgument, "release_handle is required")
	}
	d, err := a.Detach(ctx, r.GetDetach())
	if err != nil {
		return nil, err
	}
	rel, err := a.Release(ctx, &petrelv1.ReleaseRequest{Handle: r.GetReleaseHandle()})
	if err != nil {
		return nil, err
	}
	return &petrelv1.RemoveResponse{Removed: d.GetRemoved(), Released: rel.GetReleased()}, nil
}
