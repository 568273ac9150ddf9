package server

import (
	"context"
	"net/netip"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Dataplane is what the Dataplane service needs from the dataplane.
type Dataplane interface {
	Attach(ctx context.Context, s dataplane.Spec) (dataplane.Result, error)
	Detach(ctx context.Context, containerID, ifname, netns string) (bool, error)
	Check(ctx context.Context, containerID, ifname, netns string, ips []netip.Addr) ([]string, error)
	ListEndpoints(ctx context.Context, host string) ([]*petrelv1.Endpoint, error)
	GetEndpoint(ctx context.Context, containerID string) ([]*petrelv1.Endpoint, error)
}

var _ Dataplane = (*dataplane.Dataplane)(nil)

// DataplaneService serves petrel.v1.Dataplane.
type DataplaneService struct {
	petrelv1.UnimplementedDataplaneServer

	dp   Dataplane
	opts Options
}

var _ petrelv1.DataplaneServer = (*DataplaneService)(nil)

// NewDataplaneService returns the Dataplane service over dp.
func NewDataplaneService(dp Dataplane, opts Options) *DataplaneService {
	return &DataplaneService{dp: dp, opts: opts.withDefaults()}
}

// Attach wires a container interface and writes its endpoint record.
func (s *DataplaneService) Attach(ctx context.Context, r *petrelv1.AttachRequest) (*petrelv1.AttachResponse, error) {
	ep := r.GetEndpoint()
	if ep == nil {
		return nil, ToStatus(invalid("endpoint", "required"))
	}
	ips, err := parseAddrs("endpoint.ips", ep.GetIps())
	if err != nil {
		return nil, ToStatus(err)
	}
	spec := dataplane.Spec{
		ContainerID:      ep.GetContainerId(),
		Netns:            r.GetNetns(),
		PID:              int(r.GetPid()),
		IfName:           ep.GetIfname(),
		IPs:              ips,
		Handle:           ep.GetHandle(),
		Source:           ep.GetSource(),
		Netgroups:        ep.GetNetgroups(),
		Labels:           ep.GetLabels(),
		NetworkName:      ep.GetNetworkName(),
		PortMappings:     ep.GetPortMappings(),
		ContainerName:    ep.GetContainerName(),
		MesosContainerID: ep.GetMesosContainerId(),
		Hostname:         ep.GetHostname(),
		DockerNetworkID:  ep.GetDockerNetworkId(),
		DockerEndpointID: ep.GetDockerEndpointId(),
		HostSideOnly:     r.GetHostSideOnly(),
	}
	var res dataplane.Result
	err = withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		res, err = s.dp.Attach(ctx, spec)
		return err
	})
	if err != nil {
		return nil, ToStatus(err)
	}
	if res.Changed {
		s.opts.Log.Info("attached", "container_id", spec.ContainerID, "ifname", res.Endpoint.GetIfname(),
			"ips", res.Endpoint.GetIps(), "netns", res.Endpoint.GetNetns(), "host_ifname", res.Endpoint.GetHostIfname())
	}
	out := &petrelv1.AttachResponse{Endpoint: res.Endpoint, Mtu: int32(res.MTU), ContainerIfnameTemp: res.TempIfName}
	if res.GatewayV4.IsValid() {
		out.Gateway = res.GatewayV4.String()
	}
	if res.GatewayV6.IsValid() {
		out.Ipv6Gateway = res.GatewayV6.String()
	}
	return out, nil
}

// Detach removes a container's host side, routes and records.
func (s *DataplaneService) Detach(ctx context.Context, r *petrelv1.DetachRequest) (*petrelv1.DetachResponse, error) {
	var removed bool
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		removed, err = s.dp.Detach(ctx, r.GetContainerId(), r.GetIfname(), r.GetNetns())
		return err
	})
	if err != nil {
		return nil, ToStatus(err)
	}
	if removed {
		s.opts.Log.Info("detached", "container_id", r.GetContainerId(), "ifname", r.GetIfname(), "netns", r.GetNetns())
	}
	return &petrelv1.DetachResponse{Removed: removed}, nil
}

// Check reports how a container's network differs from what Attach builds.
func (s *DataplaneService) Check(ctx context.Context, r *petrelv1.CheckRequest) (*petrelv1.CheckResponse, error) {
	ips, err := parseAddrs("ips", r.GetIps())
	if err != nil {
		return nil, ToStatus(err)
	}
	var probs []string
	err = withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		probs, err = s.dp.Check(ctx, r.GetContainerId(), r.GetIfname(), r.GetNetns(), ips)
		return err
	})
	if err != nil {
		return nil, ToStatus(err)
	}
	return &petrelv1.CheckResponse{Problems: probs}, nil
}

// ListEndpoints lists endpoint records of a host ("" this host, "*" all).
func (s *DataplaneService) ListEndpoints(ctx context.Context, r *petrelv1.ListEndpointsRequest) (*petrelv1.ListEndpointsResponse, error) {
	var eps []*petrelv1.Endpoint
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		eps, err = s.dp.ListEndpoints(ctx, r.GetHost())
		return etcdError(err)
	})
	if err != nil {
		return nil, ToStatus(err)
	}
	return &petrelv1.ListEndpointsResponse{Endpoints: eps}, nil
}

// GetEndpoint returns a container's endpoint records on this host.
func (s *DataplaneService) GetEndpoint(ctx context.Context, r *petrelv1.GetEndpointRequest) (*petrelv1.GetEndpointResponse, error) {
	var eps []*petrelv1.Endpoint
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		eps, err = s.dp.GetEndpoint(ctx, r.GetContainerId())
		return etcdError(err)
	})
	if err != nil {
		return nil, ToStatus(err)
	}
	return &petrelv1.GetEndpointResponse{Endpoints: eps}, nil
}
