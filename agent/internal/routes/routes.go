// Package routes programs the routes between hosts: one route per remote
// block via the owner's underlay address, a /32 (/128) per borrowed address,
// an unreachable route per own block, and for hosts on another underlay
// subnet a VXLAN device with its FDB and neighbour entries.
//
// Deciding is split from doing: Desired computes the wanted State from a
// registry.Snapshot, diff compares it with the actual state and yields the
// few netlink calls that close the gap. On a watch event the same happens
// for just the prefixes the changed records map to (ReconcileChanged): the
// reconciler keeps the desired state with an index from records to prefixes
// and a mirror of what it programmed, so one change costs what it touches.
//
// Routes Petrel owns carry the route protocol Protocol, so routes of anyone
// else (including the per-container /32 routes of the dataplane) are never
// touched, and a route that is already right is never removed and re-added.
// They use metric Metric, so a local container route always beats a remote
// claim on the same address.
//
// # VXLAN addressing
//
// The VXLAN device carries no address. A route to a block behind another
// subnet is "<block> via <remote underlay address> dev petrel.vxlan onlink";
// a permanent neighbour entry maps that next hop to the remote VTEP MAC and
// an FDB entry sends that MAC to the remote underlay address. The VTEP MAC is
// derived from the underlay address (0e:70:a:b:c:d), so it survives a device
// re-creation, and the host record's vxlan_address is the underlay address.
package routes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Protocol is the route protocol number marking Petrel's inter-host routes
// (rtnetlink "proto"). The dataplane's per-container routes use another one.
const Protocol = 76

// Metric is the priority of Petrel's inter-host routes. It is above the
// kernel defaults (0 for IPv4, 1024 for IPv6), so that a local container's
// /32 route of the dataplane always wins over a stale remote claim on the
// same address, and the two never replace each other.
const Metric = 2000

// Defaults.
const (
	DefaultVXLANName = "petrel.vxlan"
	DefaultVNI       = 4789
	DefaultPort      = 4789
	// VXLANOverhead is the IPv4 VXLAN encapsulation overhead in bytes.
	VXLANOverhead = 50
)

// Kind is a route's type.
type Kind uint8

// Route kinds.
const (
	Unicast Kind = iota
	Unreachable
)

// Route is one route Petrel owns, in the main table.
type Route struct {
	Dst  netip.Prefix
	Kind Kind
	// Via is the next hop of a unicast route.
	Via netip.Addr
	// Dev is the device; empty lets the kernel resolve Via (direct route).
	Dev    string
	Onlink bool
}

// String renders r like `ip route`.
func (r Route) String() string {
	if r.Kind == Unreachable {
		return "unreachable " + r.Dst.String()
	}
	s := r.Dst.String() + " via " + r.Via.String()
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Onlink {
		s += " onlink"
	}
	return s
}

// matches reports whether actual route a satisfies desired route d. A direct
// route (d.Dev empty) accepts whatever device the kernel chose.
func (d Route) matches(a Route) bool {
	if d.Kind != a.Kind || d.Dst != a.Dst {
		return false
	}
	if d.Kind == Unreachable {
		return true
	}
	return d.Via == a.Via && d.Onlink == a.Onlink && (d.Dev == "" || d.Dev == a.Dev)
}

// VXLAN describes the VXLAN device.
type VXLAN struct {
	Name  string
	VNI   int
	Port  int
	MTU   int
	MAC   string
	Local netip.Addr
	// Parent is the underlay device (empty: any).
	Parent string
}

// State is a host's inter-host forwarding state.
type State struct {
	Routes map[netip.Prefix]Route
	// Neigh maps a next hop on the VXLAN device to the remote VTEP MAC.
	Neigh map[netip.Addr]string
	// FDB maps a remote VTEP MAC to its underlay address.
	FDB map[string]netip.Addr
}

func newState() *State {
	return &State{Routes: map[netip.Prefix]Route{}, Neigh: map[netip.Addr]string{}, FDB: map[string]netip.Addr{}}
}

// Self describes the local host to Desired.
type Self struct {
	Name string
	// Subnet is the underlay subnet (its address is the host's address).
	Subnet netip.Prefix
	// VXLANDev names the VXLAN device; empty disables cross-subnet routes.
	VXLANDev string
}

// Desired computes the state host self wants from snapshot s.
func Desired(self Self, s *registry.Snapshot) *State {
	return buildModel(self, s).state()
}

// Plan is the set of changes that turns actual into desired.
type Plan struct {
	Replace   []Route
	Delete    []Route
	SetFDB    map[string]netip.Addr
	DelFDB    map[string]netip.Addr
	SetNeigh  map[netip.Addr]string
	DelNeigh  []netip.Addr
	NeedVXLAN bool
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.Replace)+len(p.Delete)+len(p.SetFDB)+len(p.DelFDB)+len(p.SetNeigh)+len(p.DelNeigh) == 0
}

// diff compares desired with actual. It is pure.
func diff(desired, actual *State) *Plan {
	p := newPlan()
	for dst, d := range desired.Routes {
		if a, ok := actual.Routes[dst]; !ok || !d.matches(a) {
			p.Replace = append(p.Replace, d)
		}
		if d.Onlink {
			p.NeedVXLAN = true
		}
	}
	for dst, a := range actual.Routes {
		if _, ok := desired.Routes[dst]; !ok {
			p.Delete = append(p.Delete, a)
		}
	}
	diffVXLAN(p, desired, actual)
	p.sort()
	return p
}

// diffPrefixes is diff restricted to the routes to the prefixes in only,
// plus the neighbour and FDB entries when vxlan is set. It is pure.
func diffPrefixes(desired, actual *State, only map[netip.Prefix]struct{}, vxlan bool) *Plan {
	p := newPlan()
	for dst := range only {
		d, want := desired.Routes[dst]
		a, have := actual.Routes[dst]
		switch {
		case want && (!have || !d.matches(a)):
			p.Replace = append(p.Replace, d)
		case !want && have:
			p.Delete = append(p.Delete, a)
		}
		if want && d.Onlink {
			p.NeedVXLAN = true
		}
	}
	if vxlan {
		diffVXLAN(p, desired, actual)
	}
	p.sort()
	return p
}

func newPlan() *Plan {
	return &Plan{SetFDB: map[string]netip.Addr{}, DelFDB: map[string]netip.Addr{}, SetNeigh: map[netip.Addr]string{}}
}

// diffVXLAN adds the neighbour and FDB changes to p.
func diffVXLAN(p *Plan, desired, actual *State) {
	for mac, dst := range desired.FDB {
		if a, ok := actual.FDB[mac]; !ok || a != dst {
			p.SetFDB[mac] = dst
		}
	}
	for mac, dst := range actual.FDB {
		if d, ok := desired.FDB[mac]; !ok || d != dst {
			p.DelFDB[mac] = dst
		}
	}
	for ip, mac := range desired.Neigh {
		if a, ok := actual.Neigh[ip]; !ok || a != mac {
			p.SetNeigh[ip] = mac
		}
	}
	for ip := range actual.Neigh {
		if _, ok := desired.Neigh[ip]; !ok {
			p.DelNeigh = append(p.DelNeigh, ip)
		}
	}
}

func (p *Plan) sort() {
	sortRoutes(p.Replace)
	sortRoutes(p.Delete)
	slices.SortFunc(p.DelNeigh, netip.Addr.Compare)
}

func sortRoutes(rs []Route) {
	slices.SortFunc(rs, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return a.Dst.Bits() - b.Dst.Bits()
	})
}

// netOps is the kernel as the reconciler uses it. The Linux implementation
// wraps netlink calls one to one; fakeOps records state as text.
type netOps interface {
	// ListRoutes lists the main-table routes with protocol Protocol.
	ListRoutes() ([]Route, error)
	ReplaceRoute(r Route) error
	DeleteRoute(r Route) error
	// EnsureVXLAN creates the device or fixes its settings, and sets it up.
	EnsureVXLAN(v VXLAN) error
	ListNeigh(dev string) (map[netip.Addr]string, error)
	SetNeigh(dev string, ip netip.Addr, mac string) error
	DelNeigh(dev string, ip netip.Addr) error
	ListFDB(dev string) (map[string]netip.Addr, error)
	SetFDB(dev, mac string, dst netip.Addr) error
	DelFDB(dev, mac string, dst netip.Addr) error
}

// Config configures a Reconciler.
type Config struct {
	// Host is the local host record (name, address, subnet, mtu, vxlan_mac).
	Host *petrelv1.Host
	// VXLANName, VNI and Port configure the VXLAN device; zero values take
	// the defaults. NoVXLAN disables cross-subnet routing.
	VXLANName string
	VNI       int
	Port      int
	NoVXLAN   bool
	// UnderlayDev is the device holding the host address.
	UnderlayDev string
	// ResyncInterval is how often the kernel is listed again instead of
	// trusting the cached state (default 30s).
	ResyncInterval time.Duration
}

// Reconciler programs routes; it implements cluster.Reconciler and
// cluster.IncrementalReconciler.
//
// It keeps the desired state with its index (model) and a mirror of what it
// programmed (actual). Reconcile recomputes everything from the snapshot and
// diffs it against the mirror, or against a fresh listing of the kernel at
// start-up, after an error and once per resync interval. ReconcileChanged
// recomputes only the prefixes the changed records map to and diffs those
// against the mirror: its cost follows the change, not the cluster. Drift
// made by someone else between two listings is repaired at the next one.
type Reconciler struct {
	ops    netOps
	self   Self
	vxlan  VXLAN
	resync time.Duration
	now    func() time.Time

	mu       sync.Mutex
	inputs   [3]int64 // hosts, blocks, allocations revisions last applied
	model    *model   // nil: build from the snapshot next time
	actual   *State   // nil: list the kernel next time
	listed   time.Time
	vxlanUp  bool
	lastPlan *Plan
}

// VTEPMAC derives the VXLAN MAC of a host from its IPv4 underlay address.
func VTEPMAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("0e:70:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

func newWithOps(ops netOps, cfg Config) (*Reconciler, error) {
	h := cfg.Host
	if h == nil || h.GetName() == "" {
		return nil, errors.New("routes: host name required")
	}
	subnet, err := netip.ParsePrefix(h.GetSubnet())
	if err != nil {
		return nil, fmt.Errorf("routes: host %s subnet %q: %w", h.GetName(), h.GetSubnet(), err)
	}
	addr, err := netip.ParseAddr(h.GetAddress())
	if err != nil || !addr.Is4() {
		return nil, fmt.Errorf("routes: host %s address %q is not IPv4", h.GetName(), h.GetAddress())
	}
	r := &Reconciler{ops: ops, resync: cfg.ResyncInterval, now: time.Now}
	if r.resync <= 0 {
		r.resync = 30 * time.Second
	}
	r.self = Self{Name: h.GetName(), Subnet: subnet.Masked()}
	if !cfg.NoVXLAN {
		v := VXLAN{Name: cfg.VXLANName, VNI: cfg.VNI, Port: cfg.Port, MTU: int(h.GetMtu()) - VXLANOverhead,
			MAC: h.GetVxlanMac(), Local: addr, Parent: cfg.UnderlayDev}
		if v.Name == "" {
			v.Name = DefaultVXLANName
		}
		if v.VNI == 0 {
			v.VNI = DefaultVNI
		}
		if v.Port == 0 {
			v.Port = DefaultPort
		}
		if v.MAC == "" {
			v.MAC = VTEPMAC(addr)
		}
		if h.GetMtu() == 0 {
			v.MTU = 1500 - VXLANOverhead
		}
		r.vxlan = v
		r.self.VXLANDev = v.Name
	}
	return r, nil
}

// Reconcile brings the kernel in line with the snapshot: it rebuilds the
// desired state from every record and diffs it against the programmed state,
// which it lists from the kernel first at start-up, after an error or when
// the last listing is older than the resync interval. Routes that are
// already right are left alone. It applies every change it can and joins the
// errors.
func (r *Reconciler) Reconcile(_ context.Context, s *registry.Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reconcileLocked(s)
}

// ReconcileChanged is Reconcile for a snapshot that differs from the one of
// the previous call only in the records under the registry keys in changed
// (puts and deletes; keys of other kinds are ignored). It recomputes and
// diffs just the prefixes those records map to, trusting the programmed
// state for the rest. When there is no previous state (first call, after an
// error) or a listing is due, it does what Reconcile does.
func (r *Reconciler) ReconcileChanged(_ context.Context, s *registry.Snapshot, changed []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.model == nil || r.listDue() {
		return r.reconcileLocked(s)
	}
	inputs := [3]int64{s.HostsRevision, s.BlocksRevision, s.AllocationsRevision}
	touched, vx := r.model.update(s, changed)
	var errs []error
	if r.self.VXLANDev != "" && !r.vxlanUp {
		errs = append(errs, r.ensureVXLANLocked())
	}
	p := diffPrefixes(r.model.state(), r.actual, touched, vx)
	return r.applyLocked(p, inputs, errs)
}

// listDue reports whether the programmed state must be read from the
// kernel: there is none, or the last listing is a resync interval old.
func (r *Reconciler) listDue() bool {
	// 9/10: the cluster's resync ticker runs at the same interval, and a
	// tick a hair early must not push the kernel check to the next one.
	return r.actual == nil || r.now().Sub(r.listed) >= r.resync*9/10
}

func (r *Reconciler) reconcileLocked(s *registry.Snapshot) error {
	resync := r.listDue()
	inputs := [3]int64{s.HostsRevision, s.BlocksRevision, s.AllocationsRevision}
	if !resync && r.model != nil && inputs != [3]int64{} && inputs == r.inputs {
		// Only endpoints changed: routes do not depend on them.
		r.lastPlan = &Plan{}
		return nil
	}
	r.model = buildModel(r.self, s)
	var errs []error
	if resync {
		if err := r.listLocked(); err != nil {
			return err
		}
	}
	if r.self.VXLANDev != "" && (!r.vxlanUp || resync) {
		errs = append(errs, r.ensureVXLANLocked())
	}
	return r.applyLocked(diff(r.model.state(), r.actual), inputs, errs)
}

func (r *Reconciler) ensureVXLANLocked() error {
	if err := r.ops.EnsureVXLAN(r.vxlan); err != nil {
		r.vxlanUp = false
		return fmt.Errorf("routes: vxlan device %s: %w", r.vxlan.Name, err)
	}
	r.vxlanUp = true
	return nil
}

// applyLocked carries out plan p, keeps the mirror in step with every call
// that succeeded, and on any error (including those in errs) forgets the
// mirror so that the next call lists the kernel again.
func (r *Reconciler) applyLocked(p *Plan, inputs [3]int64, errs []error) error {
	r.lastPlan = p
	a := r.actual
	dev := r.vxlan.Name
	// Underlay reachability first (FDB, neighbours), then routes; adds
	// before deletes so a changing next hop never leaves a gap.
	for mac, dst := range p.SetFDB {
		if old, ok := a.FDB[mac]; ok && old != dst {
			if err := r.ops.DelFDB(dev, mac, old); err != nil {
				errs = append(errs, fmt.Errorf("routes: delete fdb %s dst %s: %w", mac, old, err))
				continue
			}
		}
		if err := r.ops.SetFDB(dev, mac, dst); err != nil {
			errs = append(errs, fmt.Errorf("routes: fdb %s dst %s: %w", mac, dst, err))
			continue
		}
		a.FDB[mac] = dst
	}
	for ip, mac := range p.SetNeigh {
		if err := r.ops.SetNeigh(dev, ip, mac); err != nil {
			errs = append(errs, fmt.Errorf("routes: neighbour %s lladdr %s: %w", ip, mac, err))
			continue
		}
		a.Neigh[ip] = mac
	}
	for _, rt := range p.Replace {
		if err := r.ops.ReplaceRoute(rt); err != nil {
			errs = append(errs, fmt.Errorf("routes: replace %s: %w", rt, err))
			continue
		}
		a.Routes[rt.Dst] = rt
	}
	for _, rt := range p.Delete {
		if err := r.ops.DeleteRoute(rt); err != nil {
			errs = append(errs, fmt.Errorf("routes: delete %s: %w", rt, err))
			continue
		}
		delete(a.Routes, rt.Dst)
	}
	for _, ip := range p.DelNeigh {
		if err := r.ops.DelNeigh(dev, ip); err != nil {
			errs = append(errs, fmt.Errorf("routes: delete neighbour %s: %w", ip, err))
			continue
		}
		delete(a.Neigh, ip)
	}
	for mac, dst := range p.DelFDB {
		if _, reset := p.SetFDB[mac]; reset {
			continue
		}
		if err := r.ops.DelFDB(dev, mac, dst); err != nil {
			errs = append(errs, fmt.Errorf("routes: delete fdb %s dst %s: %w", mac, dst, err))
			continue
		}
		delete(a.FDB, mac)
	}
	if err := errors.Join(errs...); err != nil {
		r.actual = nil // trust the kernel, not the mirror, next time
		r.model = nil
		r.inputs = [3]int64{}
		return err
	}
	r.inputs = inputs
	return nil
}

// listLocked reads the actual state from the kernel.
func (r *Reconciler) listLocked() error {
	st := newState()
	rs, err := r.ops.ListRoutes()
	if err != nil {
		return fmt.Errorf("routes: list routes: %w", err)
	}
	for _, rt := range rs {
		st.Routes[rt.Dst] = rt
	}
	if r.self.VXLANDev != "" {
		if n, err := r.ops.ListNeigh(r.vxlan.Name); err == nil {
			st.Neigh = n
		}
		if f, err := r.ops.ListFDB(r.vxlan.Name); err == nil {
			st.FDB = f
		}
	}
	r.actual = st
	r.listed = r.now()
	return nil
}

// LastPlan returns the changes the last Reconcile made (for tests and
// benchmarks).
func (r *Reconciler) LastPlan() *Plan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastPlan
}
