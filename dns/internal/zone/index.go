package zone

import (
	"hash/maphash"
	"net/netip"
	"sync"
)

// Record types kept in the index (the DNS type codes).
const (
	TypeA    uint16 = 1
	TypeAAAA uint16 = 28
	TypeSRV  uint16 = 33
)

// RR is one record value under a name.
type RR struct {
	Type   uint16
	Port   uint16     // SRV
	IP     netip.Addr // A, AAAA
	Target string     // SRV target FQDN
}

// Node is the immutable record set of one name. Readers may keep and read a
// *Node without locks; writers replace it.
type Node struct {
	RRs  []RR
	refs []int32 // how many sources contribute each RR
}

// Has reports whether the node holds a record of type t.
func (n *Node) Has(t uint16) bool {
	for i := range n.RRs {
		if n.RRs[i].Type == t {
			return true
		}
	}
	return false
}

const nShards = 256

type shard struct {
	mu sync.RWMutex
	m  map[string]*Node
}

// Index maps lower-case FQDNs (with the trailing dot) to nodes. Lookups lock
// one shard for a map read; writers publish whole nodes per name, so a query
// never waits for more than one map assignment.
type Index struct {
	yield  func()
	seed   maphash.Seed
	shards [nShards]shard
}

func newIndex(yield func()) *Index {
	x := &Index{seed: maphash.MakeSeed(), yield: yield}
	for i := range x.shards {
		x.shards[i].m = map[string]*Node{}
	}
	return x
}

func (x *Index) shardOf(name string) *shard {
	return &x.shards[maphash.String(x.seed, name)%nShards]
}

// Lookup returns the node of name or nil.
func (x *Index) Lookup(name string) *Node {
	s := x.shardOf(name)
	s.mu.RLock()
	n := s.m[name]
	s.mu.RUnlock()
	return n
}

// LookupBytes is Lookup for a name held in a byte slice, without allocating.
func (x *Index) LookupBytes(name []byte) *Node {
	s := &x.shards[maphash.Bytes(x.seed, name)%nShards]
	s.mu.RLock()
	n := s.m[string(name)]
	s.mu.RUnlock()
	return n
}

// Range calls f for every name (under the shard's read lock).
func (x *Index) Range(f func(name string, n *Node)) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		for k, v := range s.m {
			f(k, v)
		}
		s.mu.RUnlock()
	}
}

// Len returns the number of names.
func (x *Index) Len() int {
	n := 0
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// txn collects record additions and removals and publishes each touched
// name once.
type txn struct {
	x       *Index
	pending map[string]*Node
}

func (x *Index) begin() *txn { return &txn{x: x, pending: map[string]*Node{}} }

func (t *txn) node(name string) *Node {
	if n, ok := t.pending[name]; ok {
		return n
	}
	n := &Node{}
	if cur := t.x.Lookup(name); cur != nil {
		n.RRs = append(make([]RR, 0, len(cur.RRs)+1), cur.RRs...)
		n.refs = append(make([]int32, 0, len(cur.refs)+1), cur.refs...)
	}
	t.pending[name] = n
	return n
}

func (t *txn) add(name string, rr RR) {
	n := t.node(name)
	for i := range n.RRs {
		if n.RRs[i] == rr {
			n.refs[i]++
			return
		}
	}
	n.RRs = append(n.RRs, rr)
	n.refs = append(n.refs, 1)
}

func (t *txn) del(name string, rr RR) {
	n := t.node(name)
	for i := range n.RRs {
		if n.RRs[i] == rr {
			if n.refs[i]--; n.refs[i] <= 0 {
				n.RRs = append(n.RRs[:i], n.RRs[i+1:]...)
				n.refs = append(n.refs[:i], n.refs[i+1:]...)
			}
			return
		}
	}
}

// commit publishes the touched names; it returns how many names changed.
func (t *txn) commit() int {
	if len(t.pending) == 0 {
		return 0
	}
	var byShard [nShards][]string
	for name := range t.pending {
		i := maphash.String(t.x.seed, name) % nShards
		byShard[i] = append(byShard[i], name)
	}
	for i := range byShard {
		if len(byShard[i]) == 0 {
			continue
		}
		if i%4 == 3 {
			t.x.yield()
		}
		s := &t.x.shards[i]
		s.mu.Lock()
		for _, name := range byShard[i] {
			n := t.pending[name]
			if len(n.RRs) == 0 {
				delete(s.m, name)
			} else {
				s.m[name] = n
			}
		}
		s.mu.Unlock()
	}
	return len(t.pending)
}
