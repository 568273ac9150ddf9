package routes

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// FakeOps is an in-memory kernel for tests and benchmarks. It renders its
// state as `ip`/`bridge` command text and counts calls.
type FakeOps struct {
	mu     sync.Mutex
	routes map[netip.Prefix]Route
	vxlan  *VXLAN
	neigh  map[netip.Addr]string
	fdb    map[string]netip.Addr
	// Calls counts mutating calls by name.
	Calls map[string]int
	// Fail makes the named call fail once.
	Fail map[string]error
}

var _ netOps = (*FakeOps)(nil)

// NewFakeOps returns an empty fake kernel.
func NewFakeOps() *FakeOps {
	return &FakeOps{routes: map[netip.Prefix]Route{}, neigh: map[netip.Addr]string{}, fdb: map[string]netip.Addr{}, Calls: map[string]int{}, Fail: map[string]error{}}
}

func (f *FakeOps) call(name string) error {
	f.Calls[name]++
	if err, ok := f.Fail[name]; ok {
		delete(f.Fail, name)
		return err
	}
	return nil
}

// ListRoutes implements netOps.
func (f *FakeOps) ListRoutes() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Route, 0, len(f.routes))
	for _, r := range f.routes {
		if r.Kind == Unicast && r.Dev == "" {
			r.Dev = "eth0" // the kernel reports the device it resolved
		}
		out = append(out, r)
	}
	return out, nil
}

// ReplaceRoute implements netOps.
func (f *FakeOps) ReplaceRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ReplaceRoute"); err != nil {
		return err
	}
	f.routes[r.Dst] = r
	return nil
}

// DeleteRoute implements netOps.
func (f *FakeOps) DeleteRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DeleteRoute"); err != nil {
		return err
	}
	delete(f.routes, r.Dst)
	return nil
}

// EnsureVXLAN implements netOps.
func (f *FakeOps) EnsureVXLAN(v VXLAN) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnsureVXLAN"); err != nil {
		return err
	}
	f.vxlan = &v
	return nil
}

func (f *FakeOps) hasDev(dev string) error {
	if f.vxlan == nil || f.vxlan.Name != dev {
		return fmt.Errorf("link %s: not found", dev)
	}
	return nil
}

// ListNeigh implements netOps.
func (f *FakeOps) ListNeigh(dev string) (map[netip.Addr]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.hasDev(dev); err != nil {
		return nil, err
	}
	out := map[netip.Addr]string{}
	for k, v := range f.neigh {
		out[k] = v
	}
	return out, nil
}

// SetNeigh implements netOps.
func (f *FakeOps) SetNeigh(dev string, ip netip.Addr, mac string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SetNeigh"); err != nil {
		return err
	}
	if err := f.hasDev(dev); err != nil {
		return err
	}
	f.neigh[ip] = mac
	return nil
}

// DelNeigh implements netOps.
func (f *FakeOps) DelNeigh(dev string, ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DelNeigh"); err != nil {
		return err
	}
	delete(f.neigh, ip)
	return nil
}

// ListFDB implements netOps.
func (f *FakeOps) ListFDB(dev string) (map[string]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.hasDev(dev); err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for k, v := range f.fdb {
		out[k] = v
	}
	return out, nil
}

// SetFDB implements netOps.
func (f *FakeOps) SetFDB(dev, mac string, dst netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SetFDB"); err != nil {
		return err
	}
	if err := f.hasDev(dev); err != nil {
		return err
	}
	f.fdb[mac] = dst
	return nil
}

// DelFDB implements netOps.
func (f *FakeOps) DelFDB(_dev, mac string, _dst netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DelFDB"); err != nil {
		return err
	}
	delete(f.fdb, mac)
	return nil
}

// Len is the number of routes.
func (f *FakeOps) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.routes)
}

// String renders the state as commands, sorted.
func (f *FakeOps) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	if v := f.vxlan; v != nil {
		lines = append(lines, fmt.Sprintf("ip link add %s type vxlan id %d dstport %d local %s address %s mtu %d", v.Name, v.VNI, v.Port, v.Local, v.MAC, v.MTU))
	}
	var rs []string
	for _, r := range f.routes {
		rs = append(rs, "ip route replace "+r.String())
	}
	sort.Strings(rs)
	lines = append(lines, rs...)
	var ns []string
	for ip, mac := range f.neigh {
		ns = append(ns, fmt.Sprintf("ip neigh replace %s lladdr %s dev %s nud permanent", ip, mac, f.vxlan.Name))
	}
	for mac, dst := range f.fdb {
		ns = append(ns, fmt.Sprintf("bridge fdb replace %s dev %s dst %s", mac, f.vxlan.Name, dst))
	}
	sort.Strings(ns)
	lines = append(lines, ns...)
	return strings.Join(lines, "\n") + "\n"
}

// NewFake returns a Reconciler over a fake kernel (for tests and the
// simulated watchers of the convergence benchmark).
func NewFake(ops *FakeOps, cfg Config) (*Reconciler, error) { return newWithOps(ops, cfg) }
