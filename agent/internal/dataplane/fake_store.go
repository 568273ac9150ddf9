package dataplane

import (
	"context"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// FakeStore is an in-memory Store for tests. Revisions grow by one per write.
type FakeStore struct {
	mu   sync.Mutex
	rev  int64
	recs map[string]StoredEndpoint
	// Puts counts successful Put calls.
	Puts int
}

var _ Store = (*FakeStore)(nil)

// NewFakeStore returns an empty FakeStore.
func NewFakeStore() *FakeStore { return &FakeStore{recs: map[string]StoredEndpoint{}} }

// Get implements Store.
func (s *FakeStore) Get(_ context.Context, host, containerID, ifname string) (*petrelv1.Endpoint, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[registry.EndpointKey(host, containerID, ifname)]
	if !ok {
		return nil, 0, nil
	}
	return proto.Clone(r.Endpoint).(*petrelv1.Endpoint), r.Revision, nil
}

// Put implements Store.
func (s *FakeStore) Put(_ context.Context, ep *petrelv1.Endpoint, prevRev int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := registry.EndpointKey(ep.GetHost(), ep.GetContainerId(), ep.GetIfname())
	if s.recs[key].Revision != prevRev {
		return 0, ErrConflict
	}
	s.rev++
	s.recs[key] = StoredEndpoint{Endpoint: proto.Clone(ep).(*petrelv1.Endpoint), Revision: s.rev}
	s.Puts++
	return s.rev, nil
}

// Create implements Store.
func (s *FakeStore) Create(_ context.Context, ep *petrelv1.Endpoint) (int64, *petrelv1.Endpoint, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := registry.EndpointKey(ep.GetHost(), ep.GetContainerId(), ep.GetIfname())
	if r, ok := s.recs[key]; ok {
		return 0, proto.Clone(r.Endpoint).(*petrelv1.Endpoint), r.Revision, nil
	}
	s.rev++
	s.recs[key] = StoredEndpoint{Endpoint: proto.Clone(ep).(*petrelv1.Endpoint), Revision: s.rev}
	s.Puts++
	return s.rev, nil, 0, nil
}

// Delete implements Store.
func (s *FakeStore) Delete(_ context.Context, host, containerID, ifname string, rev int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := registry.EndpointKey(host, containerID, ifname)
	r, ok := s.recs[key]
	if rev > 0 && r.Revision != rev {
		return false, ErrConflict
	}
	if !ok {
		return false, nil
	}
	delete(s.recs, key)
	s.rev++
	return true, nil
}

// List implements Store.
func (s *FakeStore) List(_ context.Context, host, containerID string) ([]StoredEndpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.recs))
	for k := range s.recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []StoredEndpoint
	for _, k := range keys {
		r := s.recs[k]
		if host != "" && r.Endpoint.GetHost() != host {
			continue
		}
		if containerID != "" && r.Endpoint.GetContainerId() != containerID {
			continue
		}
		out = append(out, StoredEndpoint{Endpoint: proto.Clone(r.Endpoint).(*petrelv1.Endpoint), Revision: r.Revision})
	}
	return out, nil
}
