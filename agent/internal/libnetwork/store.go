package libnetwork

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdStore is the Store on an etcd client.
type etcdStore struct {
	c *clientv3.Client
}

var _ Store = (*etcdStore)(nil)

// NewEtcdStore returns a Store backed by etcd.
func NewEtcdStore(c *clientv3.Client) Store { return &etcdStore{c: c} }

func (s *etcdStore) Get(ctx context.Context, key string) ([]byte, error) {
	resp, err := s.c.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

func (s *etcdStore) Put(ctx context.Context, key string, val []byte) error {
	if _, err := s.c.Put(ctx, key, string(val)); err != nil {
		return fmt.Errorf("etcd put %s: %w", key, err)
	}
	return nil
}

func (s *etcdStore) Delete(ctx context.Context, key string) error {
	if _, err := s.c.Delete(ctx, key); err != nil {
		return fmt.Errorf("etcd delete %s: %w", key, err)
	}
	return nil
}

func (s *etcdStore) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	resp, err := s.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd list %s: %w", prefix, err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

// maxUpdateTries bounds the compare-and-swap retries of Update.
const maxUpdateTries = 10

func (s *etcdStore) Update(ctx context.Context, key string, fn func(old []byte) ([]byte, error)) error {
	for range maxUpdateTries {
		resp, err := s.c.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("etcd get %s: %w", key, err)
		}
		var old []byte
		var rev int64
		if len(resp.Kvs) > 0 {
			old, rev = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
		}
		val, err := fn(old)
		if err != nil {
			return fmt.Errorf("update %s: %w", key, err)
		}
		if val == nil {
			return nil
		}
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		put := clientv3.OpPut(key, string(val))
		if len(resp.Kvs) > 0 && resp.Kvs[0].Lease != 0 {
			put = clientv3.OpPut(key, string(val), clientv3.WithLease(clientv3.LeaseID(resp.Kvs[0].Lease)))
		}
		tr, err := s.c.Txn(ctx).If(cmp).Then(put).Commit()
		if err != nil {
			return fmt.Errorf("etcd txn %s: %w", key, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("update %s: still conflicting after %d tries", key, maxUpdateTries)
}
