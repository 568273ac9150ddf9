package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	"github.com/petrel-net/petrel/agent/internal/ipam"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// fakeDataplane records the spec it was given and returns err.
type fakeDataplane struct {
	spec dataplane.Spec
	err  error
}

func (f *fakeDataplane) Attach(ctx context.Context, s dataplane.Spec) (dataplane.Result, error) {
	if s.Allocate != nil {
		// As the real one: the allocator's error unchanged, its addresses
		// after the static ones, none twice.
		got, err := s.Allocate(ctx)
		if err != nil {
			return dataplane.Result{}, err
		}
		for _, a := range got {
			if !slices.Contains(s.IPs, a) {
				s.IPs = append(s.IPs, a)
			}
		}
	}
	f.spec = s
	if f.err != nil {
		return dataplane.Result{}, f.err
	}
	ep := &petrelv1.Endpoint{ContainerId: s.ContainerID, Ifname: "eth0", HostIfname: dataplane.HostIfName(s.ContainerID, "eth0")}
	for _, a := range s.IPs {
		ep.Ips = append(ep.Ips, a.String())
	}
	return dataplane.Result{Endpoint: ep, MTU: 1450, GatewayV4: dataplane.GatewayV4, GatewayV6: dataplane.GatewayV6, Changed: true}, nil
}

func (f *fakeDataplane) Detach(context.Context, string, string, string) (bool, error) {
	return true, f.err
}

func (f *fakeDataplane) Check(context.Context, string, string, string, []netip.Addr) ([]string, error) {
	return []string{"host veth x missing"}, f.err
}

func (f *fakeDataplane) ListEndpoints(context.Context, string) ([]*petrelv1.Endpoint, error) {
	return []*petrelv1.Endpoint{{ContainerId: "a"}}, f.err
}

func (f *fakeDataplane) GetEndpoint(_ context.Context, id string) ([]*petrelv1.Endpoint, error) {
	if f.err != nil {
		return nil, f.err
	}
	return []*petrelv1.Endpoint{{ContainerId: id}}, nil
}

func TestDataplaneService(t *testing.T) {
	ctx := context.Background()
	f := &fakeDataplane{}
	s := NewDataplaneService(f, nil, Options{})
	resp, err := s.Attach(ctx, &petrelv1.AttachRequest{
		Endpoint: &petrelv1.Endpoint{ContainerId: "c1", Ips: []string{"10.0.0.2", "fd00::2"}, Handle: "h", Source: petrelv1.Source_SOURCE_CNI},
		Pid:      42,
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.spec.PID != 42 || f.spec.Handle != "h" || len(f.spec.IPs) != 2 || f.spec.Source != petrelv1.Source_SOURCE_CNI {
		t.Errorf("spec = %+v", f.spec)
	}
	if resp.GetGateway() != "169.254.1.1" || resp.GetIpv6Gateway() != "fe80::ecee:eeff:feee:eeee" || resp.GetMtu() != 1450 {
		t.Errorf("response = %v", resp)
	}
	if r, err := s.Check(ctx, &petrelv1.CheckRequest{ContainerId: "c1"}); err != nil || len(r.GetProblems()) != 1 {
		t.Errorf("Check = %v, %v", r, err)
	}
	if r, err := s.Detach(ctx, &petrelv1.DetachRequest{ContainerId: "c1"}); err != nil || !r.GetRemoved() {
		t.Errorf("Detach = %v, %v", r, err)
	}
}

func TestDataplaneServiceErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		req   *petrelv1.AttachRequest
		err   error
		code  codes.Code
		field string
	}{
		{"no endpoint", &petrelv1.AttachRequest{}, nil, codes.InvalidArgument, "endpoint"},
		{"bad ip", &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c", Ips: []string{"nope"}}}, nil, codes.InvalidArgument, "endpoint.ips[0]"},
		{"field error", &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c"}},
			&dataplane.InvalidArgumentError{Field: "netns", Reason: "need a netns path or a pid"}, codes.InvalidArgument, "netns"},
		{"netns gone", &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c"}},
			fmt.Errorf("x: %w", dataplane.ErrNetnsNotFound), codes.FailedPrecondition, ""},
		{"ifname in use", &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c"}},
			fmt.Errorf("x: %w", dataplane.ErrIfnameInUse), codes.AlreadyExists, ""},
		{"conflict", &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c"}},
			fmt.Errorf("x: %w", dataplane.ErrConflict), codes.Aborted, ""},
		{"unsupported", &petrelv1.AttachRequest{Endpoint: &petrelv1.Endpoint{ContainerId: "c"}},
			dataplane.ErrUnsupported, codes.Unimplemented, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewDataplaneService(&fakeDataplane{err: tc.err}, nil, Options{})
			_, err := s.Attach(ctx, tc.req)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.code)
			}
			if got := FieldOf(err); got != tc.field {
				t.Errorf("field = %q, want %q", got, tc.field)
			}
		})
	}
	s := NewDataplaneService(&fakeDataplane{err: fmt.Errorf("x: %w", dataplane.ErrNotFound)}, nil, Options{})
	if _, err := s.GetEndpoint(ctx, &petrelv1.GetEndpointRequest{ContainerId: "zz"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetEndpoint = %v, want NotFound", err)
	}
}

// TestAddRemove checks the combined calls CNI uses: Add hands the allocated
// addresses to the dataplane and is idempotent; Remove frees them.
func TestAddRemove(t *testing.T) {
	ctx := ctxT(t)
	_, c := testutil.Etcd(t)
	a, err := ipam.New(c, "host-a")
	if err != nil {
		t.Fatal(err)
	}
	ipamSvc := NewIPAMService(a, Options{})
	if _, err := ipamSvc.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Cidr: "10.244.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	f := &fakeDataplane{}
	s := NewDataplaneService(f, ipamSvc, Options{})
	req := &petrelv1.AddRequest{
		Attach: &petrelv1.AttachRequest{
			Endpoint: &petrelv1.Endpoint{ContainerId: "c1", Handle: "net:c1:eth0"},
			Netns:    "/run/netns/x",
		},
		Allocate: &petrelv1.AllocateRequest{NumIpv4: 2},
	}
	resp, err := s.Add(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	ips := resp.GetEndpoint().GetIps()
	if len(ips) != 2 || len(f.spec.IPs) != 2 || f.spec.Handle != "net:c1:eth0" {
		t.Fatalf("attached with %v (spec %+v), want two allocated addresses", ips, f.spec)
	}
	again, err := s.Add(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.GetEndpoint().GetIps(); !slices.Equal(got, ips) {
		t.Errorf("repeated add got %v, want %v", got, ips)
	}
	rm := &petrelv1.RemoveRequest{Detach: &petrelv1.DetachRequest{ContainerId: "c1", Ifname: "eth0"}, ReleaseHandle: "net:c1:eth0"}
	d, err := s.Remove(ctx, rm)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.GetReleased(); len(got) != 2 {
		t.Errorf("released %v, want both addresses", got)
	}
	if left, err := a.Allocations(ctx, "", "net:c1:eth0"); err != nil || len(left) != 0 {
		t.Errorf("allocations left: %v, %v", left, err)
	}
	// A second DEL succeeds and releases nothing.
	if d, err := s.Remove(ctx, rm); err != nil || len(d.GetReleased()) != 0 {
		t.Errorf("second remove = %v, %v", d, err)
	}
	// A failed detach keeps the addresses.
	if _, err := s.Add(ctx, req); err != nil {
		t.Fatal(err)
	}
	f.err = dataplane.ErrConflict
	if _, err := s.Remove(ctx, rm); status.Code(err) != codes.Aborted {
		t.Errorf("remove with a failing detach: %v, want Aborted", err)
	}
	if left, err := a.Allocations(ctx, "", "net:c1:eth0"); err != nil || len(left) != 2 {
		t.Errorf("allocations after a failed remove: %v, %v; want both kept", left, err)
	}
	f.err = nil
	if _, err := s.Remove(ctx, &petrelv1.RemoveRequest{Detach: rm.Detach}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("remove without a handle: %v, want InvalidArgument", err)
	}
	if _, err := s.Add(ctx, &petrelv1.AddRequest{Attach: req.Attach}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("add without allocate: %v, want InvalidArgument", err)
	}
	// Without an allocator both are Unimplemented, so callers fall back.
	bare := NewDataplaneService(f, nil, Options{})
	if _, err := bare.Add(ctx, req); status.Code(err) != codes.Unimplemented {
		t.Errorf("add with no allocator: %v, want Unimplemented", err)
	}
	if _, err := bare.Remove(ctx, rm); status.Code(err) != codes.Unimplemented {
		t.Errorf("remove with no allocator: %v, want Unimplemented", err)
	}
}
