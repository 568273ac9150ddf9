package registry

import (
	"encoding/json"
	"fmt"
	"time"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Block is the record of a claimed block, stored as JSON under BlockKey. Host
// holds the block's affinity. Allocated counts the addresses held in the block
// (by its host and by borrowers); the IPAM updates it in the same transaction
// as the address keys, so the record's ModRevision serialises a block.
type Block struct {
	Pool      string    `json:"pool"`
	CIDR      string    `json:"cidr"`
	Host      string    `json:"host"`
	Allocated int       `json:"allocated"`
	Claimed   time.Time `json:"claimed"`
}

// Allocation is the record of one allocated address, stored as JSON under
// IPKey. Host is the host that holds the address; when it differs from the
// block's Host the address is borrowed and needs its own /32 (/128) route.
type Allocation struct {
	IP        string            `json:"ip"`
	Handle    string            `json:"handle"`
	Host      string            `json:"host"`
	Pool      string            `json:"pool"`
	Block     string            `json:"block"`
	Created   time.Time         `json:"created"`
	Netgroups []string          `json:"netgroups,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// EncodeJSON renders a Block or Allocation record.
func EncodeJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("registry: encode %T: %w", v, err)
	}
	return b, nil
}

// DecodeBlock parses a block record.
func DecodeBlock(b []byte) (Block, error) {
	var v Block
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("registry: decode block: %w", err)
	}
	return v, nil
}

// DecodeAllocation parses an allocation record.
func DecodeAllocation(b []byte) (Allocation, error) {
	var v Allocation
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("registry: decode allocation: %w", err)
	}
	return v, nil
}

// Snapshot is the cluster state an agent has read from etcd up to Revision.
// The agent's cluster watcher keeps one up to date and hands it to every
// reconciler (routes, policy); reconcilers must treat it as read-only.
type Snapshot struct {
	// Revision is the etcd revision the snapshot reflects.
	Revision int64
	// Hosts by host name (live hosts only: records vanish with their lease).
	Hosts map[string]*petrelv1.Host
	// Blocks by block CIDR.
	Blocks map[string]Block
	// Allocations by IP.
	Allocations map[string]Allocation
	// Endpoints by endpoint key (EndpointKey).
	Endpoints map[string]*petrelv1.Endpoint

	// HostsRevision, BlocksRevision, AllocationsRevision and
	// EndpointsRevision are the revisions of the last change to each map
	// (the listing revision after a full list), so that a reconciler can skip
	// work when nothing it reads has changed. Zero means unknown.
	HostsRevision       int64
	BlocksRevision      int64
	AllocationsRevision int64
	EndpointsRevision   int64
}
