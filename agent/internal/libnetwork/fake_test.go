package libnetwork

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// fakeStore is an in-memory Store.
type fakeStore struct {
	mu  sync.Mutex
	kvs map[string][]byte
}

func newFakeStore() *fakeStore { return &fakeStore{kvs: map[string][]byte{}} }

func (s *fakeStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kvs[key], nil
}

func (s *fakeStore) Put(_ context.Context, key string, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kvs[key] = val
	return nil
}

func (s *fakeStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.kvs, key)
	return nil
}

func (s *fakeStore) Update(_ context.Context, key string, fn func([]byte) ([]byte, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := fn(s.kvs[key])
	if err != nil || v == nil {
		return err
	}
	s.kvs[key] = v
	return nil
}

func (s *fakeStore) List(_ context.Context, prefix string) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range s.kvs {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out, nil
}

func (s *fakeStore) keys(prefix string) []string {
	kv, _ := s.List(context.Background(), prefix)
	var out []string
	for k := range kv {
		out = append(out, k)
	}
	return out
}

// fakeIPAM hands out addresses in order and writes allocation records into
// the store, as the real IPAM does.
type fakeIPAM struct {
	store *fakeStore
	pools []ipam.Pool

	mu   sync.Mutex
	next map[string]netip.Addr
	held map[netip.Addr]string
}

func newFakeIPAM(store *fakeStore, pools ...ipam.Pool) *fakeIPAM {
	return &fakeIPAM{store: store, pools: pools, next: map[string]netip.Addr{}, held: map[netip.Addr]string{}}
}

func (f *fakeIPAM) poolByName(name string) (ipam.Pool, netip.Prefix, error) {
	for _, p := range f.pools {
		if p.Name == name {
			return p, netip.MustParsePrefix(p.CIDR), nil
		}
	}
	return ipam.Pool{}, netip.Prefix{}, fmt.Errorf("pool %s: %w", name, ipam.ErrNotFound)
}

func (f *fakeIPAM) record(pool string, ip netip.Addr, handle string) {
	b, _ := registry.EncodeJSON(registry.Allocation{IP: ip.String(), Handle: handle, Pool: pool})
	_ = f.store.Put(context.Background(), registry.IPKey(pool, ip.String()), b)
	f.held[ip] = handle
}

func (f *fakeIPAM) Allocate(_ context.Context, req ipam.Request) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := req.Pool
	if req.NumV6 > 0 {
		name = req.PoolV6
	}
	_, pfx, err := f.poolByName(name)
	if err != nil {
		return nil, err
	}
	ip, ok := f.next[name]
	if !ok {
		ip = pfx.Addr().Next()
	}
	for f.held[ip] != "" {
		ip = ip.Next()
	}
	if !pfx.Contains(ip) {
		return nil, ipam.ErrExhausted
	}
	f.next[name] = ip.Next()
	f.record(name, ip, req.Handle)
	return []netip.Addr{ip}, nil
}

func (f *fakeIPAM) Reserve(_ context.Context, handle string, ips []netip.Addr, _ []string, _ map[string]string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ip := range ips {
		if h := f.held[ip]; h != "" && h != handle {
			return nil, fmt.Errorf("%s: %w", ip, ipam.ErrConflict)
		}
		for _, p := range f.pools {
			if netip.MustParsePrefix(p.CIDR).Contains(ip) {
				f.record(p.Name, ip, handle)
			}
		}
	}
	return ips, nil
}

func (f *fakeIPAM) Release(_ context.Context, handle string, ips []netip.Addr) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for _, ip := range ips {
		if f.held[ip] != handle {
			continue
		}
		delete(f.held, ip)
		for _, p := range f.pools {
			_ = f.store.Delete(context.Background(), registry.IPKey(p.Name, ip.String()))
		}
		out = append(out, ip)
	}
	return out, nil
}

func (f *fakeIPAM) ListPools(context.Context) ([]ipam.Pool, error) { return f.pools, nil }

func (f *fakeIPAM) heldCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

// fakeDataplane records attaches in the store like the real dataplane.
type fakeDataplane struct {
	host  string
	store *fakeStore

	mu       sync.Mutex
	attached map[string]dataplane.Spec
	detaches int
	failNext error
}

func newFakeDataplane(host string, store *fakeStore) *fakeDataplane {
	return &fakeDataplane{host: host, store: store, attached: map[string]dataplane.Spec{}}
}

func (d *fakeDataplane) Attach(ctx context.Context, s dataplane.Spec) (dataplane.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.failNext; err != nil {
		d.failNext = nil
		return dataplane.Result{}, err
	}
	d.attached[s.ContainerID] = s
	ips := make([]string, len(s.IPs))
	for i, ip := range s.IPs {
		ips[i] = ip.String()
	}
	ep := &petrelv1.Endpoint{
		ContainerId: s.ContainerID, Host: d.host, Ips: ips, Ifname: s.IfName,
		HostIfname: dataplane.HostIfName(s.ContainerID, s.IfName), Source: s.Source,
		Handle: s.Handle, Netgroups: s.Netgroups, Labels: maps.Clone(s.Labels),
		DockerNetworkId: s.DockerNetworkID, DockerEndpointId: s.DockerEndpointID,
	}
	b, err := registry.EncodeEndpoint(ep)
	if err != nil {
		return dataplane.Result{}, err
	}
	_ = d.store.Put(ctx, registry.EndpointKey(d.host, s.ContainerID, s.IfName), b)
	return dataplane.Result{
		Endpoint:   ep,
		GatewayV4:  dataplane.GatewayV4,
		GatewayV6:  dataplane.GatewayV6,
		TempIfName: dataplane.TempIfName(s.ContainerID, s.IfName),
	}, nil
}

func (d *fakeDataplane) Detach(ctx context.Context, containerID, _, _ string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.detaches++
	_, ok := d.attached[containerID]
	delete(d.attached, containerID)
	_ = d.store.Delete(ctx, registry.EndpointKey(d.host, containerID, endpointIfname))
	return ok, nil
}

func (d *fakeDataplane) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.attached)
}

// fakeHostNet records what would be installed in the root namespace.
type fakeHostNet struct {
	mu         sync.Mutex
	routes     []netip.Prefix
	forwarding int
	cleaned    bool
}

func (h *fakeHostNet) EnsureUnreachable(_ context.Context, p netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.routes = append(h.routes, p)
	return nil
}

func (h *fakeHostNet) EnsureForwarding(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forwarding++
	return nil
}

func (h *fakeHostNet) FastProxyARP(context.Context, string) error { return nil }

func (h *fakeHostNet) Cleanup(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleaned = true
	return nil
}

func (h *fakeHostNet) snapshot() ([]netip.Prefix, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]netip.Prefix(nil), h.routes...), h.forwarding
}

// fakeDocker is a Docker Engine API with a controllable event stream.
type fakeDocker struct {
	mu         sync.Mutex
	networks   map[string]*DockerNetwork
	containers map[string]*DockerContainer
	events     chan DockerEvent
	block      chan struct{} // when set, every call waits on it
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{networks: map[string]*DockerNetwork{}, containers: map[string]*DockerContainer{}, events: make(chan DockerEvent, 16)}
}

func (d *fakeDocker) wait(ctx context.Context) error {
	d.mu.Lock()
	b := d.block
	d.mu.Unlock()
	if b == nil {
		return nil
	}
	select {
	case <-b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *fakeDocker) Events(ctx context.Context, connected func(), fn func(DockerEvent)) error {
	if err := d.wait(ctx); err != nil {
		return err
	}
	connected()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-d.events:
			fn(ev)
		}
	}
}

func (d *fakeDocker) Network(ctx context.Context, id string) (*DockerNetwork, error) {
	if err := d.wait(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.networks[id]
	if !ok {
		return nil, ErrDockerNotFound
	}
	c := *n
	return &c, nil
}

func (d *fakeDocker) Container(ctx context.Context, id string) (*DockerContainer, error) {
	if err := d.wait(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.containers[id]
	if !ok {
		return nil, ErrDockerNotFound
	}
	cc := *c
	return &cc, nil
}
