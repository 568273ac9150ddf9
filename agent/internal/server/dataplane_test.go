package server

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/dataplane"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// fakeDataplane records the spec it was given and returns err.
type fakeDataplane struct {
	spec dataplane.Spec
	err  error
}

func (f *fakeDataplane) Attach(_ context.Context, s dataplane.Spec) (dataplane.Result, error) {
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
	s := NewDataplaneService(f, Options{})
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
			s := NewDataplaneService(&fakeDataplane{err: tc.err}, Options{})
			_, err := s.Attach(ctx, tc.req)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tc.code)
			}
			if got := FieldOf(err); got != tc.field {
				t.Errorf("field = %q, want %q", got, tc.field)
			}
		})
	}
	s := NewDataplaneService(&fakeDataplane{err: fmt.Errorf("x: %w", dataplane.ErrNotFound)}, Options{})
	if _, err := s.GetEndpoint(ctx, &petrelv1.GetEndpointRequest{ContainerId: "zz"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetEndpoint = %v, want NotFound", err)
	}
}
