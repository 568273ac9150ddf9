package ctl

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

// fakeIPAM serves fixed allocations; no Dataplane service is registered, so
// ListEndpoints answers Unimplemented.
type fakeIPAM struct {
	petrelv1grpc.UnimplementedIPAMServer
	allocs []*petrelv1.Allocation
}

func (f *fakeIPAM) ListAllocations(context.Context, *petrelv1.ListAllocationsRequest) (*petrelv1.ListAllocationsResponse, error) {
	return &petrelv1.ListAllocationsResponse{Allocations: f.allocs}, nil
}

type fakeDataplane struct {
	petrelv1grpc.UnimplementedDataplaneServer
	eps []*petrelv1.Endpoint
}

func (f *fakeDataplane) ListEndpoints(_ context.Context, r *petrelv1.ListEndpointsRequest) (*petrelv1.ListEndpointsResponse, error) {
	if r.GetHost() != "*" {
		return &petrelv1.ListEndpointsResponse{}, nil
	}
	return &petrelv1.ListEndpointsResponse{Endpoints: f.eps}, nil
}

func fakeServer(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	gs := grpc.NewServer()
	register(gs)
	return testutil.ServeGRPC(t, gs)
}

func TestCheck(t *testing.T) {
	old := timestamppb.New(time.Now().Add(-time.Hour))
	fresh := timestamppb.New(time.Now())
	allocs := []*petrelv1.Allocation{
		{Ip: "10.1.0.1", Handle: "live", Host: "h", Pool: "p", Created: old},
		{Ip: "10.1.0.2", Handle: "leaked", Host: "h", Pool: "p", Created: old},
		{Ip: "10.1.0.3", Handle: "starting", Host: "h", Pool: "p", Created: fresh},
		{Ip: "10.1.0.4", Handle: "by-container-id", Host: "h", Pool: "p", Created: old},
	}
	eps := []*petrelv1.Endpoint{
		{ContainerId: "c-live", Handle: "live"},
		{ContainerId: "by-container-id"},
	}
	t.Run("with registry", func(t *testing.T) {
		sock := fakeServer(t, func(gs *grpc.Server) {
			petrelv1grpc.RegisterIPAMServer(gs, &fakeIPAM{allocs: allocs})
			petrelv1grpc.RegisterDataplaneServer(gs, &fakeDataplane{eps: eps})
		})
		r := run(t, sock, "ipam", "check")
		if r.code != 1 {
			t.Fatalf("got exit %d, want 1 (a leak): %s %s", r.code, r.stdout, r.stderr)
		}
		out := norm(r.stdout)
		for _, want := range []string{"checked 4 allocations against 2 endpoints (grace 10m0s): 1 leaked", "10.1.0.2 leaked h p 1h0m", "release with: petrelctl ipam release --handle leaked"} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(out, "no endpoint registry") {
			t.Errorf("stdout says there is no registry:\n%s", r.stdout)
		}
	})
	t.Run("without registry", func(t *testing.T) {
		sock := fakeServer(t, func(gs *grpc.Server) {
			petrelv1grpc.RegisterIPAMServer(gs, &fakeIPAM{allocs: allocs})
		})
		r := run(t, sock, "ipam", "check", "-o", "json")
		if r.code != 1 {
			t.Fatalf("got exit %d, want 1: %s %s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{`"registry_available": false`, `"handle": "live"`, `"handle": "leaked"`} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %s:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, `"starting"`) {
			t.Errorf("an allocation inside the grace period is reported:\n%s", r.stdout)
		}
		r = run(t, sock, "ipam", "check")
		if !strings.Contains(r.stdout, "no endpoint registry") {
			t.Errorf("table output does not say the registry is missing:\n%s", r.stdout)
		}
	})
}
