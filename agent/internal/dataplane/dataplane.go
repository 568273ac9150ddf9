package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Releaser frees the addresses held by a handle. The IPAM implements it;
// Reconcile calls it for endpoints whose container is gone.
type Releaser interface {
	ReleaseHandle(ctx context.Context, handle string) error
}

// Spec describes one container interface to attach.
type Spec struct {
	ContainerID string
	// Netns is the path of the container's network namespace. When empty,
	// PID names a process whose /proc/<pid>/ns/net is used. Neither is
	// needed with HostSideOnly.
	Netns string
	PID   int
	// IfName is the container interface name (default eth0).
	IfName string
	// IPs are the container's addresses, IPv4 and/or IPv6.
	IPs              []netip.Addr
	Handle           string
	Source           petrelv1.Source
	Netgroups        []string
	Labels           map[string]string
	NetworkName      string
	PortMappings     []*petrelv1.PortMapping
	ContainerName    string
	MesosContainerID string
	Hostname         string
	DockerNetworkID  string
	DockerEndpointID string
	// HostSideOnly creates the pair in the host namespace and leaves the
	// container side there under Result.TempIfName, for runtimes (Docker)
	// that move and rename it themselves.
	HostSideOnly bool
	// Allocate, when set, supplies the container's addresses (added to
	// IPs, which may then be empty). Attach calls it once while it creates
	// the veth pair, which does not depend on the addresses, and returns
	// its error unchanged. When Attach fails after Allocate succeeded, the
	// caller still owns (and releases) what Allocate took.
	Allocate func(ctx context.Context) ([]netip.Addr, error)
}

// Result is what Attach built.
type Result struct {
	Endpoint *petrelv1.Endpoint
	MTU      int
	// GatewayV4 and GatewayV6 are the default gateways, valid when the
	// container has an address of that family.
	GatewayV4, GatewayV6 netip.Addr
	// TempIfName is the container side's name in the host namespace
	// (HostSideOnly).
	TempIfName string
	// Changed reports whether the kernel or the registry was modified.
	Changed bool
}

// ReconcileReport counts what Reconcile found and did.
type ReconcileReport struct {
	// Healthy endpoints were left untouched.
	Healthy int
	// Repaired endpoints had partial kernel state that was fixed.
	Repaired int
	// Removed endpoints had a gone netns: host side, routes and record were
	// removed.
	Removed int
	// Released handles were given back to the IPAM.
	Released int
	// OrphansDeleted host veths had no record.
	OrphansDeleted int
}

// Option configures a Dataplane.
type Option func(*config)

type config struct {
	mtu      int
	overhead int
	underlay string
	releaser Releaser
	now      func() time.Time
	onReap   func(deleted int, err error)
}

// WithReapHook sets a function called after every deletion of retired veths
// (see RetireGroup) with how many it deleted and its error, for the
// binary's metrics and log.
func WithReapHook(f func(deleted int, err error)) Option {
	return func(c *config) { c.onReap = f }
}

// WithMTU fixes the veth MTU, overriding detection (0 = detect).
func WithMTU(mtu int) Option { return func(c *config) { c.mtu = mtu } }

// WithOverhead sets the encapsulation overhead subtracted from the underlay
// MTU (VXLAN: 50).
func WithOverhead(n int) Option { return func(c *config) { c.overhead = n } }

// WithUnderlayInterface names the interface whose MTU is the underlay MTU
// (default: the first up interface with a global address).
func WithUnderlayInterface(name string) Option { return func(c *config) { c.underlay = name } }

// WithReleaser sets who frees the addresses of endpoints Reconcile removes.
func WithReleaser(r Releaser) Option { return func(c *config) { c.releaser = r } }

// WithClock sets the clock used for the created timestamp.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// Dataplane attaches containers to the host's routed network. It is safe for
// concurrent use; operations on one container interface are serialised.
type Dataplane struct {
	host        string
	k           kernel
	store       Store
	cfg         config
	underlayMTU int
	overhead    atomic.Int64

	// gate: attach/detach hold it shared, Reconcile exclusively, so
	// Reconcile never sees an attach between veth and record.
	gate  sync.RWMutex
	locks keyedMutex
	close func() error

	// reapMu guards the batched deletion of retired veths (see
	// retireHostIf): reapTimer is set while a reap is scheduled, and a
	// reap runs holding reapMu.
	reapMu     sync.Mutex
	reapTimer  *time.Timer
	reapClosed bool
}

// reapDelay is how long retired veths wait to be deleted together: one
// kernel batch then pays the deletion's grace period for all of them.
const reapDelay = 100 * time.Millisecond

// reapTimeout bounds one batch deletion.
const reapTimeout = 30 * time.Second

// scheduleReap arranges for the retired veths to be deleted within
// reapDelay (or later after a failed reap).
func (d *Dataplane) scheduleReap(delay time.Duration) {
	d.reapMu.Lock()
	defer d.reapMu.Unlock()
	if d.reapTimer == nil && !d.reapClosed {
		d.reapTimer = time.AfterFunc(delay, d.reapScheduled)
	}
}

func (d *Dataplane) reapScheduled() {
	d.reapMu.Lock()
	d.reapTimer = nil
	if d.reapClosed {
		d.reapMu.Unlock()
		return
	}
	_, err := d.reapLocked(context.Background())
	d.reapMu.Unlock()
	if err != nil {
		d.scheduleReap(10 * reapDelay)
	}
}

// reapNow deletes the retired veths at once and reports how many.
func (d *Dataplane) reapNow(ctx context.Context) (int, error) {
	d.reapMu.Lock()
	defer d.reapMu.Unlock()
	return d.reapLocked(ctx)
}

// reapLocked deletes the retired veths, within reapTimeout, and tells the
// hook. The caller holds reapMu.
func (d *Dataplane) reapLocked(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, reapTimeout)
	defer cancel()
	n, err := d.k.reapRetired(ctx)
	if err != nil {
		err = fmt.Errorf("delete retired veths: %w", err)
	}
	if d.cfg.onReap != nil && (n > 0 || err != nil) {
		d.cfg.onReap(n, err)
	}
	return n, err
}

func newWithDeps(host string, k kernel, store Store, underlayMTU int, opts ...Option) *Dataplane {
	cfg := config{now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if underlayMTU <= 0 {
		underlayMTU = DefaultMTU
	}
	d := &Dataplane{host: host, k: k, store: store, cfg: cfg, underlayMTU: underlayMTU, close: func() error { return nil }}
	d.overhead.Store(int64(cfg.overhead))
	return d
}

// Close deletes the retired veths and releases the dataplane's netlink
// handles.
func (d *Dataplane) Close() error {
	d.reapMu.Lock()
	d.reapClosed = true
	if d.reapTimer != nil {
		d.reapTimer.Stop()
		d.reapTimer = nil
	}
	_, err := d.reapLocked(context.Background())
	d.reapMu.Unlock()
	return errors.Join(err, d.close())
}

// Host is the host name the dataplane writes records under.
func (d *Dataplane) Host() string { return d.host }

// SetOverhead changes the encapsulation overhead for later attaches (the
// multi-host reconciler sets 50 once VXLAN is in use).
func (d *Dataplane) SetOverhead(n int) { d.overhead.Store(int64(n)) }

// MTU is the MTU new veths get: the override, else the underlay MTU minus
// the overhead.
func (d *Dataplane) MTU() int {
	if d.cfg.mtu > 0 {
		return d.cfg.mtu
	}
	return d.underlayMTU - int(d.overhead.Load())
}

// UnderlayMTU is the detected MTU of the underlay interface.
func (d *Dataplane) UnderlayMTU() int { return d.underlayMTU }

func validID(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "empty")
	case len(v) > 253:
		return invalid(field, "longer than 253 characters")
	case strings.ContainsAny(v, "/\x00 \t\n"):
		return invalid(field, "%q contains '/', NUL or whitespace", v)
	}
	return nil
}

func validIfName(v string) error {
	switch {
	case len(v) > 15:
		return invalid("ifname", "%q longer than 15 characters", v)
	case v == "." || v == "..":
		return invalid("ifname", "%q is not an interface name", v)
	case strings.ContainsAny(v, "/:\x00 \t\n"):
		return invalid("ifname", "%q contains '/', ':', NUL or whitespace", v)
	}
	return nil
}

// normalize validates s and fills defaults. It returns the netns path.
func (s *Spec) normalize() error {
	if err := s.normalizeTarget(); err != nil {
		return err
	}
	return s.normalizeIPs()
}

// normalizeTarget checks and completes everything but the addresses.
func (s *Spec) normalizeTarget() error {
	if err := validID("container_id", s.ContainerID); err != nil {
		return err
	}
	if s.IfName == "" {
		s.IfName = DefaultIfName
	}
	if err := validIfName(s.IfName); err != nil {
		return err
	}
	switch {
	case s.HostSideOnly:
		s.Netns = ""
	case s.Netns != "" && s.PID != 0:
		return invalid("netns", "give a netns path or a pid, not both")
	case s.Netns == "" && s.PID < 0:
		return invalid("pid", "%d is negative", s.PID)
	case s.Netns == "" && s.PID == 0:
		return invalid("netns", "need a netns path or a pid")
	case s.Netns == "":
		s.Netns = "/proc/" + strconv.Itoa(s.PID) + "/ns/net"
	case !strings.HasPrefix(s.Netns, "/"):
		return invalid("netns", "%q is not an absolute path", s.Netns)
	}
	return nil
}

// normalizeIPs checks the addresses and unmaps IPv4-mapped ones.
func (s *Spec) normalizeIPs() error {
	if len(s.IPs) == 0 {
		return invalid("ips", "need at least one address")
	}
	seen := map[netip.Addr]bool{}
	for i, a := range s.IPs {
		a = a.Unmap()
		s.IPs[i] = a
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
			a.IsLinkLocalUnicast() || (a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
			return invalid("ips", "%s is not a usable unicast address", a)
		}
		if seen[a] {
			return invalid("ips", "%s given twice", a)
		}
		seen[a] = true
	}
	return nil
}

func (d *Dataplane) want(s *Spec) attachWant {
	w := attachWant{
		hostName:     HostIfName(s.ContainerID, s.IfName),
		netns:        s.Netns,
		ifname:       s.IfName,
		hostSideOnly: s.HostSideOnly,
		peerMAC:      ContainerMAC(s.ContainerID, s.IfName),
		mtu:          d.MTU(),
	}
	if s.HostSideOnly {
		w.tempName = TempIfName(s.ContainerID, s.IfName)
	}
	for _, a := range s.IPs {
		w.prefixes = append(w.prefixes, hostPrefix(a))
	}
	return w
}

// Attach wires one container interface and writes its endpoint record. It is
// idempotent: a correct endpoint is left unchanged; a half-made one is
// repaired or rebuilt. On failure nothing this call created is left behind.
func (d *Dataplane) Attach(ctx context.Context, s Spec) (Result, error) {
	s.IPs = append([]netip.Addr(nil), s.IPs...)
	check := s.normalize
	if s.Allocate != nil {
		check = s.normalizeTarget
	}
	if err := check(); err != nil {
		return Result{}, err
	}
	w := d.want(&s)
	d.gate.RLock()
	defer d.gate.RUnlock()
	unlock := d.locks.lock(w.hostName)
	defer unlock()

	prepared := false
	if s.Allocate != nil {
		var err error
		if prepared, err = d.allocate(ctx, &s, w); err != nil {
			return Result{}, err
		}
		w = d.want(&s)
	}
	return d.attachLocked(ctx, s, w, prepared)
}

// allocate calls s.Allocate while it creates the veth pair of a fresh
// endpoint, and adds the addresses to s.IPs. It reports whether it created
// the pair; on error it has removed it again. A pair it could not create is
// left to the attach proper, which repairs or reports.
func (d *Dataplane) allocate(ctx context.Context, s *Spec, w attachWant) (bool, error) {
	created := make(chan bool, 1)
	go func() { created <- d.createFresh(ctx, w) }()
	ips, err := s.Allocate(ctx)
	made := <-created
	if err == nil {
		for _, a := range ips {
			if !slices.Contains(s.IPs, a) {
				s.IPs = append(s.IPs, a)
			}
		}
		err = s.normalizeIPs()
	}
	if err != nil {
		if made {
			_, _ = d.k.deleteHostIf(context.WithoutCancel(ctx), w.hostName)
		}
		return false, err
	}
	return made, nil
}

// createFresh creates the veth pair when its host side does not exist,
// and reports whether it did.
func (d *Dataplane) createFresh(ctx context.Context, w attachWant) bool {
	if h, err := d.k.observeHost(ctx, w.hostName); err != nil || h.Exists {
		return false
	}
	return d.createVeth(ctx, w) == nil
}

// attachLocked is Attach under the endpoint's lock. prepared means the veth
// pair was created for w a moment ago and holds nothing else yet.
func (d *Dataplane) attachLocked(ctx context.Context, s Spec, w attachWant, prepared bool) (Result, error) {
	// The kernel work does not depend on the stored record, so the record
	// is written while the kernel work runs: an etcd round trip off every
	// attach. A fresh endpoint's record is created in that one round trip;
	// if the kernel work then fails, it is deleted again. An existing
	// record comes back instead, and is updated after the kernel work if
	// the attach changed it.
	fresh := d.endpoint(&s, w, nil)
	got := make(chan storedRecord, 1)
	go func() {
		// Not cancelled with the caller (a killed shim): a write whose
		// outcome is unknown could not be undone.
		sctx, cancel := detachedContext(ctx)
		defer cancel()
		rev, cur, curRev, err := d.store.Create(sctx, fresh)
		got <- storedRecord{cur, curRev, rev, err}
	}()
	success := false
	var changed, created bool
	var err error
	if prepared {
		// What planAttach makes of nothing, less the pair already there.
		p, _ := planAttach(w, hostObs{}, ctrObs{})
		p.create = false
		changed, created = true, true
		_, err = d.apply(ctx, w, p)
	} else {
		changed, created, err = d.ensure(ctx, w)
	}
	rec := <-got
	defer func() {
		if success {
			return
		}
		if created {
			_, _ = d.k.deleteHostIf(context.WithoutCancel(ctx), w.hostName)
		}
		if rec.created > 0 {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			_, _ = d.store.Delete(uctx, d.host, s.ContainerID, s.IfName, rec.created)
			cancel()
		}
	}()
	if err != nil {
		return Result{}, fmt.Errorf("attach %s/%s: %w", s.ContainerID, s.IfName, err)
	}
	if rec.err != nil {
		return Result{}, rec.err
	}
	ep := fresh
	if rec.created > 0 {
		changed = true
	} else {
		ep = d.endpoint(&s, w, rec.ep)
		if !sameRecord(rec.ep, ep) {
			if _, err := d.store.Put(ctx, ep, rec.rev); err != nil {
				return Result{}, fmt.Errorf("attach %s/%s: %w", s.ContainerID, s.IfName, err)
			}
			changed = true
		}
	}
	success = true
	res := Result{Endpoint: ep, MTU: w.mtu, Changed: changed, TempIfName: w.tempName}
	v4, v6 := w.families()
	if v4 {
		res.GatewayV4 = GatewayV4
	}
	if v6 {
		res.GatewayV6 = GatewayV6
	}
	return res, nil
}

// detachedContext returns a context that keeps ctx's values and deadline
// (or storeTimeout) but not its cancellation.
func detachedContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(storeTimeout)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), dl)
}

// storeTimeout bounds a registry write that is not cancelled with its
// caller.
const storeTimeout = 30 * time.Second

// storedRecord is the answer of one Store.Create: the revision of the
// record it created, or the record already there and its revision.
type storedRecord struct {
	ep      *petrelv1.Endpoint
	rev     int64
	created int64
	err     error
}

// ensure brings the kernel in line with w. It reports whether it changed
// anything and whether it created the veth pair (which the caller removes if
// a later step fails).
func (d *Dataplane) ensure(ctx context.Context, w attachWant) (changed, created bool, err error) {
	return d.ensureMode(ctx, w, true)
}

// errNoRebuild means a repair would have to rebuild the veth pair, which
// Reconcile refuses for /proc/<pid>/ns/net paths (see Reconcile).
var errNoRebuild = errors.New("dataplane: container side gone, not rebuilding")

func (d *Dataplane) ensureMode(ctx context.Context, w attachWant, allowCreate bool) (changed, created bool, err error) {
	h, err := d.k.observeHost(ctx, w.hostName)
	if err != nil {
		return false, false, err
	}
	var c ctrObs
	// Without a host side there is nothing of ours in the container: skip
	// looking (the hot path of a fresh attach). A foreign interface of the
	// same name makes createVeth fail with ErrIfnameInUse.
	if !w.hostSideOnly && h.Exists {
		if c, err = d.k.observeContainer(ctx, w.netns, w.ifname); err != nil {
			return false, false, err
		}
	}
	p, err := planAttach(w, h, c)
	if err != nil {
		return false, false, err
	}
	if p.empty() {
		return false, false, nil
	}
	if p.create && !allowCreate {
		return false, false, errNoRebuild
	}
	created, err = d.apply(ctx, w, p)
	return true, created, err
}

func (d *Dataplane) apply(ctx context.Context, w attachWant, p attachPlan) (created bool, err error) {
	if p.deleteHost {
		if _, err := d.k.deleteHostIf(ctx, w.hostName); err != nil {
			return false, err
		}
	}
	if p.create {
		if err := d.createVeth(ctx, w); err != nil {
			return false, err
		}
		created = true
	}
	_, v6 := w.families()
	if p.configureHost {
		if err := d.k.configureHost(ctx, w.hostName, w.mtu, v6); err != nil {
			return created, err
		}
	}
	for _, r := range p.routesDel {
		if err := d.k.deleteHostRoute(ctx, w.hostName, r); err != nil {
			return created, err
		}
	}
	for _, r := range p.routesAdd {
		if err := d.k.replaceHostRoute(ctx, w.hostName, r); err != nil {
			return created, err
		}
	}
	if p.configureCtr {
		if err := d.k.configureContainer(ctx, w.netns, w.ifname, p.ctr); err != nil {
			return created, err
		}
	}
	return created, nil
}

// createVeth creates w's veth pair.
func (d *Dataplane) createVeth(ctx context.Context, w attachWant) error {
	v := vethSpec{hostName: w.hostName, mtu: w.mtu, netns: w.netns, ifname: w.ifname, tempName: w.tempName, peerMAC: w.peerMAC}
	if w.hostSideOnly {
		v.netns = ""
	}
	err := d.k.createVeth(ctx, v)
	if errors.Is(err, ErrIfnameInUse) {
		// The name may still belong to a retired pair whose peer could
		// not be renamed: delete the retired ones now and try again.
		if n, rerr := d.reapNow(ctx); rerr == nil && n > 0 {
			err = d.k.createVeth(ctx, v)
		}
	}
	return err
}

func (d *Dataplane) endpoint(s *Spec, w attachWant, old *petrelv1.Endpoint) *petrelv1.Endpoint {
	ep := &petrelv1.Endpoint{
		ContainerId:      s.ContainerID,
		Host:             d.host,
		Netns:            s.Netns,
		Ifname:           s.IfName,
		HostIfname:       w.hostName,
		Source:           s.Source,
		Netgroups:        s.Netgroups,
		Labels:           s.Labels,
		NetworkName:      s.NetworkName,
		PortMappings:     s.PortMappings,
		Handle:           s.Handle,
		ContainerName:    s.ContainerName,
		MesosContainerId: s.MesosContainerID,
		Mac:              w.peerMAC.String(),
		Hostname:         s.Hostname,
		DockerNetworkId:  s.DockerNetworkID,
		DockerEndpointId: s.DockerEndpointID,
	}
	for _, a := range s.IPs {
		ep.Ips = append(ep.Ips, a.String())
	}
	if old != nil && old.GetCreated() != nil {
		ep.Created = old.GetCreated()
	} else {
		ep.Created = timestamppb.New(d.cfg.now())
	}
	return ep
}

// sameRecord reports whether two records are equal apart from the created
// timestamp.
func sameRecord(a, b *petrelv1.Endpoint) bool {
	a2, b2 := proto.Clone(a).(*petrelv1.Endpoint), proto.Clone(b).(*petrelv1.Endpoint)
	a2.Created, b2.Created = nil, nil
	return proto.Equal(a2, b2)
}

// Detach removes a container's host veth (and with it the pair and its
// routes) and endpoint record. ifname "" means every interface of the
// container on this host. It works when the netns is gone and reports
// whether anything was removed.
func (d *Dataplane) Detach(ctx context.Context, containerID, ifname, netns string) (bool, error) {
	if err := validID("container_id", containerID); err != nil {
		return false, err
	}
	if err := validIfName(ifname); err != nil {
		return false, err
	}
	d.gate.RLock()
	defer d.gate.RUnlock()
	ifnames := map[string]bool{}
	if ifname != "" {
		// One named interface (every CNI DEL): no need to list the
		// container's records first.
		ifnames[ifname] = true
	} else {
		recs, err := d.store.List(ctx, d.host, containerID)
		if err != nil {
			return false, err
		}
		ifnames[DefaultIfName] = true
		for _, r := range recs {
			ifnames[r.Endpoint.GetIfname()] = true
		}
	}
	removed := false
	var errs []error
	for n := range ifnames {
		r, err := d.detachOne(ctx, containerID, n, netns)
		removed = removed || r
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// detachOne retires the host veth (deleted in the next batch, see
// reapDelay) and removes the record. netns, when known, is where the peer is
// renamed so that its interface name is free at once.
func (d *Dataplane) detachOne(ctx context.Context, containerID, ifname, netns string) (bool, error) {
	name := HostIfName(containerID, ifname)
	unlock := d.locks.lock(name)
	defer unlock()
	linkGone, err := d.k.retireHostIf(ctx, name, netns)
	if err != nil {
		return false, fmt.Errorf("detach %s/%s: %w", containerID, ifname, err)
	}
	if linkGone {
		d.scheduleReap(reapDelay)
	}
	recGone, err := d.store.Delete(ctx, d.host, containerID, ifname, 0)
	if err != nil {
		return linkGone, fmt.Errorf("detach %s/%s: %w", containerID, ifname, err)
	}
	return linkGone || recGone, nil
}

// Check reports how a container's network differs from what Attach builds.
// ips "" uses the record's addresses. An empty result means all is well.
func (d *Dataplane) Check(ctx context.Context, containerID, ifname, netns string, ips []netip.Addr) ([]string, error) {
	if err := validID("container_id", containerID); err != nil {
		return nil, err
	}
	if ifname == "" {
		ifname = DefaultIfName
	}
	if err := validIfName(ifname); err != nil {
		return nil, err
	}
	d.gate.RLock()
	defer d.gate.RUnlock()
	name := HostIfName(containerID, ifname)
	unlock := d.locks.lock(name)
	defer unlock()
	rec, _, err := d.store.Get(ctx, d.host, containerID, ifname)
	if err != nil {
		return nil, err
	}
	var out []string
	hostSideOnly := false
	if rec == nil {
		out = append(out, fmt.Sprintf("endpoint record %s/%s missing", containerID, ifname))
	} else {
		if netns == "" {
			netns = rec.GetNetns()
		}
		hostSideOnly = rec.GetNetns() == ""
		if len(ips) == 0 {
			if ips, err = parseIPs(rec.GetIps()); err != nil {
				return nil, err
			}
		}
	}
	if len(ips) == 0 {
		return nil, invalid("ips", "no addresses given and no record to take them from")
	}
	if netns == "" && !hostSideOnly {
		return nil, invalid("netns", "no netns given and no record to take it from")
	}
	s := Spec{ContainerID: containerID, IfName: ifname, Netns: netns, IPs: ips, HostSideOnly: hostSideOnly}
	if err := s.normalize(); err != nil {
		return nil, err
	}
	w := d.want(&s)
	if rec != nil {
		if got, want := strings.Join(rec.GetIps(), ","), ipsString(s.IPs); got != want {
			out = append(out, fmt.Sprintf("endpoint record addresses %s, want %s", got, want))
		}
	}
	h, err := d.k.observeHost(ctx, w.hostName)
	if err != nil {
		return nil, err
	}
	var c ctrObs
	if !w.hostSideOnly {
		c, err = d.k.observeContainer(ctx, w.netns, w.ifname)
		if errors.Is(err, ErrNetnsNotFound) {
			return append(out, fmt.Sprintf("netns %s gone", w.netns)), nil
		}
		if err != nil {
			return nil, err
		}
	}
	return append(out, problems(w, h, c)...), nil
}

func ipsString(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, a := range ips {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func parseIPs(ss []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, invalid("ips", "%q: %v", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// Reconcile brings the host in line with the registry at start-up: it
// removes endpoints whose netns is gone (host veth, routes, record) and
// releases their handles, deletes host veths no record names, and repairs
// endpoints whose kernel state is partial. Healthy endpoints are not
// touched. It keeps going after a failure and returns what it reached.
func (d *Dataplane) Reconcile(ctx context.Context) (ReconcileReport, error) {
	d.gate.Lock()
	defer d.gate.Unlock()
	var rep ReconcileReport
	// Veths retired before a crash or restart.
	if _, err := d.reapNow(ctx); err != nil {
		return rep, err
	}
	recs, err := d.store.List(ctx, d.host, "")
	if err != nil {
		return rep, err
	}
	ifs, err := d.k.listHostIfs(ctx)
	if err != nil {
		return rep, err
	}
	alive := map[string]bool{}
	for _, r := range recs {
		if n := r.Endpoint.GetNetns(); n != "" {
			if _, ok := alive[n]; !ok {
				alive[n] = d.k.netnsAlive(n)
			}
		}
	}
	p := planReconcile(recs, ifs, alive)
	var errs []error
	for _, r := range p.remove {
		if err := d.removeStale(ctx, r, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range p.deleteIfs {
		if _, err := d.k.deleteHostIf(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("delete orphan %s: %w", n, err))
			continue
		}
		rep.OrphansDeleted++
	}
	for _, r := range p.repair {
		ep := r.Endpoint
		ips, err := parseIPs(ep.GetIps())
		if err != nil {
			errs = append(errs, fmt.Errorf("repair endpoint %s/%s: %w", ep.GetContainerId(), ep.GetIfname(), err))
			continue
		}
		s := Spec{ContainerID: ep.GetContainerId(), IfName: ep.GetIfname(), Netns: ep.GetNetns(), IPs: ips, HostSideOnly: ep.GetNetns() == ""}
		if err := s.normalize(); err != nil {
			errs = append(errs, fmt.Errorf("repair endpoint %s/%s: %w", ep.GetContainerId(), ep.GetIfname(), err))
			continue
		}
		w := d.want(&s)
		w.hostName = recordHostIf(ep)
		if w.hostSideOnly {
			// The runtime moved the peer away: only the host side is ours.
			w.tempName = ""
		}
		// A /proc/<pid>/ns/net path names whatever process now has that
		// pid: if our pair is gone from it, the container is gone and the
		// pid may be reused, so the endpoint is removed, never rebuilt.
		// Bind-mounted paths (CNI, /run/netns) are stable and rebuilt.
		allowCreate := !strings.HasPrefix(s.Netns, "/proc/")
		changed, _, err := d.ensureMode(ctx, w, allowCreate)
		if errors.Is(err, errNoRebuild) {
			if rerr := d.removeStale(ctx, r, &rep); rerr != nil {
				errs = append(errs, rerr)
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("repair endpoint %s/%s: %w", ep.GetContainerId(), ep.GetIfname(), err))
			continue
		}
		if changed {
			rep.Repaired++
		} else {
			rep.Healthy++
		}
	}
	return rep, errors.Join(errs...)
}

// removeStale removes an endpoint whose container is gone: host veth (and
// routes), record, then the handle's addresses.
func (d *Dataplane) removeStale(ctx context.Context, r StoredEndpoint, rep *ReconcileReport) error {
	ep := r.Endpoint
	if _, err := d.k.deleteHostIf(ctx, recordHostIf(ep)); err != nil {
		return fmt.Errorf("remove endpoint %s/%s: %w", ep.GetContainerId(), ep.GetIfname(), err)
	}
	if _, err := d.store.Delete(ctx, d.host, ep.GetContainerId(), ep.GetIfname(), r.Revision); err != nil {
		return fmt.Errorf("remove endpoint %s/%s: %w", ep.GetContainerId(), ep.GetIfname(), err)
	}
	rep.Removed++
	if ep.GetHandle() == "" || d.cfg.releaser == nil {
		return nil
	}
	if err := d.cfg.releaser.ReleaseHandle(ctx, ep.GetHandle()); err != nil {
		return fmt.Errorf("release handle %s: %w", ep.GetHandle(), err)
	}
	rep.Released++
	return nil
}

// ListEndpoints returns the records of host: "" is this host, "*" every
// host.
func (d *Dataplane) ListEndpoints(ctx context.Context, host string) ([]*petrelv1.Endpoint, error) {
	switch host {
	case "":
		host = d.host
	case "*":
		host = ""
	default:
		if err := validID("host", host); err != nil {
			return nil, err
		}
	}
	recs, err := d.store.List(ctx, host, "")
	if err != nil {
		return nil, err
	}
	out := make([]*petrelv1.Endpoint, len(recs))
	for i, r := range recs {
		out[i] = r.Endpoint
	}
	return out, nil
}

// GetEndpoint returns the records of a container on this host, or
// ErrNotFound.
func (d *Dataplane) GetEndpoint(ctx context.Context, containerID string) ([]*petrelv1.Endpoint, error) {
	if err := validID("container_id", containerID); err != nil {
		return nil, err
	}
	recs, err := d.store.List(ctx, d.host, containerID)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("container %s on %s: %w", containerID, d.host, ErrNotFound)
	}
	out := make([]*petrelv1.Endpoint, len(recs))
	for i, r := range recs {
		out[i] = r.Endpoint
	}
	return out, nil
}

// keyedMutex serialises work per key.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu  sync.Mutex
	ref int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.ref++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.ref--
		if e.ref == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
