// Package registry follows Petrel's endpoint records in etcd: it lists the
// endpoints prefix, then watches from the list revision, and lists again
// after a compaction or a broken watch. No polling.
package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	agentreg "github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Sink receives endpoint changes.
type Sink interface {
	ResetEndpoints(eps map[string]*petrelv1.Endpoint) int
	PutEndpoint(key string, ep *petrelv1.Endpoint) int
	DeleteEndpoint(key string) int
}

// KV is the part of the etcd client the watcher uses.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan
}

// Watcher keeps a Sink in step with the endpoint records.
type Watcher struct {
	KV   KV
	Sink Sink
	// OnError receives list/watch/decode errors (may be nil).
	OnError func(error)
	// OnEvent is told about each applied event (may be nil).
	OnEvent func(kind string)
	// Retry is the delay before listing again after an error (default 1 s).
	Retry time.Duration
}

func (w *Watcher) report(err error) {
	if w.OnError != nil {
		w.OnError(err)
	}
}

func (w *Watcher) event(kind string) {
	if w.OnEvent != nil {
		w.OnEvent(kind)
	}
}

// Run lists and watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	retry := w.Retry
	if retry == 0 {
		retry = time.Second
	}
	for ctx.Err() == nil {
		rev, err := w.list(ctx)
		if err == nil {
			err = w.watch(ctx, rev)
		}
		if ctx.Err() != nil {
			return
		}
		w.report(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

func (w *Watcher) list(ctx context.Context) (int64, error) {
	resp, err := w.KV.Get(ctx, agentreg.EndpointsPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list endpoints: %w", err)
	}
	eps := make(map[string]*petrelv1.Endpoint, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if ep, err := decode(string(kv.Key), kv.Value); err != nil {
			w.report(err)
		} else {
			eps[string(kv.Key)] = ep
		}
	}
	w.Sink.ResetEndpoints(eps)
	w.event("list")
	return resp.Header.Revision, nil
}

func decode(key string, val []byte) (*petrelv1.Endpoint, error) {
	if _, _, _, err := agentreg.ParseEndpointKey(key); err != nil {
		return nil, err
	}
	ep, err := agentreg.DecodeEndpoint(val)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", key, err)
	}
	return ep, nil
}

// watch applies events after rev until the watch fails.
func (w *Watcher) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.KV.Watch(wctx, agentreg.EndpointsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("watch endpoints from %d: %w", rev+1, err)
			}
			return fmt.Errorf("watch endpoints: %w", err)
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			switch ev.Type {
			case clientv3.EventTypePut:
				ep, err := decode(key, ev.Kv.Value)
				if err != nil {
					w.report(err)
					continue
				}
				w.Sink.PutEndpoint(key, ep)
				w.event("put")
			case clientv3.EventTypeDelete:
				w.Sink.DeleteEndpoint(key)
				w.event("delete")
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch endpoints: channel closed")
}
