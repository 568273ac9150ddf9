package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Reconciler brings one part of the host (routes, policy) in line with the
// cluster state. The snapshot is valid only during the call and must be
// treated as read-only: the watch loop mutates it between calls.
type Reconciler interface {
	Reconcile(ctx context.Context, s *registry.Snapshot) error
}

// IncrementalReconciler is a Reconciler that can also apply just the records
// a batch of watch events touched. The watch loop calls ReconcileChanged
// after each batch with the registry keys (hosts/, blocks/, ips/,
// endpoints/) put or deleted since its previous call to either method,
// whether or not the change is relevant (so that the reconciler's own
// indexes stay exact), and calls Reconcile after every (re)list, on every
// resync tick and after the reconciler returned an error.
type IncrementalReconciler interface {
	Reconciler
	ReconcileChanged(ctx context.Context, s *registry.Snapshot, changed []string) error
}

// BlockFreer frees a host's blocks once they hold no allocations. The IPAM
// implements it.
type BlockFreer interface {
	FreeHostBlocks(ctx context.Context, host string) ([]string, error)
}

// Defaults.
const (
	DefaultLeaseTTL       = 30 * time.Second
	DefaultResyncInterval = 30 * time.Second
)

// ErrNotConverged is wrapped by WaitConverged when hosts stay behind.
var ErrNotConverged = errors.New("cluster: not converged")

// Option configures New.
type Option func(*Cluster)

// WithLeaseTTL sets the TTL of the lease that carries the host record.
func WithLeaseTTL(d time.Duration) Option { return func(c *Cluster) { c.leaseTTL = d } }

// WithResyncInterval sets how often reconcilers run with no event.
func WithResyncInterval(d time.Duration) Option { return func(c *Cluster) { c.resync = d } }

// WithBlockFreer lets RemoveHost free the removed host's empty blocks.
func WithBlockFreer(f BlockFreer) Option { return func(c *Cluster) { c.freer = f } }

// WithReconciler registers a reconciler (also see Register).
func WithReconciler(r Reconciler) Option {
	return func(c *Cluster) { c.reconcilers = append(c.reconcilers, r) }
}

// WithErrorHandler receives errors the background loops retry after
// (reconcile, watch, lease). The agent logs them; the default drops them.
func WithErrorHandler(f func(what string, err error)) Option {
	return func(c *Cluster) { c.onError = f }
}

// Cluster is one agent's view of the cluster. Run drives it.
type Cluster struct {
	client   *clientv3.Client
	host     *petrelv1.Host
	leaseTTL time.Duration
	resync   time.Duration
	freer    BlockFreer
	onError  func(string, error)

	reconcilers []Reconciler // fixed once Run starts

	snap *registry.Snapshot // owned by the watch loop
	pend pending            // owned by the watch loop

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	live    map[string]*petrelv1.Host
	applied map[string]int64
	// appliedRev is the revision applied was last read at (the watch, when
	// it runs, keeps it current).
	appliedRev int64
	pos        int64   // watch position: every event <= pos is in snap
	relevant   []int64 // ascending recent relevant revisions (bounded)
	synced     bool    // a list has completed
	lastOK     int64   // position at the last successful reconcile
	publish    int64   // applied revision to publish (latest wins)
	wctx       context.Context
	pubKick    chan struct{}

	runCtx         context.Context // Run's context, for the applied watch
	appliedWatch   bool            // the applied watch runs
	appliedDemand  time.Time       // last time someone asked for applied revisions
	appliedIdleFor time.Duration

	reconcileErrs map[string]uint64 // failed Reconcile calls by component, under mu
}

const relevantKeep = 4096

// pending is what the next reconcile pass has to take in.
type pending struct {
	keys []string            // registry keys changed since the last pass
	seen map[string]struct{} // keys, as a set
	// full asks every reconciler for a full Reconcile: after a (re)list,
	// on a resync tick, or when too many keys piled up.
	full bool
	// relevant: something reconcilers read changed since the last
	// successful pass, so the pass must publish the applied revision.
	relevant bool
	// needFull marks reconcilers whose last call failed.
	needFull []bool
}

// pendingKeysMax bounds the keys one pass hands over; past it the pass is a
// full one.
const pendingKeysMax = 4096

func (p *pending) add(key string) {
	if p.full {
		return
	}
	if _, ok := p.seen[key]; ok {
		return
	}
	if len(p.keys) >= pendingKeysMax {
		p.setFull()
		return
	}
	if p.seen == nil {
		p.seen = map[string]struct{}{}
	}
	p.seen[key] = struct{}{}
	p.keys = append(p.keys, key)
}

func (p *pending) setFull() {
	p.full = true
	p.keys, p.seen = nil, nil
}

// New returns a Cluster for the host record h (Name required). Call Run.
func New(client *clientv3.Client, h *petrelv1.Host, opts ...Option) (*Cluster, error) {
	if h == nil || h.GetName() == "" {
		return nil, errors.New("cluster: host name required")
	}
	if strings.ContainsAny(h.GetName(), "/ ") {
		return nil, fmt.Errorf("cluster: host name %q contains '/' or a space", h.GetName())
	}
	c := &Cluster{
		client:   client,
		host:     proto.Clone(h).(*petrelv1.Host),
		leaseTTL: DefaultLeaseTTL,
		resync:   DefaultResyncInterval,
		onError:  func(string, error) {},
		changed:  make(chan struct{}),
		live:     map[string]*petrelv1.Host{},
		applied:  map[string]int64{},
		pubKick:  make(chan struct{}, 1),
		snap:     newSnapshot(),

		appliedIdleFor: 2 * time.Minute,
	}
	for _, o := range opts {
		o(c)
	}
	if c.leaseTTL < time.Second {
		return nil, fmt.Errorf("cluster: lease TTL %s below 1s", c.leaseTTL)
	}
	return c, nil
}

// Register adds a reconciler. Call it before Run.
func (c *Cluster) Register(r Reconciler) { c.reconcilers = append(c.reconcilers, r) }

// Name is this agent's host name.
func (c *Cluster) Name() string { return c.host.GetName() }

func newSnapshot() *registry.Snapshot {
	return &registry.Snapshot{
		Hosts:       map[string]*petrelv1.Host{},
		Blocks:      map[string]registry.Block{},
		Allocations: map[string]registry.Allocation{},
		Endpoints:   map[string]*petrelv1.Endpoint{},
	}
}

// Run publishes the host record and runs the watch loop until ctx ends. It
// retries on every etcd error. The lease is not revoked on return, so a quick
// restart does not withdraw the host's routes anywhere.
func (c *Cluster) Run(ctx context.Context) error {
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.sessionLoop(ctx)
	}()
	backoff := newBackoff()
	for ctx.Err() == nil {
		err := c.syncOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			c.onError("watch", err)
		}
		if !backoff.wait(ctx) {
			break
		}
	}
	wg.Wait()
	return nil
}

// syncOnce lists the registry, then follows it with a watch until an error.
func (c *Cluster) syncOnce(ctx context.Context) error {
	resp, err := c.client.Get(ctx, registry.Prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("cluster: list %s: %w", registry.Prefix, err)
	}
	rev := resp.Header.Revision
	snap := newSnapshot()
	applied := map[string]int64{}
	for _, kv := range resp.Kvs {
		applyPut(snap, applied, string(kv.Key), kv.Value)
	}
	snap.Revision = rev
	snap.HostsRevision, snap.BlocksRevision, snap.AllocationsRevision, snap.EndpointsRevision = rev, rev, rev, rev
	// Which revisions before the list were relevant: without them the
	// list's own revision would have to count as relevant.
	var replayed []int64
	if from := replayFrom(snap.Hosts, applied, c.Name(), rev); from > 0 {
		revs, err := c.replayRelevant(ctx, from, rev)
		if err != nil {
			c.onError("replay", err)
		} else {
			// Every host that published has applied from.
			replayed = append([]int64{from}, revs...)
		}
	}
	c.snap = snap
	c.pend.setFull()
	c.pend.relevant = true
	c.mu.Lock()
	c.live = cloneHosts(snap.Hosts)
	if !c.appliedWatch {
		c.applied, c.appliedRev = applied, rev
	}
	c.pos = rev
	if replayed != nil {
		c.relevant = mergeRelevant(c.relevant, replayed)
	} else {
		c.noteRelevantLocked(rev)
	}
	c.synced = true
	c.broadcastLocked()
	c.mu.Unlock()

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	c.mu.Lock()
	c.wctx = wctx
	c.mu.Unlock()
	// The main watch skips applied/: every agent writes there after every
	// change, and following those writes everywhere would cost N² events
	// per change. The applied revisions are watched on demand instead
	// (see demandApplied). applied/ sorts first under the prefix.
	wch := c.client.Watch(wctx, clientv3.GetPrefixRangeEnd(registry.AppliedPrefix),
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(registry.Prefix)), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())

	dirty := true
	ticker := time.NewTicker(c.resync)
	defer ticker.Stop()
	var retry <-chan time.Time
	backoff := newBackoff()
	for {
		if dirty && retry == nil {
			if err := c.reconcile(ctx); err != nil {
				c.onError("reconcile", err)
				retry = time.After(backoff.next())
			} else {
				backoff.reset()
				dirty = false
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			c.pend.setFull()
			dirty = true
		case <-retry:
			retry = nil
		case wr, ok := <-wch:
			if !ok {
				return errors.New("cluster: watch closed")
			}
			for {
				if wr.CompactRevision != 0 {
					return fmt.Errorf("cluster: watch compacted at %d: relisting", wr.CompactRevision)
				}
				if err := wr.Err(); err != nil {
					return fmt.Errorf("cluster: watch: %w", err)
				}
				if c.applyWatch(&wr) {
					dirty = true
				}
				// Coalesce a burst: take whatever is already queued.
				select {
				case wr, ok = <-wch:
					if !ok {
						return errors.New("cluster: watch closed")
					}
					continue
				default:
				}
				break
			}
		}
	}
}

// applyWatch folds one watch response into the snapshot, queues the keys it
// changed for the next pass and reports whether a pass is needed.
func (c *Cluster) applyWatch(wr *clientv3.WatchResponse) bool {
	relevantRev := int64(0)
	dirty := false
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range wr.Events {
		key := string(ev.Kv.Key)
		rev := ev.Kv.ModRevision
		var ch change
		if ev.Type == clientv3.EventTypeDelete {
			ch = applyDelete(c.snap, c.applied, key)
		} else {
			ch = applyPut(c.snap, c.applied, key, ev.Kv.Value)
		}
		if ch != unchanged {
			markChanged(c.snap, key, rev)
			c.pend.add(key)
			dirty = true
		}
		if ch == relevant {
			relevantRev = rev
		}
		if strings.HasPrefix(key, registry.HostsPrefix) {
			name := strings.TrimPrefix(key, registry.HostsPrefix)
			if h, ok := c.snap.Hosts[name]; ok {
				c.live[name] = h
			} else {
				delete(c.live, name)
			}
		}
		if rev > c.pos {
			c.pos = rev
		}
	}
	if wr.Header.Revision > c.pos {
		c.pos = wr.Header.Revision
	}
	if relevantRev != 0 {
		c.noteRelevantLocked(relevantRev)
		c.pend.relevant = true
	}
	c.snap.Revision = c.pos
	c.broadcastLocked()
	return dirty
}

// component names a reconciler by its package ("routes", "policy") for
// metrics.
func component(r Reconciler) string {
	name := strings.TrimPrefix(fmt.Sprintf("%T", r), "*")
	if i := strings.IndexByte(name, '.'); i > 0 {
		return name[:i]
	}
	return name
}

// reconcile runs one pass: every reconciler takes in what changed since the
// last pass (incrementally when it can), and when all succeed after a
// relevant change, the applied revision is scheduled for publishing.
// Reconcilers that are not incremental run only when something relevant
// changed: they read nothing else.
func (c *Cluster) reconcile(ctx context.Context) error {
	c.mu.Lock()
	pos := c.pos
	c.mu.Unlock()
	c.snap.Revision = pos
	p := &c.pend
	keys, full, rel := p.keys, p.full, p.relevant
	p.keys, p.seen, p.full = nil, nil, false
	if len(p.needFull) != len(c.reconcilers) {
		p.needFull = make([]bool, len(c.reconcilers))
	}
	var errs []error
	for i, r := range c.reconcilers {
		inc, incremental := r.(IncrementalReconciler)
		var err error
		switch {
		case full || p.needFull[i]:
			err = r.Reconcile(ctx, c.snap)
		case incremental:
			if len(keys) == 0 {
				continue
			}
			err = inc.ReconcileChanged(ctx, c.snap, keys)
		case rel:
			err = r.Reconcile(ctx, c.snap)
		default:
			continue
		}
		p.needFull[i] = err != nil
		if err != nil {
			errs = append(errs, err)
			c.mu.Lock()
			if c.reconcileErrs == nil {
				c.reconcileErrs = map[string]uint64{}
			}
			c.reconcileErrs[component(r)]++
			c.mu.Unlock()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.relevant = false
	c.mu.Lock()
	c.lastOK = pos
	publish := (rel || full) && pos > c.publish
	if publish {
		c.publish = pos
	}
	c.mu.Unlock()
	if publish {
		select {
		case c.pubKick <- struct{}{}:
		default:
		}
	}
	return nil
}

// noteRelevantLocked records that revision rev changed something reconcilers
// look at.
func (c *Cluster) noteRelevantLocked(rev int64) {
	if n := len(c.relevant); n > 0 && c.relevant[n-1] >= rev {
		return
	}
	c.relevant = append(c.relevant, rev)
	if len(c.relevant) > relevantKeep {
		c.relevant = append(c.relevant[:0:0], c.relevant[len(c.relevant)-relevantKeep/2:]...)
	}
}

// targetLocked is M(r): the last relevant revision at or below r. When r is
// older than the remembered history it is r itself (the safe answer).
func (c *Cluster) targetLocked(r int64) int64 {
	i := sort.Search(len(c.relevant), func(i int) bool { return c.relevant[i] > r })
	if i == 0 {
		return r
	}
	return c.relevant[i-1]
}

func (c *Cluster) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// change says what folding one event into the snapshot did.
type change uint8

const (
	// unchanged: no record reconcilers get changed (an applied revision,
	// an identical rewrite, a key outside the records, a bad record).
	unchanged change = iota
	// stored: a record changed, but in nothing a reconciler reads: a
	// block's counters, an address inside its own host's block.
	stored
	// relevant: a record changed in what some reconciler reads: a host
	// record, a block's owner, an address that needs its own route, an
	// endpoint. Only these revisions count for convergence.
	relevant
)

// applyPut folds a put into s (or applied) and says what changed for
// reconcilers. Undecodable records are skipped: one bad record must not stop
// the cluster.
func applyPut(s *registry.Snapshot, applied map[string]int64, key string, val []byte) change {
	switch {
	case strings.HasPrefix(key, registry.AppliedPrefix):
		if rev, err := strconv.ParseInt(strings.TrimSpace(string(val)), 10, 64); err == nil {
			applied[strings.TrimPrefix(key, registry.AppliedPrefix)] = rev
		}
		return unchanged
	case strings.HasPrefix(key, registry.HostsPrefix):
		h, err := registry.DecodeHost(val)
		if err != nil {
			return unchanged
		}
		name := strings.TrimPrefix(key, registry.HostsPrefix)
		if h.Name == "" {
			h.Name = name
		}
		if old, ok := s.Hosts[name]; ok && proto.Equal(old, h) {
			return unchanged // the record rewritten with a new lease
		}
		s.Hosts[name] = h
		return relevant
	case strings.HasPrefix(key, registry.BlocksPrefix):
		cidr := blockCIDR(key)
		b, err := registry.DecodeBlock(val)
		if err != nil || cidr == "" {
			return unchanged
		}
		// The key names the block; put and delete must agree on it.
		b.CIDR = cidr
		old, ok := s.Blocks[cidr]
		s.Blocks[cidr] = b
		if ok && old.Host == b.Host && old.Pool == b.Pool {
			return stored
		}
		return relevant
	case strings.HasPrefix(key, registry.IPsPrefix):
		a, err := registry.DecodeAllocation(val)
		if err != nil {
			return unchanged
		}
		a.IP = key[strings.LastIndexByte(key, '/')+1:]
		old, ok := s.Allocations[a.IP]
		s.Allocations[a.IP] = a
		switch {
		case !ok && coveredByBlock(s, a):
			return stored
		case ok && coveredByBlock(s, old) && coveredByBlock(s, a):
			return stored
		case ok && old.Host == a.Host && old.Block == a.Block:
			return stored // the same /32 route
		}
		return relevant
	case strings.HasPrefix(key, registry.EndpointsPrefix):
		ep, err := registry.DecodeEndpoint(val)
		if err != nil {
			return unchanged
		}
		if old, ok := s.Endpoints[key]; ok && proto.Equal(old, ep) {
			return unchanged
		}
		s.Endpoints[key] = ep
		return relevant
	}
	return unchanged
}

// coveredByBlock reports whether address a needs no route of its own
// anywhere: nobody holds it, or its holder owns its block (whose route
// covers it).
func coveredByBlock(s *registry.Snapshot, a registry.Allocation) bool {
	if a.Host == "" {
		return true
	}
	b, ok := s.Blocks[a.Block]
	return ok && b.Host == a.Host
}

// applyDelete is applyPut for deletions.
func applyDelete(s *registry.Snapshot, applied map[string]int64, key string) change {
	switch {
	case strings.HasPrefix(key, registry.AppliedPrefix):
		delete(applied, strings.TrimPrefix(key, registry.AppliedPrefix))
		return unchanged
	case strings.HasPrefix(key, registry.HostsPrefix):
		return deleted(s.Hosts, strings.TrimPrefix(key, registry.HostsPrefix))
	case strings.HasPrefix(key, registry.BlocksPrefix):
		cidr := blockCIDR(key)
		if cidr == "" {
			return unchanged
		}
		return deleted(s.Blocks, cidr)
	case strings.HasPrefix(key, registry.IPsPrefix):
		ip := key[strings.LastIndexByte(key, '/')+1:]
		a, ok := s.Allocations[ip]
		if !ok {
			return unchanged
		}
		delete(s.Allocations, ip)
		if coveredByBlock(s, a) {
			return stored
		}
		return relevant
	case strings.HasPrefix(key, registry.EndpointsPrefix):
		return deleted(s.Endpoints, key)
	}
	return unchanged
}

// deleted removes k from m: relevant if it was there.
func deleted[V any](m map[string]V, k string) change {
	if _, ok := m[k]; !ok {
		return unchanged
	}
	delete(m, k)
	return relevant
}

// markChanged records the revision of a change in the map key belongs to.
func markChanged(s *registry.Snapshot, key string, rev int64) {
	switch {
	case strings.HasPrefix(key, registry.HostsPrefix):
		s.HostsRevision = rev
	case strings.HasPrefix(key, registry.BlocksPrefix):
		s.BlocksRevision = rev
	case strings.HasPrefix(key, registry.IPsPrefix):
		s.AllocationsRevision = rev
	case strings.HasPrefix(key, registry.EndpointsPrefix):
		s.EndpointsRevision = rev
	}
}

// blockCIDR is the CIDR a block key names ("" if malformed).
func blockCIDR(key string) string {
	rest := strings.TrimPrefix(key, registry.BlocksPrefix)
	i := strings.IndexByte(rest, '/')
	if i < 0 || i == len(rest)-1 {
		return ""
	}
	return registry.KeyCIDR(rest[i+1:])
}

func cloneHosts(m map[string]*petrelv1.Host) map[string]*petrelv1.Host {
	out := make(map[string]*petrelv1.Host, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// backoff doubles from 100ms to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = 100 * time.Millisecond
	} else if b.d *= 2; b.d > 5*time.Second {
		b.d = 5 * time.Second
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }

func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
