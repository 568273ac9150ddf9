package server

import (
	"context"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
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
	petrelv1grpc.UnimplementedDataplaneServer

	dp   Dataplane
	ipam *IPAMService
	opts Options
}

var _ petrelv1grpc.DataplaneServer = (*DataplaneService)(nil)

// NewDataplaneService returns the Dataplane service over dp. addrs, when not
// nil, serves the allocation of Add and the release of Remove; without it
// both answer Unimplemented.
func NewDataplaneService(dp Dataplane, addrs *IPAMService, opts Options) *DataplaneService {
	return &DataplaneService{dp: dp, ipam: addrs, opts: opts.withDefaults()}
}

// Attach wires a container interface and writes its endpoint record.
func (s *DataplaneService) Attach(ctx context.Context, r *petrelv1.AttachRequest) (*petrelv1.AttachResponse, error) {
	return s.attach(ctx, r, nil)
}

// Add allocates addresses for the endpoint's handle, then attaches.
func (s *DataplaneService) Add(ctx context.Context, r *petrelv1.AddRequest) (*petrelv1.AttachResponse, error) {
	if s.ipam == nil {
		return nil, status.Error(codes.Unimplemented, "add: this agent serves no allocator; call IPAM.Allocate and Dataplane.Attach")
	}
	if r.GetAllocate() == nil {
		return nil, ToStatus(invalid("allocate", "required"))
	}
	return s.attach(ctx, r.GetAttach(), r.GetAllocate())
}

// attach serves Attach, and Add when alloc is not nil.
func (s *DataplaneService) attach(ctx context.Context, r *petrelv1.AttachRequest, alloc *petrelv1.AllocateRequest) (*petrelv1.AttachResponse, error) {
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
	// The allocation runs inside Attach, beside the creation of the veth
	// pair, which does not need the addresses. Attach merges them with the
	// static ones, never listing one twice.
	var allocErr error
	if alloc != nil {
		if alloc.GetHandle() == "" {
			alloc = proto.CloneOf(alloc)
			alloc.Handle = ep.GetHandle()
		}
		spec.Allocate = func(ctx context.Context) ([]netip.Addr, error) {
			got, err := s.ipam.allocate(ctx, alloc)
			allocErr = err
			return got, err
		}
	}
	var res dataplane.Result
	err = withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		res, err = s.dp.Attach(ctx, spec)
		return err
	})
	if allocErr != nil {
		return nil, allocErr // already a status
	}
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
	removed, err := s.detach(ctx, r)
	if err != nil {
		return nil, err
	}
	return &petrelv1.DetachResponse{Removed: removed}, nil
}

// Remove detaches, then releases the handle's addresses.
func (s *DataplaneService) Remove(ctx context.Context, r *petrelv1.RemoveRequest) (*petrelv1.RemoveResponse, error) {
	if s.ipam == nil {
		return nil, status.Error(codes.Unimplemented, "remove: this agent serves no allocator; call Dataplane.Detach and IPAM.Release")
	}
	if r.GetReleaseHandle() == "" {
		return nil, ToStatus(invalid("release_handle", "required"))
	}
	removed, err := s.detach(ctx, r.GetDetach())
	if err != nil && status.Code(err) != codes.NotFound {
		// The addresses stay with the handle: the interface may still
		// use them.
		return nil, err
	}
	ips, err := s.ipam.release(ctx, r.GetReleaseHandle(), nil)
	if err != nil {
		return nil, err
	}
	return &petrelv1.RemoveResponse{Removed: removed, Released: addrStrings(ips)}, nil
}

func (s *DataplaneService) detach(ctx context.Context, r *petrelv1.DetachRequest) (bool, error) {
	var removed bool
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		removed, err = s.dp.Detach(ctx, r.GetContainerId(), r.GetIfname(), r.GetNetns())
		return err
	})
	if err != nil {
		return false, ToStatus(err)
	}
	if removed {
		s.opts.Log.Info("detached", "container_id", r.GetContainerId(), "ifname", r.GetIfname(), "netns", r.GetNetns())
	}
	return removed, nil
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
