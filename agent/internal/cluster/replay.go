package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Limits of replayRelevant: past them the agent keeps the safe answer.
const (
	replayMaxRevisions = 100000
	replayTimeout      = 5 * time.Second
)

// replayRelevant finds which revisions in (from, to] were relevant, the way
// every agent that followed them with its watch classified them: it lists
// the registry as of from and folds each later event into that snapshot
// with applyPut and applyDelete. An agent that has just listed at to knows
// nothing of the revisions before it and would otherwise have to count to
// itself as relevant, which the other hosts never publish when the changes
// before it were not relevant to them (the restarted agent's own host record
// under a new lease, applied writes), so --wait-converged would wait for
// their next resync. It returns the relevant revisions in ascending order,
// or an error when history is compacted or the replay takes too long.
func (c *Cluster) replayRelevant(ctx context.Context, from, to int64) ([]int64, error) {
	if to-from > replayMaxRevisions {
		return nil, fmt.Errorf("cluster: %d revisions to replay", to-from)
	}
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	resp, err := c.client.Get(ctx, registry.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	if err != nil {
		return nil, fmt.Errorf("cluster: list at revision %d: %w", from, err)
	}
	snap := newSnapshot()
	applied := map[string]int64{}
	for _, kv := range resp.Kvs {
		applyPut(snap, applied, string(kv.Key), kv.Value)
	}
	// A stream of its own: etcd answers a progress request only once every
	// watcher on the stream has caught up.
	wctx := metadata.AppendToOutgoingContext(ctx, "petrel-watch", "replay")
	wch := c.client.Watch(wctx, clientv3.GetPrefixRangeEnd(registry.AppliedPrefix),
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(registry.Prefix)), clientv3.WithRev(from+1), clientv3.WithProgressNotify())
	var out []int64
	_ = c.client.RequestProgress(wctx)
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: replay of revisions %d to %d: %w", from+1, to, ctx.Err())
		case wr, ok := <-wch:
			if !ok {
				return nil, errors.New("cluster: replay watch closed")
			}
			if wr.CompactRevision != 0 {
				return nil, fmt.Errorf("cluster: replay: history compacted at %d", wr.CompactRevision)
			}
			if err := wr.Err(); err != nil {
				return nil, fmt.Errorf("cluster: replay: %w", err)
			}
			for _, ev := range wr.Events {
				rev := ev.Kv.ModRevision
				if rev > to {
					return out, nil
				}
				var ch change
				if ev.Type == clientv3.EventTypeDelete {
					ch = applyDelete(snap, applied, string(ev.Kv.Key))
				} else {
					ch = applyPut(snap, applied, string(ev.Kv.Key), ev.Kv.Value)
				}
				if ch == relevant && (len(out) == 0 || out[len(out)-1] < rev) {
					out = append(out, rev)
				}
				if rev == to {
					return out, nil
				}
			}
			if wr.IsProgressNotify() && wr.Header.Revision >= to {
				return out, nil
			}
			_ = c.client.RequestProgress(wctx)
		}
	}
}

// replayFrom is where replayRelevant starts after a list at rev: the lowest
// revision another live host has published, since revisions at or below it
// were applied by every host that published. Zero means there is nothing to
// replay.
func replayFrom(hosts map[string]*petrelv1.Host, applied map[string]int64, self string, rev int64) int64 {
	from := int64(0)
	for name := range hosts {
		a := applied[name]
		if name == self || a <= 0 {
			continue
		}
		if from == 0 || a < from {
			from = a
		}
	}
	if from >= rev {
		return 0
	}
	return from
}

// mergeRelevant inserts revs (ascending) into the ascending history h.
func mergeRelevant(h, revs []int64) []int64 {
	out := append(slices.Clone(h), revs...)
	slices.Sort(out)
	return slices.Compact(out)
}
