package cluster

import (
	"testing"

	"github.com/petrel-net/petrel/agent/registry"
)

// FuzzApplyRecord feeds arbitrary keys and values to the record decoders of
// the watch loop: nothing may panic, and a put followed by a delete of the
// same key leaves the snapshot empty.
func FuzzApplyRecord(f *testing.F) {
	// A host record.
	f.Add(registry.HostKey("h1"), []byte(`{"name":"h1","address":"10.99.0.1","subnet":"10.99.0.0/24","mtu":1500}`))
	// A block record.
	f.Add(registry.BlockKey("p", "10.1.0.0/26"), []byte(`{"pool":"p","cidr":"10.1.0.0/26","host":"h1","allocated":3}`))
	// An allocation record, borrowed.
	f.Add(registry.IPKey("p", "10.1.0.5"), []byte(`{"ip":"10.1.0.5","host":"h2","block":"10.1.0.0/26"}`))
	// An endpoint record.
	f.Add(registry.EndpointKey("h1", "c1", "eth0"), []byte(`{"container_id":"c1","ips":["10.1.0.5"]}`))
	// An applied revision, and garbage.
	f.Add(registry.AppliedKey("h1"), []byte("42"))
	f.Add(registry.AppliedKey("h1"), []byte("-x"))
	f.Add(registry.BlocksPrefix, []byte("{"))
	f.Add(registry.Prefix+"unknown/x", []byte{0xff})
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		s := newSnapshot()
		applied := map[string]int64{}
		applyPut(s, applied, key, val)
		applyDelete(s, applied, key)
		if n := len(s.Hosts) + len(s.Blocks) + len(s.Allocations) + len(s.Endpoints) + len(applied); n != 0 {
			t.Errorf("after put+delete of %q: %d records left", key, n)
		}
	})
}
