package zone

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"unsafe"
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
	IP     netip.Addr // A, AAAA (never zoned)
	Target string     // SRV target FQDN
}

// Node is the record set of one name: a read-only view of the name's entry in
// the index. The zero Node is an absent name. Readers may keep and read a
// Node without locks; writers never change the bytes a Node refers to, they
// publish a new entry instead.
type Node struct {
	b []byte // count, then the records (see encodeEntry)
}

// Exists reports whether the name has any record.
func (n Node) Exists() bool { return len(n.b) > 0 }

// Has reports whether the node holds a record of type t.
func (n Node) Has(t uint16) bool {
	found := false
	n.each(func(rr RR, _ int32) bool {
		found = rr.Type == t
		return !found
	})
	return found
}

// AppendRRs appends the node's records to dst. SRV targets share the
// index's memory; nothing is allocated when dst has room.
func (n Node) AppendRRs(dst []RR) []RR {
	b := n.b
	if len(b) == 0 {
		return dst
	}
	cnt, k := binary.Uvarint(b)
	b = b[k:]
	prev := ""
	for range cnt {
		kind := b[0]
		// The reference count: one byte unless it is 128 or more.
		i := 1
		for b[i] >= 0x80 {
			i++
		}
		b = b[i+1:]
		switch kind {
		case kindA:
			dst = append(dst, RR{Type: TypeA, IP: netip.AddrFrom4([4]byte(b[:4]))})
			b = b[4:]
		case kindAAAA:
			dst = append(dst, RR{Type: TypeAAAA, IP: netip.AddrFrom16([16]byte(b[:16]))})
			b = b[16:]
		default:
			if l := int(b[2]); l > 0 {
				prev = unsafe.String(&b[3], l)
			}
			dst = append(dst, RR{Type: TypeSRV, Port: binary.BigEndian.Uint16(b), Target: prev})
			b = b[3+int(b[2]):]
		}
	}
	return dst
}

// Record kinds in an encoded entry.
const (
	kindA    = 0
	kindAAAA = 1
	kindSRV  = 2
)

// each decodes the records in order, with their reference counts, until f
// returns false. The bytes were written by encodeEntry, so they are trusted.
func (n Node) each(f func(rr RR, refs int32) bool) {
	b := n.b
	if len(b) == 0 {
		return
	}
	cnt, k := binary.Uvarint(b)
	b = b[k:]
	prev := ""
	for range cnt {
		kind := b[0]
		refs, k := binary.Uvarint(b[1:])
		b = b[1+k:]
		var rr RR
		switch kind {
		case kindA:
			rr = RR{Type: TypeA, IP: netip.AddrFrom4([4]byte(b[:4]))}
			b = b[4:]
		case kindAAAA:
			rr = RR{Type: TypeAAAA, IP: netip.AddrFrom16([16]byte(b[:16]))}
			b = b[16:]
		default:
			l := int(b[2])
			rr = RR{Type: TypeSRV, Port: binary.BigEndian.Uint16(b), Target: prev}
			if l > 0 {
				rr.Target = unsafe.String(&b[3], l)
				prev = rr.Target
			}
			b = b[3+l:]
		}
		if !f(rr, int32(refs)) {
			return
		}
	}
}

// encodeEntry appends the entry of name: the name's length and bytes, the
// length of the record part, then the record part: the record count and each
// record as kind, reference count and value (A: 4 bytes, AAAA: 16, SRV: port,
// target length, target; length 0 repeats the previous SRV's target). Names
// and targets are 1 to 255 bytes long (see validName).
func encodeEntry(dst []byte, name string, rrs []RR, refs []int32) []byte {
	dst = append(dst, byte(len(name)))
	dst = append(dst, name...)
	size := uvarintLen(uint64(len(rrs)))
	prev := ""
	for i, rr := range rrs {
		size += 1 + uvarintLen(uint64(refs[i]))
		switch rr.Type {
		case TypeA:
			size += 4
		case TypeAAAA:
			size += 16
		default:
			size += 3
			if rr.Target != prev {
				size += len(rr.Target)
				prev = rr.Target
			}
		}
	}
	prev = ""
	dst = binary.AppendUvarint(dst, uint64(size))
	dst = binary.AppendUvarint(dst, uint64(len(rrs)))
	for i, rr := range rrs {
		switch rr.Type {
		case TypeA:
			dst = append(dst, kindA)
			dst = binary.AppendUvarint(dst, uint64(refs[i]))
			b := rr.IP.As4()
			dst = append(dst, b[:]...)
		case TypeAAAA:
			dst = append(dst, kindAAAA)
			dst = binary.AppendUvarint(dst, uint64(refs[i]))
			b := rr.IP.As16()
			dst = append(dst, b[:]...)
		default:
			dst = append(dst, kindSRV)
			dst = binary.AppendUvarint(dst, uint64(refs[i]))
			dst = binary.BigEndian.AppendUint16(dst, rr.Port)
			if rr.Target == prev {
				dst = append(dst, 0)
				break
			}
			dst = append(dst, byte(len(rr.Target)))
			dst = append(dst, rr.Target...)
			prev = rr.Target
		}
	}
	return dst
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// entryAt returns the name, the node and the total size of the entry at off.
func entryAt(data []byte, off uint32) (name string, n Node, size int) {
	b := data[off:]
	l := int(b[0])
	name = unsafe.String(&b[1], l)
	rl, k := binary.Uvarint(b[1+l:])
	start := 1 + l + k
	return name, Node{b: b[start : start+int(rl) : start+int(rl)]}, start + int(rl)
}

const nShards = 256

// shard holds the entries of the names that hash to it in one byte slice and
// finds them through an open-addressing table of offsets, so that the whole
// index holds no pointers for the garbage collector to follow and costs
// about the size of its names and records.
type shard struct {
	mu sync.RWMutex
	// slots is a linear-probing table (a power of two long, at most 3/4
	// full): 0 is empty, else the top 32 bits of the name's hash above the
	// entry's offset in data plus one. A name's home slot is its hash's top
	// bits modulo the length.
	slots []uint64
	n     int // names
	// data holds the entries. Published bytes are never written again: a
	// writer appends new entries past len(data), or copies the live entries
	// to a new array, and then publishes the longer or new slice.
	data []byte
	dead int // bytes of replaced entries in data
}

// Index maps lower-case FQDNs (with the trailing dot) to nodes. A lookup
// holds one shard's read lock while it probes the table; a writer publishes
// whole entries per name, so a query never waits for more than a shard's
// table updates.
type Index struct {
	yield  func()
	seed   maphash.Seed
	weak   bool // tests: hashes of 4 bits, so that names collide
	shards [nShards]shard
}

func newIndex(yield func()) *Index {
	return &Index{seed: maphash.MakeSeed(), yield: yield}
}

func (x *Index) hash(name string) uint64 {
	h := maphash.String(x.seed, name)
	if x.weak {
		h &= 0xF
	}
	return h
}

func slotOf(h uint64, off uint32) uint64 { return (h >> 32 << 32) | (uint64(off) + 1) }
func slotOff(v uint64) uint32            { return uint32(v) - 1 }

// find returns the slot holding name (and true), or the empty slot where it
// would go. The caller holds the lock or is the writer.
func (s *shard) find(name string, h uint64) (int, bool) {
	if len(s.slots) == 0 {
		return -1, false
	}
	mask := uint64(len(s.slots) - 1)
	i := h >> 32 & mask
	for {
		v := s.slots[i]
		if v == 0 {
			return int(i), false
		}
		if v>>32 == h>>32 {
			if got, _, _ := entryAt(s.data, slotOff(v)); got == name {
				return int(i), true
			}
		}
		i = (i + 1) & mask
	}
}

// Lookup returns the node of name (the zero Node when absent).
func (x *Index) Lookup(name string) Node {
	h := x.hash(name)
	s := &x.shards[h%nShards]
	s.mu.RLock()
	var n Node
	if i, ok := s.find(name, h); ok {
		_, n, _ = entryAt(s.data, slotOff(s.slots[i]))
	}
	s.mu.RUnlock()
	return n
}

// LookupBytes is Lookup for a name held in a byte slice, without allocating.
func (x *Index) LookupBytes(name []byte) Node {
	return x.Lookup(unsafe.String(unsafe.SliceData(name), len(name)))
}

// Range calls f for every name (under the shard's read lock).
func (x *Index) Range(f func(name string, n Node)) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		for _, v := range s.slots {
			if v != 0 {
				name, n, _ := entryAt(s.data, slotOff(v))
				f(name, n)
			}
		}
		s.mu.RUnlock()
	}
}

// NamedNode is a name with its node.
type NamedNode struct {
	Name string
	Node Node
}

// Sorted returns every name with its node, sorted by name. The names and
// nodes are views of the index (nothing is copied), so this costs one slice.
func (x *Index) Sorted() []NamedNode {
	out := make([]NamedNode, 0, x.Len())
	x.Range(func(name string, n Node) { out = append(out, NamedNode{name, n}) })
	slices.SortFunc(out, func(a, b NamedNode) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Len returns the number of names.
func (x *Index) Len() int {
	n := 0
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		n += s.n
		s.mu.RUnlock()
	}
	return n
}

// Bytes returns the size of the live entries and of the arrays holding them
// (entries and tables).
func (x *Index) Bytes() (live, total int) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		live += len(s.data) - s.dead
		total += cap(s.data) + 8*len(s.slots)
		s.mu.RUnlock()
	}
	return live, total
}

// txn collects record additions and removals and publishes each touched
// name once. Only one txn may be open at a time (the zone's writer lock).
type txn struct {
	x       *Index
	pending map[string]*pnode
}

// pnode is a name's record set while a txn changes it.
type pnode struct {
	rrs  []RR
	refs []int32 // how many sources contribute each RR
}

func (x *Index) begin() *txn { return &txn{x: x, pending: map[string]*pnode{}} }

func (t *txn) node(name string) *pnode {
	if n, ok := t.pending[name]; ok {
		return n
	}
	n := &pnode{}
	t.x.Lookup(name).each(func(rr RR, refs int32) bool {
		n.rrs = append(n.rrs, rr)
		n.refs = append(n.refs, refs)
		return true
	})
	t.pending[name] = n
	return n
}

func (t *txn) add(name string, rr RR) {
	n := t.node(name)
	for i := range n.rrs {
		if n.rrs[i] == rr {
			n.refs[i]++
			return
		}
	}
	n.rrs = append(n.rrs, rr)
	n.refs = append(n.refs, 1)
}

func (t *txn) del(name string, rr RR) {
	n := t.node(name)
	for i := range n.rrs {
		if n.rrs[i] == rr {
			if n.refs[i]--; n.refs[i] <= 0 {
				n.rrs = append(n.rrs[:i], n.rrs[i+1:]...)
				n.refs = append(n.refs[:i], n.refs[i+1:]...)
			}
			return
		}
	}
}

// change is one name's new entry for a shard (enc empty: remove the name).
type change struct {
	name string
	h    uint64
	enc  []byte
}

// commit publishes the touched names; it returns how many names changed.
func (t *txn) commit() int {
	if len(t.pending) == 0 {
		return 0
	}
	var byShard [nShards][]change
	var enc []byte
	for name, n := range t.pending {
		h := t.x.hash(name)
		c := change{name: name, h: h}
		if len(n.rrs) > 0 {
			start := len(enc)
			enc = encodeEntry(enc, name, n.rrs, n.refs)
			c.enc = enc[start:len(enc):len(enc)]
		}
		byShard[h%nShards] = append(byShard[h%nShards], c)
	}
	for i := range byShard {
		if len(byShard[i]) == 0 {
			continue
		}
		if i%4 == 3 {
			t.x.yield()
		}
		t.x.shards[i].publish(byShard[i])
	}
	return len(t.pending)
}

// publish stores the changed entries. The caller is the only writer, so it
// reads the shard without the lock and takes it only to change what readers
// see.
func (s *shard) publish(cs []change) {
	size, names := 0, s.n
	replaced := 0
	for _, c := range cs {
		size += len(c.enc)
		i, ok := s.find(c.name, c.h)
		if ok {
			_, _, old := entryAt(s.data, slotOff(s.slots[i]))
			replaced += old
			names--
		}
		if len(c.enc) > 0 {
			names++
		}
	}
	if cap(s.data)-len(s.data) < size || 4*names > 3*len(s.slots) {
		s.rebuild(cs, names, replaced, size)
		return
	}
	base := len(s.data)
	data := s.data
	for _, c := range cs {
		data = append(data, c.enc...) // past len(s.data): no reader looks there
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.dead = data, s.dead+replaced
	off := base
	for _, c := range cs {
		i, ok := s.find(c.name, c.h)
		switch {
		case len(c.enc) > 0:
			s.slots[i] = slotOf(c.h, uint32(off))
			off += len(c.enc)
			if !ok {
				s.n++
			}
		case ok:
			s.deleteSlot(i)
			s.n--
		}
	}
}

// rebuild copies the entries that stay and the changed ones to new arrays,
// with room for an eighth more, and publishes them at once.
func (s *shard) rebuild(cs []change, names, replaced, size int) {
	changed := make(map[string]bool, len(cs))
	for _, c := range cs {
		changed[c.name] = true
	}
	n := 8
	for 4*names > 3*n {
		n *= 2
	}
	ns := &shard{slots: make([]uint64, n), data: make([]byte, 0, (len(s.data)-s.dead-replaced+size)*9/8+256)}
	for _, v := range s.slots {
		if v == 0 {
			continue
		}
		name, _, esize := entryAt(s.data, slotOff(v))
		if changed[name] {
			continue
		}
		ns.insert(v, s.data[slotOff(v):int(slotOff(v))+esize])
	}
	for _, c := range cs {
		if len(c.enc) > 0 {
			ns.insert(c.h, c.enc)
		}
	}
	s.mu.Lock()
	s.slots, s.data, s.n, s.dead = ns.slots, ns.data, ns.n, 0
	s.mu.Unlock()
}

// insert appends an entry for a name known to be absent; h's top 32 bits
// place it.
func (s *shard) insert(h uint64, enc []byte) {
	mask := uint64(len(s.slots) - 1)
	i := h >> 32 & mask
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = slotOf(h, uint32(len(s.data)))
	s.data = append(s.data, enc...)
	s.n++
}

// deleteSlot empties slot i and moves later entries of its probe run back,
// so that every name stays reachable from its home slot without tombstones.
func (s *shard) deleteSlot(i int) {
	mask := len(s.slots) - 1
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		home := int(s.slots[j]>>32) & mask
		// Move j to i when its home is not in (i, j] (cyclically).
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = 0
}
