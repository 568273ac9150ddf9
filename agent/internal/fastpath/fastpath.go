package fastpath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-net/petrel/agent/registry"
)

// ErrUnsupported is returned by New where the kernel cannot load or attach
// the program (not Linux, no BPF, a kernel without bpf_redirect_peer).
var ErrUnsupported = errors.New("fastpath: not supported on this system")

// Kind is the value of a map entry.
type Kind uint32

const (
	// KindContainer marks a local container's host-side veth (with the
	// address 0.0.0.0) and each address that container may send from.
	KindContainer Kind = 1
	// KindUnderlay marks the underlay device (with the address 0.0.0.0).
	KindUnderlay Kind = 2
	// KindPeer, on the underlay's ifindex, marks another host's underlay
	// address: a next hop the program may send to.
	KindPeer Kind = 3
)

// Key is a map key: an interface and an IPv4 address (0.0.0.0 for the
// interface itself). Its memory layout is the program's: ifindex in host
// order, then the address in network order.
type Key struct {
	Ifindex uint32
	Addr    [4]byte
}

func (k Key) String() string { return fmt.Sprintf("%d/%s", k.Ifindex, netip.AddrFrom4(k.Addr)) }

// Counters are the packets the program redirected, summed over CPUs.
type Counters struct {
	// ToContainer counts packets handed to a local container.
	ToContainer uint64
	// ToUnderlay counts packets sent out of the underlay.
	ToUnderlay uint64
}

// kernel loads, attaches and feeds the program. The real one is
// kernel_linux.go's; tests use fakeKernel. Removing what is not there is
// success.
type kernel interface {
	// links maps every interface name of the namespace to its index.
	links(ctx context.Context) (map[string]int, error)
	// link returns one interface's index, 0 when there is none.
	link(ctx context.Context, name string) (int, error)
	// entries reads the program's map.
	entries(ctx context.Context) (map[Key]Kind, error)
	put(ctx context.Context, k Key, v Kind) error
	del(ctx context.Context, k Key) error
	// attach puts the program on the interface's ingress, replacing an
	// older Petrel filter there.
	attach(ctx context.Context, ifindex int) error
	counters(ctx context.Context) (Counters, error)
	// subscribe reports the names of links that appear in the namespace,
	// from the moment it returns until ctx ends or the subscription fails;
	// either way the channel is closed.
	subscribe(ctx context.Context) (<-chan string, error)
	close() error
}

// FastPath reconciles the program's map and attachments with the registry.
type FastPath struct {
	host, underlay string
	k              kernel

	mu sync.Mutex
	// attached holds the interfaces this process attached the program to
	// (an interface's ifindex is never reused while it exists).
	attached map[int]bool
	// have is the kernel's map as this process last wrote it, nil until a
	// full reconcile succeeded; with owners it lets a watch batch update
	// only the records it touched.
	have   map[Key]Kind
	owners map[string][]entry
	refs   map[Key]int
	// pending holds local endpoints whose veth did not exist yet, by its
	// name: the dataplane writes the record while it creates the link, so
	// the record can arrive first. Run completes them when the link shows.
	pending      map[string]pendingEndpoint
	pendingByKey map[string]string
}

type pendingEndpoint struct {
	key string
	ips []string
}

// setPending records (or, with no name, forgets) the endpoint under key
// as waiting for its veth.
func (f *FastPath) setPending(key, name string, ips []string) {
	if old, ok := f.pendingByKey[key]; ok {
		delete(f.pending, old)
		delete(f.pendingByKey, key)
	}
	if name != "" {
		f.pending[name] = pendingEndpoint{key, ips}
		f.pendingByKey[key] = name
	}
}

type entry struct {
	k Key
	v Kind
}

func newWithDeps(host, underlay string, k kernel) *FastPath {
	return &FastPath{host: host, underlay: underlay, k: k, attached: map[int]bool{},
		pending: map[string]pendingEndpoint{}, pendingByKey: map[string]string{}}
}

// Close releases the program and map handles. Attached filters keep both
// alive in the kernel, so forwarding goes on.
func (f *FastPath) Close() error { return f.k.close() }

// Counters reads the redirect counters.
func (f *FastPath) Counters(ctx context.Context) (Counters, error) {
	c, err := f.k.counters(ctx)
	if err != nil {
		return c, fmt.Errorf("fastpath: read counters: %w", err)
	}
	return c, nil
}

// owner keys: the underlay itself, one per endpoint key and one per host.
const underlayOwner = "underlay"

// endpointEntries is what one endpoint contributes: nothing unless it is on
// this host and its veth exists.
func endpointEntries(ifindex int, ips []string) []entry {
	if ifindex <= 0 {
		return nil
	}
	idx := uint32(ifindex)
	out := []entry{{Key{Ifindex: idx}, KindContainer}}
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			continue
		}
		out = append(out, entry{Key{idx, a.As4()}, KindContainer})
	}
	return out
}

func peerEntries(underlay int, addr string) []entry {
	a, err := netip.ParseAddr(addr)
	if underlay <= 0 || err != nil || !a.Is4() {
		return nil
	}
	return []entry{{Key{uint32(underlay), a.As4()}, KindPeer}}
}

// desired computes every owner's entries from the snapshot; ifindex names
// the namespace's interfaces.
func (f *FastPath) desired(s *registry.Snapshot, ifindex func(string) int) map[string][]entry {
	out := map[string][]entry{}
	u := ifindex(f.underlay)
	if u > 0 {
		out[underlayOwner] = []entry{{Key{Ifindex: uint32(u)}, KindUnderlay}}
	}
	for name, h := range s.Hosts {
		if name == f.host {
			continue
		}
		if e := peerEntries(u, h.GetAddress()); e != nil {
			out[registry.HostsPrefix+name] = e
		}
	}
	local := registry.HostEndpointsPrefix(f.host)
	for key, ep := range s.Endpoints {
		if !strings.HasPrefix(key, local) || ep.GetHostIfname() == "" {
			continue
		}
		idx := ifindex(ep.GetHostIfname())
		if idx <= 0 {
			f.setPending(key, ep.GetHostIfname(), ep.GetIps())
			continue
		}
		out[key] = endpointEntries(idx, ep.GetIps())
	}
	return out
}

// flatten merges owners' entries. Two owners name the same key only when two
// host records hold one address, with the same kind.
func flatten(owners map[string][]entry) map[Key]Kind {
	out := map[Key]Kind{}
	for _, es := range owners {
		for _, e := range es {
			if _, ok := out[e.k]; !ok {
				out[e.k] = e.v
			}
		}
	}
	return out
}

// plan is what one reconcile changes: map entries to write and remove, and
// interfaces to attach to.
type plan struct {
	put    []entry
	del    []Key
	attach []int
}

// diff compares the desired map with the kernel's and the interfaces the
// program must be on with those it is on.
func diff(want, have map[Key]Kind, attached map[int]bool) plan {
	var p plan
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			p.put = append(p.put, entry{k, v})
		}
		if k.Addr == ([4]byte{}) && !attached[int(k.Ifindex)] {
			p.attach = append(p.attach, int(k.Ifindex))
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			p.del = append(p.del, k)
		}
	}
	return p
}

// apply writes the map before attaching, so a freshly attached program
// finds its interface, and removes stale entries last.
func (f *FastPath) apply(ctx context.Context, p plan) error {
	for _, e := range p.put {
		if err := f.k.put(ctx, e.k, e.v); err != nil {
			return fmt.Errorf("fastpath: write %s: %w", e.k, err)
		}
	}
	for _, idx := range p.attach {
		if err := f.k.attach(ctx, idx); err != nil {
			return fmt.Errorf("fastpath: attach to ifindex %d: %w", idx, err)
		}
		f.attached[idx] = true
	}
	for _, k := range p.del {
		if err := f.k.del(ctx, k); err != nil {
			return fmt.Errorf("fastpath: remove %s: %w", k, err)
		}
		if k.Addr == ([4]byte{}) {
			delete(f.attached, int(k.Ifindex))
		}
	}
	return nil
}

// Reconcile makes the map match the snapshot, reading the kernel's map and
// every interface index, and attaches the program where it is missing. An
// unchanged snapshot changes nothing.
func (f *FastPath) Reconcile(ctx context.Context, s *registry.Snapshot) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.have, f.owners, f.refs = nil, nil, nil
	clear(f.pending)
	clear(f.pendingByKey)
	links, err := f.k.links(ctx)
	if err != nil {
		return fmt.Errorf("fastpath: list links: %w", err)
	}
	have, err := f.k.entries(ctx)
	if err != nil {
		return fmt.Errorf("fastpath: read map: %w", err)
	}
	owners := f.desired(s, func(n string) int { return links[n] })
	want := flatten(owners)
	if err := f.apply(ctx, diff(want, have, f.attached)); err != nil {
		return err
	}
	refs := map[Key]int{}
	for _, es := range owners {
		for _, e := range es {
			refs[e.k]++
		}
	}
	f.have, f.owners, f.refs = want, owners, refs
	return nil
}

// ReconcileChanged is Reconcile for a snapshot that differs from the one of
// the previous call only under the keys in changed. It recomputes the
// entries of the endpoints and hosts named there, one interface lookup per
// local endpoint, and diffs only those, so its cost follows the change.
func (f *FastPath) ReconcileChanged(ctx context.Context, s *registry.Snapshot, changed []string) error {
	f.mu.Lock()
	if f.have == nil {
		f.mu.Unlock()
		return f.Reconcile(ctx, s)
	}
	defer f.mu.Unlock()
	local := registry.HostEndpointsPrefix(f.host)
	var u int
	if es := f.owners[underlayOwner]; len(es) > 0 {
		u = int(es[0].k.Ifindex)
	}
	next := map[string][]entry{}
	for _, key := range changed {
		switch {
		case strings.HasPrefix(key, local):
			f.setPending(key, "", nil)
			ep := s.Endpoints[key]
			if ep == nil || ep.GetHostIfname() == "" {
				next[key] = nil
				break
			}
			idx, err := f.k.link(ctx, ep.GetHostIfname())
			if err != nil {
				f.have = nil
				return fmt.Errorf("fastpath: look up %s: %w", ep.GetHostIfname(), err)
			}
			if idx == 0 {
				f.setPending(key, ep.GetHostIfname(), ep.GetIps())
			}
			next[key] = endpointEntries(idx, ep.GetIps())
		case strings.HasPrefix(key, registry.HostsPrefix):
			name := strings.TrimPrefix(key, registry.HostsPrefix)
			next[key] = nil
			if h := s.Hosts[name]; h != nil && name != f.host {
				next[key] = peerEntries(u, h.GetAddress())
			}
		}
	}
	return f.update(ctx, next)
}

// update replaces the entries of the owners in next (nil: none) and writes
// the difference. Called with f.mu held and f.have set.
func (f *FastPath) update(ctx context.Context, next map[string][]entry) error {
	if len(next) == 0 {
		return nil
	}
	var dropped []Key
	added := map[Key]Kind{}
	for key, es := range next {
		for _, e := range f.owners[key] {
			if f.refs[e.k]--; f.refs[e.k] <= 0 {
				delete(f.refs, e.k)
				dropped = append(dropped, e.k)
			}
		}
		for _, e := range es {
			f.refs[e.k]++
			if _, ok := added[e.k]; !ok {
				added[e.k] = e.v
			}
		}
		if es == nil {
			delete(f.owners, key)
		} else {
			f.owners[key] = es
		}
	}
	var p plan
	for k, v := range added {
		if hv, ok := f.have[k]; !ok || hv != v {
			p.put = append(p.put, entry{k, v})
		}
		if k.Addr == ([4]byte{}) && !f.attached[int(k.Ifindex)] {
			p.attach = append(p.attach, int(k.Ifindex))
		}
	}
	for _, k := range dropped {
		if f.refs[k] == 0 {
			p.del = append(p.del, k)
		}
	}
	if err := f.apply(ctx, p); err != nil {
		f.have = nil
		return err
	}
	for _, e := range p.put {
		f.have[e.k] = e.v
	}
	for _, k := range p.del {
		delete(f.have, k)
	}
	return nil
}

// resubscribeAfter is how long Run waits before it renews a failed link
// subscription.
const resubscribeAfter = time.Second

// Run follows the links that appear in the namespace and completes the
// endpoints waiting for their veth. It returns when ctx ends; a failed
// subscription is renewed after a pause, and every waiting endpoint is
// checked again then, since links may have come meanwhile.
func (f *FastPath) Run(ctx context.Context) error {
	for {
		names, err := f.k.subscribe(ctx)
		if err == nil {
			f.checkPending(ctx, "")
			for name := range names {
				f.checkPending(ctx, name)
			}
		}
		t := time.NewTimer(resubscribeAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// checkPending completes the waiting endpoint whose veth is name, or every
// waiting endpoint when name is empty. Failures leave the next full
// reconcile to repair.
func (f *FastPath) checkPending(ctx context.Context, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.have == nil || len(f.pending) == 0 {
		return
	}
	names := []string{name}
	if name == "" {
		names = slices.Collect(maps.Keys(f.pending))
	}
	next := map[string][]entry{}
	for _, n := range names {
		pe, ok := f.pending[n]
		if !ok {
			continue
		}
		idx, err := f.k.link(ctx, n)
		if err != nil || idx == 0 {
			continue
		}
		f.setPending(pe.key, "", nil)
		next[pe.key] = endpointEntries(idx, pe.ips)
	}
	_ = f.update(ctx, next)
}
