package dataplane

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// StoredEndpoint is an endpoint record with the etcd ModRevision it was read
// at.
type StoredEndpoint struct {
	Endpoint *petrelv1.Endpoint
	Revision int64
}

// Store keeps endpoint records (registry.EndpointKey). EtcdStore is the
// production implementation; FakeStore keeps them in memory.
type Store interface {
	// Get returns the record and its ModRevision, or nil and 0 when absent.
	Get(ctx context.Context, host, containerID, ifname string) (*petrelv1.Endpoint, int64, error)
	// Put writes ep if the record's ModRevision is still prevRev (0: the
	// record must be absent), else it returns ErrConflict.
	Put(ctx context.Context, ep *petrelv1.Endpoint, prevRev int64) (int64, error)
	// Create writes ep if no record exists and returns its revision; else
	// it writes nothing and returns the record there and its ModRevision.
	// One round trip either way.
	Create(ctx context.Context, ep *petrelv1.Endpoint) (rev int64, cur *petrelv1.Endpoint, curRev int64, err error)
	// Delete removes the record; with rev > 0 only if its ModRevision is
	// still rev (else ErrConflict). It reports whether a record was removed.
	Delete(ctx context.Context, host, containerID, ifname string, rev int64) (bool, error)
	// List returns the records of host ("" = every host), restricted to
	// containerID when it is not empty (which needs a host).
	List(ctx context.Context, host, containerID string) ([]StoredEndpoint, error)
}

// EtcdStore is the Store over etcd.
type EtcdStore struct {
	c *clientv3.Client
}

var _ Store = (*EtcdStore)(nil)

// NewEtcdStore returns a Store over the etcd client c.
func NewEtcdStore(c *clientv3.Client) *EtcdStore { return &EtcdStore{c: c} }

// Get implements Store.
func (s *EtcdStore) Get(ctx context.Context, host, containerID, ifname string) (*petrelv1.Endpoint, int64, error) {
	key := registry.EndpointKey(host, containerID, ifname)
	r, err := s.c.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("get endpoint %s: %w", key, err)
	}
	if len(r.Kvs) == 0 {
		return nil, 0, nil
	}
	ep, err := registry.DecodeEndpoint(r.Kvs[0].Value)
	if err != nil {
		return nil, 0, fmt.Errorf("endpoint %s: %w", key, err)
	}
	return ep, r.Kvs[0].ModRevision, nil
}

// Put implements Store.
func (s *EtcdStore) Put(ctx context.Context, ep *petrelv1.Endpoint, prevRev int64) (int64, error) {
	key := registry.EndpointKey(ep.GetHost(), ep.GetContainerId(), ep.GetIfname())
	b, err := registry.EncodeEndpoint(ep)
	if err != nil {
		return 0, err
	}
	r, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", prevRev)).
		Then(clientv3.OpPut(key, string(b))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("put endpoint %s: %w", key, err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("put endpoint %s: %w", key, ErrConflict)
	}
	return r.Header.Revision, nil
}

// Create implements Store.
func (s *EtcdStore) Create(ctx context.Context, ep *petrelv1.Endpoint) (int64, *petrelv1.Endpoint, int64, error) {
	key := registry.EndpointKey(ep.GetHost(), ep.GetContainerId(), ep.GetIfname())
	b, err := registry.EncodeEndpoint(ep)
	if err != nil {
		return 0, nil, 0, err
	}
	r, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, nil, 0, fmt.Errorf("create endpoint %s: %w", key, err)
	}
	if r.Succeeded {
		return r.Header.Revision, nil, 0, nil
	}
	kvs := r.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		// Not possible within one txn; a conflict if it ever happens.
		return 0, nil, 0, fmt.Errorf("create endpoint %s: %w", key, ErrConflict)
	}
	cur, err := registry.DecodeEndpoint(kvs[0].Value)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("endpoint %s: %w", key, err)
	}
	return 0, cur, kvs[0].ModRevision, nil
}

// Delete implements Store.
func (s *EtcdStore) Delete(ctx context.Context, host, containerID, ifname string, rev int64) (bool, error) {
	key := registry.EndpointKey(host, containerID, ifname)
	if rev <= 0 {
		r, err := s.c.Delete(ctx, key)
		if err != nil {
			return false, fmt.Errorf("delete endpoint %s: %w", key, err)
		}
		return r.Deleted > 0, nil
	}
	r, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("delete endpoint %s: %w", key, err)
	}
	if !r.Succeeded {
		return false, fmt.Errorf("delete endpoint %s: %w", key, ErrConflict)
	}
	return r.Responses[0].GetResponseDeleteRange().GetDeleted() > 0, nil
}

// List implements Store.
func (s *EtcdStore) List(ctx context.Context, host, containerID string) ([]StoredEndpoint, error) {
	prefix := registry.EndpointsPrefix
	if host != "" {
		prefix = registry.HostEndpointsPrefix(host)
		if containerID != "" {
			prefix += containerID + "/"
		}
	}
	r, err := s.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list endpoints %s: %w", prefix, err)
	}
	out := make([]StoredEndpoint, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		ep, err := registry.DecodeEndpoint(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", kv.Key, err)
		}
		if containerID != "" && ep.GetContainerId() != containerID {
			continue
		}
		out = append(out, StoredEndpoint{Endpoint: ep, Revision: kv.ModRevision})
	}
	return out, nil
}
