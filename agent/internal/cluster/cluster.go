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

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every state change
	live     map[string]*petrelv1.Host
	applied  map[string]int64
	pos      int64   // watch position: every event <= pos is in snap
	relevant []int64 // ascending recent relevant revisions (bounded)
	synced   bool    // a list has completed
	lastOK   int64   // position at the last successful reconcile
	publish  int64   // applied revision to publish (latest wins)
	wctx     context.Context
	pubKick  chan struct{}

	runCtx         context.Context // Run's context, for the applied watch
	appliedWatch   bool            // the applied watch runs
	appliedDemand  time.Time       // last time someone asked for applied revisions
	appliedIdleFor time.Duration

	reconcileErrs map[string]uint64 // failed Reconcile calls by component, under mu
}

const relevantKeep = 4096

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
	c.snap = snap
	c.mu.Lock()
	c.live = cloneHosts(snap.Hosts)
	c.applied = applied
	c.pos = rev
	c.noteRelevantLocked(rev)
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

// applyWatch folds one watch response into the snapshot and reports whether
// anything relevant changed.
func (c *Cluster) applyWatch(wr *clientv3.WatchResponse) bool {
	relevant := int64(0)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range wr.Events {
		key := string(ev.Kv.Key)
		rev := ev.Kv.ModRevision
		changed := false
		if ev.Type == clientv3.EventTypeDelete {
			changed = applyDelete(c.snap, c.applied, key)
		} else {
			changed = applyPut(c.snap, c.applied, key, ev.Kv.Value)
		}
		if changed {
			relevant = rev
			markChanged(c.snap, key, rev)
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
	if relevant != 0 {
		c.noteRelevantLocked(relevant)
	}
	c.snap.Revision = c.pos
	c.broadcastLocked()
	return relevant != 0
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

// reconcile runs every reconciler over the snapshot and, when all succeed,
// schedules the applied revision for publishing.
func (c *Cluster) reconcile(ctx context.Context) error {
	c.mu.Lock()
	pos := c.pos
	c.mu.Unlock()
	c.snap.Revision = pos
	var errs []error
	for _, r := range c.reconcilers {
		if err := r.Reconcile(ctx, c.snap); err != nil {
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
	c.mu.Lock()
	c.lastOK = pos
	if pos > c.publish {
		c.publish = pos
	}
	c.mu.Unlock()
	select {
	case c.pubKick <- struct{}{}:
	default:
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

// applyPut folds a put into s (or applied) and reports whether reconcilers
// care. Undecodable records are skipped: one bad record must not stop the
// cluster.
func applyPut(s *registry.Snapshot, applied map[string]int64, key string, val []byte) bool {
	switch {
	case strings.HasPrefix(key, registry.AppliedPrefix):
		if rev, err := strconv.ParseInt(strings.TrimSpace(string(val)), 10, 64); err == nil {
			applied[strings.TrimPrefix(key, registry.AppliedPrefix)] = rev
		}
		return false
	case strings.HasPrefix(key, registry.HostsPrefix):
		h, err := registry.DecodeHost(val)
		if err != nil {
			return false
		}
		name := strings.TrimPrefix(key, registry.HostsPrefix)
		if h.Name == "" {
			h.Name = name
		}
		s.Hosts[name] = h
		return true
	case strings.HasPrefix(key, registry.BlocksPrefix):
		cidr := blockCIDR(key)
		b, err := registry.DecodeBlock(val)
		if err != nil || cidr == "" {
			return false
		}
		// The key names the block; put and delete must agree on it.
		b.CIDR = cidr
		s.Blocks[cidr] = b
		return true
	case strings.HasPrefix(key, registry.IPsPrefix):
		a, err := registry.DecodeAllocation(val)
		if err != nil {
			return false
		}
		a.IP = key[strings.LastIndexByte(key, '/')+1:]
		s.Allocations[a.IP] = a
		return true
	case strings.HasPrefix(key, registry.EndpointsPrefix):
		ep, err := registry.DecodeEndpoint(val)
		if err != nil {
			return false
		}
		s.Endpoints[key] = ep
		return true
	}
	return false
}

// applyDelete is applyPut for deletions.
func applyDelete(s *registry.Snapshot, applied map[string]int64, key string) bool {
	switch {
	case strings.HasPrefix(key, registry.AppliedPrefix):
		delete(applied, strings.TrimPrefix(key, registry.AppliedPrefix))
		return false
	case strings.HasPrefix(key, registry.HostsPrefix):
		delete(s.Hosts, strings.TrimPrefix(key, registry.HostsPrefix))
		return true
	case strings.HasPrefix(key, registry.BlocksPrefix):
		if cidr := blockCIDR(key); cidr != "" {
			delete(s.Blocks, cidr)
		}
		return true
	case strings.HasPrefix(key, registry.IPsPrefix):
		delete(s.Allocations, key[strings.LastIndexByte(key, '/')+1:])
		return true
	case strings.HasPrefix(key, registry.EndpointsPrefix):
		delete(s.Endpoints, key)
		return true
	}
	return false
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
