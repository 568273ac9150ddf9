package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/cluster"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// UsageSource reports pool utilisation (implemented by *ipam.IPAM).
type UsageSource interface {
	Usage(ctx context.Context, pool string) ([]ipam.PoolUsage, error)
}

// ClusterService serves petrel.v1.Cluster. Status reports this agent, etcd
// and the pools; with State set it also reports every host's applied
// revision, and serves WaitConverged, ListHosts and RemoveHost (which answer
// Unimplemented without it).
type ClusterService struct {
	petrelv1grpc.UnimplementedClusterServer

	// Host is this agent's host name.
	Host string
	// Version is the agent's build version.
	Version string
	// EmbeddedEtcd reports whether petreld runs its own etcd member.
	EmbeddedEtcd bool
	// EtcdEndpoints are the client URLs in use.
	EtcdEndpoints []string
	// KV reads the registry.
	KV clientv3.KV
	// Pools reports utilisation; nil leaves pools out of Status.
	Pools UsageSource
	// Options are shared with the other services.
	Options Options
	// State is the cluster watcher (*cluster.Cluster); nil leaves hosts out.
	State ClusterState
}

// ClusterState is the convergence view the service reports
// (implemented by *cluster.Cluster).
type ClusterState interface {
	Status() cluster.View
	WaitConverged(ctx context.Context, revision int64) (int64, cluster.View, error)
	RemoveHost(ctx context.Context, name string) ([]string, error)
}

var _ petrelv1grpc.ClusterServer = (*ClusterService)(nil)

// Status reports this agent, the etcd revision, the number of endpoints in
// the registry and the pools' utilisation.
func (s *ClusterService) Status(ctx context.Context, _ *petrelv1.StatusRequest) (*petrelv1.StatusResponse, error) {
	out := &petrelv1.StatusResponse{
		Host:          s.Host,
		Version:       s.Version,
		EmbeddedEtcd:  s.EmbeddedEtcd,
		EtcdEndpoints: s.EtcdEndpoints,
	}
	err := withBudget(ctx, s.Options.Budget, func(ctx context.Context) error {
		resp, err := s.KV.Get(ctx, registry.EndpointsPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("count endpoints: %w", etcdError(err))
		}
		out.Revision = resp.Header.GetRevision()
		out.Endpoints = resp.Count
		if s.State != nil {
			v := s.State.Status()
			out.Hosts = hostsToProto(v)
			out.ConvergedRevision = v.Watermark
		}
		if s.Pools == nil {
			return nil
		}
		us, err := s.Pools.Usage(ctx, "")
		if err != nil {
			return fmt.Errorf("pool usage: %w", err)
		}
		out.Pools = usageToProto(us)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *ClusterService) state() (ClusterState, error) {
	if s.State == nil {
		return nil, status.Error(codes.Unimplemented, "cluster watcher not running on this agent")
	}
	return s.State, nil
}

// WaitConverged waits until every live host has applied the revision. It
// answers DEADLINE_EXCEEDED naming the hosts behind shortly before the
// caller's deadline, so that the caller sees which hosts lag.
func (s *ClusterService) WaitConverged(ctx context.Context, req *petrelv1.WaitConvergedRequest) (*petrelv1.WaitConvergedResponse, error) {
	st, err := s.state()
	if err != nil {
		return nil, err
	}
	if req.GetRevision() < 0 {
		return nil, invalid("revision", "must not be negative, got %d", req.GetRevision())
	}
	if dl, ok := ctx.Deadline(); ok {
		margin := min(time.Until(dl)/10, 500*time.Millisecond)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}
	rev, v, err := st.WaitConverged(ctx, req.GetRevision())
	if errors.Is(err, cluster.ErrNotConverged) {
		return nil, status.Error(codes.DeadlineExceeded, err.Error())
	}
	if err != nil {
		return nil, err
	}
	return &petrelv1.WaitConvergedResponse{Revision: rev, Hosts: hostsToProto(v)}, nil
}

// ListHosts lists the live hosts with their applied revision and lag.
func (s *ClusterService) ListHosts(_ context.Context, _ *petrelv1.ListHostsRequest) (*petrelv1.ListHostsResponse, error) {
	st, err := s.state()
	if err != nil {
		return nil, err
	}
	return &petrelv1.ListHostsResponse{Hosts: hostsToProto(st.Status())}, nil
}

// RemoveHost withdraws a (dead) host and frees its empty blocks.
func (s *ClusterService) RemoveHost(ctx context.Context, req *petrelv1.RemoveHostRequest) (*petrelv1.RemoveHostResponse, error) {
	st, err := s.state()
	if err != nil {
		return nil, err
	}
	if req.GetName() == "" {
		return nil, invalid("name", "required")
	}
	freed, err := st.RemoveHost(ctx, req.GetName())
	if errors.Is(err, cluster.ErrHostName) {
		return nil, invalid("name", "%v", err)
	}
	if err != nil {
		return nil, err
	}
	s.Options.withDefaults().Log.Info("host removed", "host", req.GetName(), "freed_blocks", freed)
	return &petrelv1.RemoveHostResponse{FreedBlocks: freed}, nil
}

func hostsToProto(v cluster.View) []*petrelv1.HostStatus {
	out := make([]*petrelv1.HostStatus, 0, len(v.Hosts))
	for _, h := range v.Hosts {
		out = append(out, &petrelv1.HostStatus{Host: h.Host, AppliedRevision: h.Applied, Lag: h.Lag, Live: h.Live})
	}
	return out
}
