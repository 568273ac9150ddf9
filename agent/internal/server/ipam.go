package server

import (
	"context"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// IPAM is what the IPAM service needs from the allocator.
type IPAM interface {
	Allocate(ctx context.Context, r ipam.Request) ([]netip.Addr, error)
	Reserve(ctx context.Context, handle string, ips []netip.Addr, netgroups []string, labels map[string]string) ([]netip.Addr, error)
	Release(ctx context.Context, handle string, ips []netip.Addr) ([]netip.Addr, error)
	AddPool(ctx context.Context, p ipam.Pool) (ipam.Pool, error)
	ListPools(ctx context.Context) ([]ipam.Pool, error)
	DeletePool(ctx context.Context, name string) error
	Usage(ctx context.Context, pool string) ([]ipam.PoolUsage, error)
	Allocations(ctx context.Context, pool, handle string) ([]registry.Allocation, error)
}

var _ IPAM = (*ipam.IPAM)(nil)

// IPAMService serves petrel.v1.IPAM.
type IPAMService struct {
	petrelv1grpc.UnimplementedIPAMServer

	ipam IPAM
	opts Options
}

// NewIPAMService returns the IPAM service over a.
func NewIPAMService(a IPAM, opts Options) *IPAMService {
	return &IPAMService{ipam: a, opts: opts.withDefaults()}
}

var _ petrelv1grpc.IPAMServer = (*IPAMService)(nil)

// Allocate hands out addresses for a handle.
func (s *IPAMService) Allocate(ctx context.Context, r *petrelv1.AllocateRequest) (*petrelv1.AllocateResponse, error) {
	ips, err := s.allocate(ctx, r)
	if err != nil {
		return nil, err
	}
	return &petrelv1.AllocateResponse{Ips: addrStrings(ips)}, nil
}

// allocate serves Allocate and the allocation of Dataplane.Attach.
func (s *IPAMService) allocate(ctx context.Context, r *petrelv1.AllocateRequest) ([]netip.Addr, error) {
	req := ipam.Request{
		Handle:    r.GetHandle(),
		NumV4:     int(r.GetNumIpv4()),
		NumV6:     int(r.GetNumIpv6()),
		Pool:      r.GetPool(),
		PoolV6:    r.GetPoolV6(),
		Netgroups: r.GetNetgroups(),
		Labels:    r.GetLabels(),
	}
	var ips []netip.Addr
	err := s.timed(ctx, "allocate", func(ctx context.Context) (err error) {
		ips, err = s.ipam.Allocate(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.opts.Log.Info("allocated", "handle", req.Handle, "ips", ips, "pool", req.Pool)
	return ips, nil
}

// Reserve claims static addresses for a handle, all or nothing.
func (s *IPAMService) Reserve(ctx context.Context, r *petrelv1.ReserveRequest) (*petrelv1.ReserveResponse, error) {
	want, err := validateReserve(r)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	err = s.timed(ctx, "reserve", func(ctx context.Context) (err error) {
		ips, err = s.ipam.Reserve(ctx, r.GetHandle(), want, r.GetNetgroups(), r.GetLabels())
		return err
	})
	if err != nil {
		return nil, err
	}
	s.opts.Log.Info("reserved", "handle", r.GetHandle(), "ips", ips)
	return &petrelv1.ReserveResponse{Ips: addrStrings(ips)}, nil
}

// Release frees a handle's addresses or the listed ones.
func (s *IPAMService) Release(ctx context.Context, r *petrelv1.ReleaseRequest) (*petrelv1.ReleaseResponse, error) {
	want, err := validateRelease(r)
	if err != nil {
		return nil, err
	}
	ips, err := s.release(ctx, r.GetHandle(), want)
	if err != nil {
		return nil, err
	}
	return &petrelv1.ReleaseResponse{Released: addrStrings(ips)}, nil
}

// release serves Release and the release of Dataplane.Detach.
func (s *IPAMService) release(ctx context.Context, handle string, want []netip.Addr) ([]netip.Addr, error) {
	var ips []netip.Addr
	err := s.timed(ctx, "release", func(ctx context.Context) (err error) {
		ips, err = s.ipam.Release(ctx, handle, want)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.opts.Log.Info("released", "handle", handle, "ips", ips)
	return ips, nil
}

// AddPool creates a pool.
func (s *IPAMService) AddPool(ctx context.Context, r *petrelv1.AddPoolRequest) (*petrelv1.AddPoolResponse, error) {
	if err := validatePool(r.GetPool()); err != nil {
		return nil, err
	}
	var p ipam.Pool
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		p, err = s.ipam.AddPool(ctx, poolFromProto(r.GetPool()))
		return err
	})
	if err != nil {
		return nil, err
	}
	s.opts.Changed()
	s.opts.Log.Info("pool added", "pool", p.Name, "cidr", p.CIDR, "block_size", p.BlockSize)
	return &petrelv1.AddPoolResponse{Pool: poolToProto(p)}, nil
}

// ListPools lists the pools.
func (s *IPAMService) ListPools(ctx context.Context, _ *petrelv1.ListPoolsRequest) (*petrelv1.ListPoolsResponse, error) {
	var ps []ipam.Pool
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		ps, err = s.ipam.ListPools(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &petrelv1.ListPoolsResponse{}
	for _, p := range ps {
		out.Pools = append(out.Pools, poolToProto(p))
	}
	return out, nil
}

// DeletePool deletes an empty pool.
func (s *IPAMService) DeletePool(ctx context.Context, r *petrelv1.DeletePoolRequest) (*petrelv1.DeletePoolResponse, error) {
	if r.GetName() == "" {
		return nil, invalid("name", "must not be empty")
	}
	if err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) error {
		return s.ipam.DeletePool(ctx, r.GetName())
	}); err != nil {
		return nil, err
	}
	s.opts.Changed()
	s.opts.Log.Info("pool deleted", "pool", r.GetName())
	return &petrelv1.DeletePoolResponse{}, nil
}

// Usage reports utilisation per pool, host and block.
func (s *IPAMService) Usage(ctx context.Context, r *petrelv1.UsageRequest) (*petrelv1.UsageResponse, error) {
	var us []ipam.PoolUsage
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		us, err = s.ipam.Usage(ctx, r.GetPool())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &petrelv1.UsageResponse{Pools: usageToProto(us)}, nil
}

// ListAllocations lists allocations, optionally filtered by pool and handle.
func (s *IPAMService) ListAllocations(ctx context.Context, r *petrelv1.ListAllocationsRequest) (*petrelv1.ListAllocationsResponse, error) {
	var as []registry.Allocation
	err := withBudget(ctx, s.opts.Budget, func(ctx context.Context) (err error) {
		as, err = s.ipam.Allocations(ctx, r.GetPool(), r.GetHandle())
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &petrelv1.ListAllocationsResponse{}
	for _, a := range as {
		out.Allocations = append(out.Allocations, allocationToProto(a))
	}
	return out, nil
}

// timed runs an address operation under the budget, records its latency and
// signals a change on success.
func (s *IPAMService) timed(ctx context.Context, op string, fn func(context.Context) error) error {
	start := time.Now()
	err := withBudget(ctx, s.opts.Budget, fn)
	s.opts.Metrics.observeIPAM(op, err, time.Since(start))
	if err == nil {
		s.opts.Changed()
	}
	return err
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func poolFromProto(p *petrelv1.Pool) ipam.Pool {
	return ipam.Pool{
		Name:      p.GetName(),
		CIDR:      p.GetCidr(),
		BlockSize: int(p.GetBlockSize()),
		Disabled:  p.GetDisabled(),
		Labels:    p.GetLabels(),
	}
}

func poolToProto(p ipam.Pool) *petrelv1.Pool {
	return &petrelv1.Pool{
		Name:      p.Name,
		Cidr:      p.CIDR,
		BlockSize: int32(p.BlockSize),
		Disabled:  p.Disabled,
		Labels:    p.Labels,
	}
}

func usageToProto(us []ipam.PoolUsage) []*petrelv1.PoolUsage {
	out := make([]*petrelv1.PoolUsage, 0, len(us))
	for _, u := range us {
		pu := &petrelv1.PoolUsage{Pool: poolToProto(u.Pool), Capacity: u.Capacity, Allocated: u.Allocated}
		for _, b := range u.Blocks {
			pu.Blocks = append(pu.Blocks, &petrelv1.BlockUsage{
				Cidr: b.CIDR, Host: b.Host, Capacity: b.Capacity, Allocated: b.Allocated, Borrowed: b.Borrowed,
			})
		}
		out = append(out, pu)
	}
	return out
}

func allocationToProto(a registry.Allocation) *petrelv1.Allocation {
	pa := &petrelv1.Allocation{
		Ip:        a.IP,
		Handle:    a.Handle,
		Host:      a.Host,
		Pool:      a.Pool,
		Block:     a.Block,
		Netgroups: a.Netgroups,
		Labels:    a.Labels,
	}
	if !a.Created.IsZero() {
		pa.Created = timestamppb.New(a.Created)
	}
	return pa
}
