package agentclient

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-net/petrel/isolator/internal/unarygrpc"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// IPAM is the part of the petrel.v1.IPAM service the shims call.
type IPAM interface {
	Allocate(ctx context.Context, r *petrelv1.AllocateRequest) (*petrelv1.AllocateResponse, error)
	Reserve(ctx context.Context, r *petrelv1.ReserveRequest) (*petrelv1.ReserveResponse, error)
	Release(ctx context.Context, r *petrelv1.ReleaseRequest) (*petrelv1.ReleaseResponse, error)
	ListPools(ctx context.Context, r *petrelv1.ListPoolsRequest) (*petrelv1.ListPoolsResponse, error)
	ListAllocations(ctx context.Context, r *petrelv1.ListAllocationsRequest) (*petrelv1.ListAllocationsResponse, error)
}

// Dataplane is the part of the petrel.v1.Dataplane service the shims call.
type Dataplane interface {
	Attach(ctx context.Context, r *petrelv1.AttachRequest) (*petrelv1.AttachResponse, error)
	Detach(ctx context.Context, r *petrelv1.DetachRequest) (*petrelv1.DetachResponse, error)
	Add(ctx context.Context, r *petrelv1.AddRequest) (*petrelv1.AttachResponse, error)
	Remove(ctx context.Context, r *petrelv1.RemoveRequest) (*petrelv1.RemoveResponse, error)
	Check(ctx context.Context, r *petrelv1.CheckRequest) (*petrelv1.CheckResponse, error)
	ListEndpoints(ctx context.Context, r *petrelv1.ListEndpointsRequest) (*petrelv1.ListEndpointsResponse, error)
	GetEndpoint(ctx context.Context, r *petrelv1.GetEndpointRequest) (*petrelv1.GetEndpointResponse, error)
}

// Cluster is the part of the petrel.v1.Cluster service the shims call.
type Cluster interface {
	Status(ctx context.Context, r *petrelv1.StatusRequest) (*petrelv1.StatusResponse, error)
}

// invoke calls one unary method and returns its decoded response.
func invoke[R any, PR interface {
	*R
	proto.Message
}](ctx context.Context, c *unarygrpc.Conn, method string, req proto.Message) (*R, error) {
	resp := PR(new(R))
	if err := c.Invoke(ctx, method, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// The full method names are the generated ones (petrelv1grpc's
// *_FullMethodName constants, checked by a test); that package is not
// imported because it links grpc-go.

type ipamClient struct{ c *unarygrpc.Conn }

func (x ipamClient) Allocate(ctx context.Context, r *petrelv1.AllocateRequest) (*petrelv1.AllocateResponse, error) {
	return invoke[petrelv1.AllocateResponse](ctx, x.c, "/petrel.v1.IPAM/Allocate", r)
}

func (x ipamClient) Reserve(ctx context.Context, r *petrelv1.ReserveRequest) (*petrelv1.ReserveResponse, error) {
	return invoke[petrelv1.ReserveResponse](ctx, x.c, "/petrel.v1.IPAM/Reserve", r)
}

func (x ipamClient) Release(ctx context.Context, r *petrelv1.ReleaseRequest) (*petrelv1.ReleaseResponse, error) {
	return invoke[petrelv1.ReleaseResponse](ctx, x.c, "/petrel.v1.IPAM/Release", r)
}

func (x ipamClient) ListPools(ctx context.Context, r *petrelv1.ListPoolsRequest) (*petrelv1.ListPoolsResponse, error) {
	return invoke[petrelv1.ListPoolsResponse](ctx, x.c, "/petrel.v1.IPAM/ListPools", r)
}

func (x ipamClient) ListAllocations(ctx context.Context, r *petrelv1.ListAllocationsRequest) (*petrelv1.ListAllocationsResponse, error) {
	return invoke[petrelv1.ListAllocationsResponse](ctx, x.c, "/petrel.v1.IPAM/ListAllocations", r)
}

type dataplaneClient struct{ c *unarygrpc.Conn }

func (x dataplaneClient) Attach(ctx context.Context, r *petrelv1.AttachRequest) (*petrelv1.AttachResponse, error) {
	return invoke[petrelv1.AttachResponse](ctx, x.c, "/petrel.v1.Dataplane/Attach", r)
}

func (x dataplaneClient) Detach(ctx context.Context, r *petrelv1.DetachRequest) (*petrelv1.DetachResponse, error) {
	return invoke[petrelv1.DetachResponse](ctx, x.c, "/petrel.v1.Dataplane/Detach", r)
}

func (x dataplaneClient) Add(ctx context.Context, r *petrelv1.AddRequest) (*petrelv1.AttachResponse, error) {
	return invoke[petrelv1.AttachResponse](ctx, x.c, "/petrel.v1.Dataplane/Add", r)
}

func (x dataplaneClient) Remove(ctx context.Context, r *petrelv1.RemoveRequest) (*petrelv1.RemoveResponse, error) {
	return invoke[petrelv1.RemoveResponse](ctx, x.c, "/petrel.v1.Dataplane/Remove", r)
}

func (x dataplaneClient) Check(ctx context.Context, r *petrelv1.CheckRequest) (*petrelv1.CheckResponse, error) {
	return invoke[petrelv1.CheckResponse](ctx, x.c, "/petrel.v1.Dataplane/Check", r)
}

func (x dataplaneClient) ListEndpoints(ctx context.Context, r *petrelv1.ListEndpointsRequest) (*petrelv1.ListEndpointsResponse, error) {
	return invoke[petrelv1.ListEndpointsResponse](ctx, x.c, "/petrel.v1.Dataplane/ListEndpoints", r)
}

func (x dataplaneClient) GetEndpoint(ctx context.Context, r *petrelv1.GetEndpointRequest) (*petrelv1.GetEndpointResponse, error) {
	return invoke[petrelv1.GetEndpointResponse](ctx, x.c, "/petrel.v1.Dataplane/GetEndpoint", r)
}

type clusterClient struct{ c *unarygrpc.Conn }

func (x clusterClient) Status(ctx context.Context, r *petrelv1.StatusRequest) (*petrelv1.StatusResponse, error) {
	return invoke[petrelv1.StatusResponse](ctx, x.c, "/petrel.v1.Cluster/Status", r)
}
