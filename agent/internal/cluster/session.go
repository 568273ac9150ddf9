package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// sessionLoop keeps the host record and the applied revision in etcd under
// one lease, re-granting the lease whenever it is lost (an etcd outage longer
// than the TTL), and writes the applied revision whenever the watch loop asks.
// Writes coalesce: only the latest revision is written.
func (c *Cluster) sessionLoop(ctx context.Context) {
	b := newBackoff()
	for ctx.Err() == nil {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.onError("lease", err)
		}
		if !b.wait(ctx) {
			return
		}
	}
}

func (c *Cluster) session(ctx context.Context) error {
	ttl := int64(c.leaseTTL.Seconds())
	lease, err := c.client.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("cluster: grant lease for host %s: %w", c.Name(), err)
	}
	hostVal, err := registry.EncodeHost(c.host)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(registry.HostKey(c.Name()), string(hostVal), clientv3.WithLease(lease.ID))}
	c.mu.Lock()
	published := c.publish
	c.mu.Unlock()
	if published > 0 {
		ops = append(ops, clientv3.OpPut(registry.AppliedKey(c.Name()), strconv.FormatInt(published, 10), clientv3.WithLease(lease.ID)))
	}
	if _, err := c.client.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("cluster: publish host %s: %w", c.Name(), err)
	}
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := c.client.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("cluster: keep lease of host %s alive: %w", c.Name(), err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ka:
			if !ok {
				return fmt.Errorf("cluster: lease of host %s lost", c.Name())
			}
		case <-c.pubKick:
			c.mu.Lock()
			want := c.publish
			c.mu.Unlock()
			if want <= published {
				continue
			}
			_, err := c.client.Put(ctx, registry.AppliedKey(c.Name()), strconv.FormatInt(want, 10), clientv3.WithLease(lease.ID))
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return fmt.Errorf("cluster: publish applied revision of %s: %w", c.Name(), err)
			}
			if err != nil {
				c.onError("publish", err)
				// Try again on the next kick or keepalive.
				select {
				case c.pubKick <- struct{}{}:
				default:
				}
				if !newBackoff().wait(ctx) {
					return nil
				}
				continue
			}
			published = want
		}
	}
}
