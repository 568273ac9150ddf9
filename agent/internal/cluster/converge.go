package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// HostState is one host as this agent sees it.
type HostState struct {
	Host *petrelv1.Host
	// Applied is the revision the host has published; 0 if none.
	Applied int64
	// Lag is zero when the host has applied every relevant change up to
	// the agent's watch position, else that position minus Applied.
	Lag int64
	// Live reports whether the host record exists (its lease is alive).
	Live bool
}

// View is a consistent picture of the cluster's convergence.
type View struct {
	// Revision is this agent's watch position.
	Revision int64
	// Watermark is the minimum applied revision over live hosts.
	Watermark int64
	// Hosts sorted by name: live hosts, then hosts with only an applied key.
	Hosts []HostState
}

// Status returns the current view. Unless WaitConverged keeps the applied
// revisions followed, it reads them once: a status call or a metrics scrape
// must not leave behind a watch that delivers every other agent's applied
// writes to this one (with every agent scraped, N² events per change).
func (c *Cluster) Status() View {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.readApplied(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewLocked(c.pos)
}

func (c *Cluster) viewLocked(r int64) View {
	target := c.targetLocked(r)
	v := View{Revision: c.pos}
	names := make([]string, 0, len(c.live))
	for n := range c.live {
		names = append(names, n)
	}
	sort.Strings(names)
	first := true
	for _, n := range names {
		a := c.applied[n]
		hs := HostState{Host: c.live[n], Applied: a, Live: true}
		if a < target {
			hs.Lag = c.pos - a
		}
		if first || a < v.Watermark {
			v.Watermark = a
			first = false
		}
		v.Hosts = append(v.Hosts, hs)
	}
	var gone []string
	for n := range c.applied {
		if _, ok := c.live[n]; !ok {
			gone = append(gone, n)
		}
	}
	sort.Strings(gone)
	for _, n := range gone {
		v.Hosts = append(v.Hosts, HostState{Host: &petrelv1.Host{Name: n}, Applied: c.applied[n]})
	}
	return v
}

// CurrentRevision asks etcd for its current revision.
func (c *Cluster) CurrentRevision(ctx context.Context) (int64, error) {
	resp, err := c.client.Get(ctx, registry.HostsPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("cluster: current revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// WaitConverged waits until every live host has applied revision r (0 means
// the current revision). It watches, never polls etcd: it wakes on every
// watch event and asks for a progress notification when its own watch is
// behind r. It returns the view at success; on ctx expiry it returns the view
// and an error wrapping ErrNotConverged that names the hosts behind.
func (c *Cluster) WaitConverged(ctx context.Context, r int64) (int64, View, error) {
	if r <= 0 {
		cur, err := c.CurrentRevision(ctx)
		if err != nil {
			return 0, View{}, err
		}
		r = cur
	}
	var lastProgress, behindSince time.Time
	for {
		c.demandApplied(ctx)
		c.mu.Lock()
		ch := c.changed
		pos, synced, wctx := c.pos, c.synced, c.wctx
		var v View
		var behind []string
		if synced && pos >= r {
			v = c.viewLocked(r)
			target := c.targetLocked(r)
			for _, h := range v.Hosts {
				if h.Live && h.Applied < target {
					behind = append(behind, h.Host.GetName())
				}
			}
		}
		c.mu.Unlock()
		if synced && pos >= r && len(behind) == 0 {
			return r, v, nil
		}
		if synced && pos < r && wctx != nil && time.Since(lastProgress) > 50*time.Millisecond {
			// Our watch is idle below r: ask etcd where it stands.
			lastProgress = time.Now()
			_ = c.client.RequestProgress(wctx)
		}
		switch {
		case !synced || pos >= r:
			behindSince = time.Time{}
		case behindSince.IsZero():
			behindSince = time.Now()
		case time.Since(behindSince) > progressPatience:
			// etcd answers a progress request only while every watcher
			// of the stream is in sync, so the answer can be long in
			// coming. Reading proves just as well that nothing our
			// watch follows changed between pos and r.
			behindSince = time.Now()
			if c.unchangedBetween(ctx, pos, r) {
				c.mu.Lock()
				if c.pos < r {
					// The snapshot is what it was at r; the next watch
					// event or pass records the revision in it.
					c.pos = r
				}
				c.broadcastLocked()
				c.mu.Unlock()
				continue
			}
		}
		timer := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			if !synced || pos < r {
				c.mu.Lock()
				v = c.viewLocked(c.pos)
				c.mu.Unlock()
				return r, v, fmt.Errorf("%w: agent %s has watched up to revision %d of %d", ErrNotConverged, c.Name(), pos, r)
			}
			return r, v, fmt.Errorf("%w: hosts behind revision %d: %s", ErrNotConverged, r, strings.Join(behind, ", "))
		case <-ch:
		case <-timer.C:
			// Re-request progress if the notification got lost.
		}
		timer.Stop()
	}
}

// progressPatience is how long WaitConverged waits for a progress
// notification before it reads etcd instead (unchangedBetween).
const progressPatience = 500 * time.Millisecond

// unchangedBetween reports whether no key the main watch follows changed
// in revisions (from, to]: none was written then (mod revision in the
// range) and the key count is the same at both ends (so none was deleted).
// It answers false when it cannot tell (an error, a compacted revision).
func (c *Cluster) unchangedBetween(ctx context.Context, from, to int64) bool {
	start := clientv3.GetPrefixRangeEnd(registry.AppliedPrefix)
	end := clientv3.WithRange(clientv3.GetPrefixRangeEnd(registry.Prefix))
	// Count ignores the mod revision filter; the keys do not.
	written, err := c.client.Get(ctx, start, end, clientv3.WithRev(to), clientv3.WithMinModRev(from+1), clientv3.WithKeysOnly())
	if err != nil || len(written.Kvs) != 0 {
		return false
	}
	before, err := c.client.Get(ctx, start, end, clientv3.WithRev(from), clientv3.WithCountOnly())
	if err != nil {
		return false
	}
	after, err := c.client.Get(ctx, start, end, clientv3.WithRev(to), clientv3.WithCountOnly())
	return err == nil && before.Count == after.Count
}

// ErrHostName is returned for an empty or malformed host name.
var ErrHostName = errors.New("cluster: bad host name")

// RemoveHost withdraws a host: it deletes its host record and applied
// revision (every agent then drops its routes) and frees its blocks that hold
// no allocations. It is idempotent.
func (c *Cluster) RemoveHost(ctx context.Context, name string) ([]string, error) {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("%w: %q", ErrHostName, name)
	}
	_, err := c.client.Txn(ctx).Then(
		clientv3.OpDelete(registry.HostKey(name)),
		clientv3.OpDelete(registry.AppliedKey(name)),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster: remove host %s: %w", name, err)
	}
	if c.freer == nil {
		return nil, nil
	}
	freed, err := c.freer.FreeHostBlocks(ctx, name)
	if err != nil {
		return freed, fmt.Errorf("cluster: free blocks of host %s: %w", name, err)
	}
	return freed, nil
}

// readApplied lists applied/ unless the applied watch runs (which keeps
// them current).
func (c *Cluster) readApplied(ctx context.Context) {
	c.mu.Lock()
	running := c.appliedWatch
	c.mu.Unlock()
	if running {
		return
	}
	applied, rev, err := c.listApplied(ctx)
	if err != nil {
		return
	}
	c.mu.Lock()
	if !c.appliedWatch && rev >= c.appliedRev {
		c.applied, c.appliedRev = applied, rev
		c.broadcastLocked()
	}
	c.mu.Unlock()
}

// listApplied reads every host's applied revision and the revision it was
// read at.
func (c *Cluster) listApplied(ctx context.Context) (map[string]int64, int64, error) {
	resp, err := c.client.Get(ctx, registry.AppliedPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	applied := map[string]int64{}
	for _, kv := range resp.Kvs {
		applyPut(nil, applied, string(kv.Key), kv.Value)
	}
	return applied, resp.Header.Revision, nil
}

// demandApplied makes sure the applied revisions are followed: it lists
// applied/ and starts a watch on it unless one runs. The watch stops after
// appliedIdleFor without demand, so that idle agents do not receive every
// other agent's applied writes.
func (c *Cluster) demandApplied(ctx context.Context) {
	c.mu.Lock()
	c.appliedDemand = time.Now()
	running, runCtx := c.appliedWatch, c.runCtx
	c.mu.Unlock()
	if running || runCtx == nil {
		return
	}
	applied, rev, err := c.listApplied(ctx)
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.appliedWatch {
		c.mu.Unlock()
		return
	}
	c.appliedWatch = true
	c.applied, c.appliedRev = applied, rev
	c.broadcastLocked()
	c.mu.Unlock()
	go c.followApplied(runCtx, rev+1)
}

// followApplied watches applied/ until idle, ctx ends or the watch fails.
func (c *Cluster) followApplied(ctx context.Context, rev int64) {
	defer func() {
		c.mu.Lock()
		c.appliedWatch = false
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.client.Watch(ctx, registry.AppliedPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	idle := time.NewTicker(c.appliedIdleFor / 4)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-idle.C:
			c.mu.Lock()
			stale := time.Since(c.appliedDemand) > c.appliedIdleFor
			c.mu.Unlock()
			if stale {
				return
			}
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.CompactRevision != 0 {
				return
			}
			c.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					applyDelete(nil, c.applied, string(ev.Kv.Key))
				} else {
					applyPut(nil, c.applied, string(ev.Kv.Key), ev.Kv.Value)
				}
			}
			c.broadcastLocked()
			c.mu.Unlock()
		}
	}
}
