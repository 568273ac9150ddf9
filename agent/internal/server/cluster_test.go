package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-net/petrel/agent/internal/cluster"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// fakeState is a ClusterState with canned answers.
type fakeState struct {
	view    cluster.View
	waitErr error
	removed string
}

func (f *fakeState) Status() cluster.View { return f.view }

func (f *fakeState) WaitConverged(ctx context.Context, r int64) (int64, cluster.View, error) {
	if f.waitErr != nil {
		<-ctx.Done()
		return r, f.view, f.waitErr
	}
	return r, f.view, nil
}

func (f *fakeState) RemoveHost(_ context.Context, name string) ([]string, error) {
	if name == "bad/name" {
		return nil, fmt.Errorf("%w: %q", cluster.ErrHostName, name)
	}
	f.removed = name
	return []string{"10.1.0.0/26"}, nil
}

func TestClusterService(t *testing.T) {
	view := cluster.View{Revision: 9, Watermark: 7, Hosts: []cluster.HostState{
		{Host: &petrelv1.Host{Name: "a"}, Applied: 9, Live: true},
		{Host: &petrelv1.Host{Name: "b"}, Applied: 7, Lag: 2, Live: true},
	}}
	ctx := context.Background()

	t.Run("without state", func(t *testing.T) {
		s := &ClusterService{}
		if _, err := s.ListHosts(ctx, &petrelv1.ListHostsRequest{}); status.Code(err) != codes.Unimplemented {
			t.Errorf("got %v, want Unimplemented", err)
		}
	})
	t.Run("list hosts", func(t *testing.T) {
		s := &ClusterService{State: &fakeState{view: view}}
		resp, err := s.ListHosts(ctx, &petrelv1.ListHostsRequest{})
		if err != nil || len(resp.GetHosts()) != 2 || resp.GetHosts()[1].GetLag() != 2 {
			t.Errorf("got %v, %v; want two hosts, b lagging by 2", resp, err)
		}
	})
	t.Run("wait converged", func(t *testing.T) {
		s := &ClusterService{State: &fakeState{view: view}}
		resp, err := s.WaitConverged(ctx, &petrelv1.WaitConvergedRequest{Revision: 7})
		if err != nil || resp.GetRevision() != 7 {
			t.Errorf("got %v, %v; want revision 7", resp, err)
		}
	})
	t.Run("wait converged times out naming hosts", func(t *testing.T) {
		s := &ClusterService{State: &fakeState{view: view, waitErr: fmt.Errorf("%w: hosts behind revision 9: b", cluster.ErrNotConverged)}}
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := s.WaitConverged(ctx, &petrelv1.WaitConvergedRequest{})
		if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded || st.Message() == "" {
			t.Errorf("got %v, want DeadlineExceeded naming b", err)
		}
	})
	t.Run("negative revision", func(t *testing.T) {
		s := &ClusterService{State: &fakeState{view: view}}
		_, err := s.WaitConverged(ctx, &petrelv1.WaitConvergedRequest{Revision: -1})
		if status.Code(ToStatus(err)) != codes.InvalidArgument {
			t.Errorf("got %v, want InvalidArgument", err)
		}
	})
	t.Run("remove host", func(t *testing.T) {
		f := &fakeState{view: view}
		s := &ClusterService{State: f}
		resp, err := s.RemoveHost(ctx, &petrelv1.RemoveHostRequest{Name: "b"})
		if err != nil || f.removed != "b" || len(resp.GetFreedBlocks()) != 1 {
			t.Errorf("got %v, %v (removed %q); want b removed, one block freed", resp, err, f.removed)
		}
		for _, name := range []string{"", "bad/name"} {
			_, err := s.RemoveHost(ctx, &petrelv1.RemoveHostRequest{Name: name})
			if status.Code(ToStatus(err)) != codes.InvalidArgument {
				t.Errorf("RemoveHost(%q) = %v, want InvalidArgument", name, err)
			}
		}
	})
}
