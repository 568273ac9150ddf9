package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
)

// fakeKernel is an in-memory kernel for tests. It models host veths, their
// routes and sysctls, container namespaces and their interfaces, and logs
// every mutating call so tests can assert that a healthy endpoint is not
// touched.
type fakeKernel struct {
	mu     sync.Mutex
	next   int
	hosts  map[string]*fakeHost
	netns  map[string]map[string]*fakeCtr // netns -> ifname -> link
	calls  []string
	failOn map[string]error // method name -> error
	loUp   map[string]bool
	// created, when set, receives the host-side name of every pair
	// createVeth made.
	created chan string
}

type fakeHost struct {
	obs   hostObs
	netns string // where the peer is ("" = host ns)
	peer  string // peer name
	// retired marks a pair retireHostIf took out of service.
	retired bool
}

type fakeCtr struct {
	obs ctrObs
}

var _ kernel = (*fakeKernel)(nil)

func newFakeKernel() *fakeKernel {
	return &fakeKernel{next: 10, hosts: map[string]*fakeHost{}, netns: map[string]map[string]*fakeCtr{},
		failOn: map[string]error{}, loUp: map[string]bool{}}
}

// addNetns creates a container namespace.
func (k *fakeKernel) addNetns(path string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.netns[path] = map[string]*fakeCtr{}
}

// delNetns deletes a namespace; veths with a peer inside vanish with it.
func (k *fakeKernel) delNetns(path string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.netns, path)
	for n, h := range k.hosts {
		if h.netns == path {
			delete(k.hosts, n)
		}
	}
}

func (k *fakeKernel) log(format string, a ...any) {
	k.calls = append(k.calls, fmt.Sprintf(format, a...))
}

func (k *fakeKernel) fail(method string) error {
	if err, ok := k.failOn[method]; ok {
		return err
	}
	return nil
}

// takeCalls returns and clears the call log.
func (k *fakeKernel) takeCalls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.calls
	k.calls = nil
	return c
}

func (k *fakeKernel) observeHost(_ context.Context, name string) (hostObs, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, ok := k.hosts[name]
	if !ok {
		return hostObs{}, nil
	}
	o := h.obs
	o.Routes = slices.Clone(o.Routes)
	return o, nil
}

func (k *fakeKernel) observeContainer(_ context.Context, netns, ifname string) (ctrObs, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	links, ok := k.netns[netns]
	if !ok {
		return ctrObs{}, fmt.Errorf("netns %s: %w", netns, ErrNetnsNotFound)
	}
	c, ok := links[ifname]
	if !ok {
		return ctrObs{LoUp: k.loUp[netns]}, nil
	}
	o := c.obs
	o.LoUp = k.loUp[netns]
	o.Addrs = slices.Clone(o.Addrs)
	return o, nil
}

func (k *fakeKernel) netnsAlive(netns string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.netns[netns]
	return ok
}

func (k *fakeKernel) listHostIfs(context.Context) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for n := range k.hosts {
		if IsHostIfName(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (k *fakeKernel) createVeth(_ context.Context, v vethSpec) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log("createVeth %s %s %s", v.hostName, v.netns, v.ifname)
	if err := k.fail("createVeth"); err != nil {
		return err
	}
	if _, ok := k.hosts[v.hostName]; ok {
		return fmt.Errorf("create %s: file exists", v.hostName)
	}
	hi, ci := k.next, k.next+1
	k.next += 2
	h := &fakeHost{obs: hostObs{Exists: true, IsVeth: true, Index: hi, PeerIndex: ci, MTU: v.mtu, MACOK: true}}
	if v.netns == "" {
		h.peer = v.tempName
		k.hosts[v.hostName] = h
		return nil
	}
	links, ok := k.netns[v.netns]
	if !ok {
		return fmt.Errorf("netns %s: %w", v.netns, ErrNetnsNotFound)
	}
	if _, ok := links[v.ifname]; ok {
		return fmt.Errorf("%w: create %s in %s: file exists", ErrIfnameInUse, v.ifname, v.netns)
	}
	h.netns, h.peer = v.netns, v.ifname
	k.hosts[v.hostName] = h
	links[v.ifname] = &fakeCtr{obs: ctrObs{Exists: true, Index: ci, PeerIndex: hi, MTU: v.mtu}}
	if k.created != nil {
		k.created <- v.hostName
	}
	return nil
}

// takeHostLocked logs method, returns its injected failure, and removes the
// host veth name from the table, returning it (nil when absent).
func (k *fakeKernel) takeHostLocked(method, name string) (*fakeHost, error) {
	k.log("%s %s", method, name)
	if err := k.fail(method); err != nil {
		return nil, err
	}
	h := k.hosts[name]
	delete(k.hosts, name)
	return h, nil
}

func (k *fakeKernel) deleteHostIf(_ context.Context, name string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, err := k.takeHostLocked("deleteHostIf", name)
	if h == nil || err != nil {
		return false, err
	}
	if links, ok := k.netns[h.netns]; ok && h.netns != "" {
		delete(links, h.peer)
	}
	return true, nil
}

func (k *fakeKernel) configureHost(_ context.Context, name string, mtu int, ipv6 bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log("configureHost %s", name)
	if err := k.fail("configureHost"); err != nil {
		return err
	}
	h, ok := k.hosts[name]
	if !ok {
		return fmt.Errorf("configure %s: link not found", name)
	}
	h.obs.MTU, h.obs.Up, h.obs.ProxyARP, h.obs.RPFilter, h.obs.MACOK = mtu, true, true, true, true
	if ipv6 {
		h.obs.LinkLocal = true
	}
	return nil
}

func (k *fakeKernel) replaceHostRoute(_ context.Context, name string, p netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log("replaceHostRoute %s %s", name, p)
	if err := k.fail("replaceHostRoute"); err != nil {
		return err
	}
	h, ok := k.hosts[name]
	if !ok {
		return fmt.Errorf("route %s: link %s not found", p, name)
	}
	for _, o := range k.hosts {
		o.obs.Routes = slices.DeleteFunc(o.obs.Routes, func(q netip.Prefix) bool { return q == p })
	}
	h.obs.Routes = append(h.obs.Routes, p)
	return nil
}

func (k *fakeKernel) deleteHostRoute(_ context.Context, name string, p netip.Prefix) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log("deleteHostRoute %s %s", name, p)
	if h, ok := k.hosts[name]; ok {
		h.obs.Routes = slices.DeleteFunc(h.obs.Routes, func(q netip.Prefix) bool { return q == p })
	}
	return nil
}

func (k *fakeKernel) configureContainer(_ context.Context, netns, ifname string, c ctrConfig) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log("configureContainer %s %s +%v -%v", netns, ifname, c.addrAdd, c.addrDel)
	if err := k.fail("configureContainer"); err != nil {
		return err
	}
	links, ok := k.netns[netns]
	if !ok {
		return fmt.Errorf("netns %s: %w", netns, ErrNetnsNotFound)
	}
	l, ok := links[ifname]
	if !ok {
		return fmt.Errorf("configure %s in %s: link not found", ifname, netns)
	}
	k.loUp[netns] = true
	o := &l.obs
	o.Up, o.MTU = true, c.mtu
	o.Addrs = slices.DeleteFunc(o.Addrs, func(q netip.Prefix) bool { return slices.Contains(c.addrDel, q) })
	o.Addrs = append(o.Addrs, c.addrAdd...)
	if c.v4 {
		o.DefaultV4, o.NeighV4 = true, true
	}
	if c.v6 {
		o.DefaultV6, o.NeighV6 = true, true
	}
	return nil
}

// render prints the fake's host state, one line per fact, sorted, in the
// style of `ip` output, for diffing in tests.
func (k *fakeKernel) render() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var lines []string
	for n, h := range k.hosts {
		lines = append(lines, fmt.Sprintf("link %s up=%v mtu=%d peer=%s/%s", n, h.obs.Up, h.obs.MTU, h.netns, h.peer))
		for _, r := range h.obs.Routes {
			lines = append(lines, fmt.Sprintf("route %s dev %s", r, n))
		}
	}
	for ns, links := range k.netns {
		for n, l := range links {
			lines = append(lines, fmt.Sprintf("%s: link %s up=%v mtu=%d addrs=%v", ns, n, l.obs.Up, l.obs.MTU, l.obs.Addrs))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (k *fakeKernel) retireHostIf(_ context.Context, name, netns string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, err := k.takeHostLocked("retireHostIf", name)
	if h == nil || err != nil {
		return false, err
	}
	h.obs.Up, h.obs.Routes = false, nil
	h.retired = true
	if links, ok := k.netns[h.netns]; ok && h.netns != "" && netns == h.netns {
		if c, ok := links[h.peer]; ok {
			delete(links, h.peer)
			h.peer = retiredIfName(c.obs.Index)
			links[h.peer] = c
		}
	}
	k.hosts[retiredIfName(h.obs.Index)] = h
	return true, nil
}

func (k *fakeKernel) reapRetired(context.Context) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.fail("reapRetired"); err != nil {
		return 0, err
	}
	n := 0
	for name, h := range k.hosts {
		if !h.retired {
			continue
		}
		k.log("reap %s", name)
		delete(k.hosts, name)
		if links, ok := k.netns[h.netns]; ok && h.netns != "" {
			delete(links, h.peer)
		}
		n++
	}
	return n, nil
}
