package routes

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// model is the desired state of one host together with an index that lets it
// follow the registry record by record: for every prefix the records asking
// for a route to it, for every host the records routed through it, for every
// block the addresses naming it. The records themselves stay in the snapshot;
// the index only says which prefixes a changed record can affect, and
// resolve recomputes exactly those. Full (buildModel) and incremental
// (update) computations share resolve, so both give the same answer.
//
// Most addresses lie in their own host's block and need no route: for those
// the index holds one entry (block -> address), so that a change of the
// block's owner finds them. Only the few that need a route of their own
// (borrowed) are indexed by holder.
//
// Precedence, when several records map onto one prefix: a borrowed address
// beats a block (its /32 is more specific in intent), and among records of
// one kind the lowest key wins. Records the index cannot place (an
// unparsable CIDR or address) are ignored, as are hosts without a usable
// address.
type model struct {
	self Self

	blockHost  map[string]string              // block key -> owner
	srcBlocks  map[netip.Prefix][]string      // prefix -> block keys mapping onto it
	hostBlocks map[string]map[string]struct{} // owner -> block keys

	// blockAllocs: block key -> address keys that named it. Entries go
	// stale when an address is released or moves; they are dropped when the
	// block is next looked at, and a full build starts afresh.
	blockAllocs map[string][]string
	// uncovered: address key -> holder and block, for the addresses whose
	// holder does not own their block (they need a /32 or /128 of their
	// own), indexed by holder in hostAllocs.
	uncovered  map[string]allocRef
	hostAllocs map[string]map[string]struct{}
	// oddAllocs: uncovered address keys not in canonical form, by the
	// prefix they map onto (resolve finds canonical ones directly).
	oddAllocs map[netip.Prefix][]string

	routes map[netip.Prefix]Route  // desired routes
	vxVia  map[netip.Prefix]string // prefix -> host its route reaches over VXLAN
	vxRefs map[string]int          // host -> desired routes through it over VXLAN
	neigh  map[netip.Addr]string   // desired, derived from vxRefs
	fdb    map[string]netip.Addr   // desired, derived from vxRefs
}

type allocRef struct{ host, block string }

// newModel returns an empty model sized for the snapshot s.
func newModel(self Self, s *registry.Snapshot) *model {
	hosts, blocks, allocs := len(s.Hosts), len(s.Blocks), len(s.Allocations)
	return &model{
		self:        self,
		blockHost:   make(map[string]string, blocks),
		srcBlocks:   make(map[netip.Prefix][]string, blocks),
		hostBlocks:  make(map[string]map[string]struct{}, hosts),
		blockAllocs: make(map[string][]string, min(blocks, allocs)),
		uncovered:   map[string]allocRef{},
		hostAllocs:  map[string]map[string]struct{}{},
		oddAllocs:   map[netip.Prefix][]string{},
		routes:      make(map[netip.Prefix]Route, blocks),
		vxVia:       map[netip.Prefix]string{},
		vxRefs:      map[string]int{},
		neigh:       map[netip.Addr]string{},
		fdb:         map[string]netip.Addr{},
	}
}

// buildModel indexes the whole snapshot and resolves every prefix.
func buildModel(self Self, s *registry.Snapshot) *model {
	m := newModel(self, s)
	for cidr := range s.Blocks {
		m.indexBlock(s, cidr, nil)
	}
	for ip, a := range s.Allocations {
		m.blockAllocs[a.Block] = append(m.blockAllocs[a.Block], ip) // keys are unique
		if !coveredByBlock(s, a) {
			m.indexUncovered(s, ip, a, true, nil)
		}
	}
	for p := range m.srcBlocks {
		m.resolveOne(s, p)
	}
	for ip := range m.uncovered {
		if p, ok := allocPrefix(ip); ok {
			if _, done := m.srcBlocks[p]; !done {
				m.resolveOne(s, p)
			}
		}
	}
	m.deriveVXLAN(s)
	return m
}

// state returns the desired state. The maps are the model's own: read only.
func (m *model) state() *State {
	return &State{Routes: m.routes, Neigh: m.neigh, FDB: m.fdb}
}

// update folds the records under the registry keys in changed (puts and
// deletes since the previous update) into the model. It returns the
// prefixes whose desired route may have changed and whether the desired
// neighbour and FDB entries did.
func (m *model) update(s *registry.Snapshot, changed []string) (map[netip.Prefix]struct{}, bool) {
	touched := map[netip.Prefix]struct{}{}
	hosts := map[string]struct{}{}
	for _, key := range changed {
		switch {
		case strings.HasPrefix(key, registry.HostsPrefix):
			name := strings.TrimPrefix(key, registry.HostsPrefix)
			hosts[name] = struct{}{}
			for k := range m.hostBlocks[name] {
				if p, ok := blockPrefix(k); ok {
					touched[p] = struct{}{}
				}
			}
			for k := range m.hostAllocs[name] {
				if p, ok := allocPrefix(k); ok {
					touched[p] = struct{}{}
				}
			}
		case strings.HasPrefix(key, registry.BlocksPrefix):
			if cidr := blockKeyCIDR(key); cidr != "" {
				m.indexBlock(s, cidr, touched)
			}
		case strings.HasPrefix(key, registry.IPsPrefix):
			m.indexAlloc(s, key[strings.LastIndexByte(key, '/')+1:], touched)
		}
	}
	// A host's neighbour and FDB entries follow its record (address, MAC)
	// while routes go through it.
	vx := false
	for name := range hosts {
		if m.vxRefs[name] > 0 {
			vx = true
		}
	}
	if m.resolveAll(s, touched) || vx {
		m.deriveVXLAN(s)
		vx = true
	}
	return touched, vx
}

// indexBlock brings the index in line with the snapshot's record of block
// cidr and adds the prefixes it affects to touched (unless nil).
func (m *model) indexBlock(s *registry.Snapshot, cidr string, touched map[netip.Prefix]struct{}) {
	p, ok := blockPrefix(cidr)
	if !ok {
		return
	}
	oldHost, had := m.blockHost[cidr]
	b, has := s.Blocks[cidr]
	if had == has && oldHost == b.Host {
		return // a counter changed: no route depends on it
	}
	if had {
		delFrom(m.hostBlocks, oldHost, cidr)
		if !has {
			m.srcBlocks[p] = remove(m.srcBlocks[p], cidr)
			if len(m.srcBlocks[p]) == 0 {
				delete(m.srcBlocks, p)
			}
			delete(m.blockHost, cidr)
		}
	}
	if has {
		addTo(m.hostBlocks, b.Host, cidr)
		if !had {
			m.srcBlocks[p] = insert(m.srcBlocks[p], cidr)
		}
		m.blockHost[cidr] = b.Host
	}
	if touched == nil {
		return
	}
	touched[p] = struct{}{}
	// Whether an address of this block needs its own route depends on the
	// block's owner.
	ips := m.blockAllocs[cidr]
	live := ips[:0]
	for _, ip := range ips {
		if a, ok := s.Allocations[ip]; ok && a.Block == cidr {
			live = append(live, ip)
		}
	}
	if len(live) == 0 {
		delete(m.blockAllocs, cidr)
	} else {
		m.blockAllocs[cidr] = live
	}
	for _, ip := range live {
		m.indexAlloc(s, ip, touched)
	}
}

// indexAlloc is indexBlock for the address ip.
func (m *model) indexAlloc(s *registry.Snapshot, ip string, touched map[netip.Prefix]struct{}) {
	a, has := s.Allocations[ip]
	if has {
		m.addBlockAlloc(a.Block, ip)
	}
	m.indexUncovered(s, ip, a, has, touched)
}

// indexUncovered keeps the holder index of address ip (record a, if has) in
// step with whether it needs a route of its own.
func (m *model) indexUncovered(s *registry.Snapshot, ip string, a registry.Allocation, has bool, touched map[netip.Prefix]struct{}) {
	old, was := m.uncovered[ip]
	is := has && !coveredByBlock(s, a)
	if !was && !is {
		return // no route of its own, before or after
	}
	p, ok := allocPrefix(ip)
	if !ok {
		return // never indexed as uncovered
	}
	now := allocRef{host: a.Host, block: a.Block}
	if was && (!is || old != now) {
		delFrom(m.hostAllocs, old.host, ip)
		delete(m.uncovered, ip)
	}
	if is && (!was || old != now) {
		m.uncovered[ip] = now
		addTo(m.hostAllocs, now.host, ip)
	}
	m.setOdd(p, ip, is)
	if touched != nil {
		touched[p] = struct{}{}
	}
}

// addBlockAlloc notes that address key ip names block cidr.
func (m *model) addBlockAlloc(cidr, ip string) {
	ips := m.blockAllocs[cidr]
	if !slices.Contains(ips, ip) {
		m.blockAllocs[cidr] = append(ips, ip)
	}
}

// setOdd records (or forgets) address key ip of prefix p when it is not in
// canonical form.
func (m *model) setOdd(p netip.Prefix, ip string, present bool) {
	var buf [48]byte
	if string(p.Addr().AppendTo(buf[:0])) == ip {
		return
	}
	if present {
		m.oddAllocs[p] = insert(m.oddAllocs[p], ip)
		return
	}
	if m.oddAllocs[p] = remove(m.oddAllocs[p], ip); len(m.oddAllocs[p]) == 0 {
		delete(m.oddAllocs, p)
	}
}

// coveredByBlock reports whether address a needs no route of its own
// anywhere: nobody holds it, or its holder owns its block.
func coveredByBlock(s *registry.Snapshot, a registry.Allocation) bool {
	if a.Host == "" {
		return true
	}
	b, ok := s.Blocks[a.Block]
	return ok && b.Host == a.Host
}

// resolveAll recomputes the desired route of every prefix in touched and
// reports whether the set of hosts reached over VXLAN changed.
func (m *model) resolveAll(s *registry.Snapshot, touched map[netip.Prefix]struct{}) bool {
	vx := false
	for p := range touched {
		if m.resolveOne(s, p) {
			vx = true
		}
	}
	return vx
}

// resolveOne recomputes the desired route to p and reports whether the set
// of hosts reached over VXLAN changed.
func (m *model) resolveOne(s *registry.Snapshot, p netip.Prefix) bool {
	vx := false
	r, vxHost, ok := m.resolve(s, p)
	if old := m.vxVia[p]; old != "" && old != vxHost {
		if m.vxRefs[old]--; m.vxRefs[old] <= 0 {
			delete(m.vxRefs, old)
			vx = true
		}
		delete(m.vxVia, p)
	}
	if vxHost != "" && m.vxVia[p] != vxHost {
		m.vxVia[p] = vxHost
		if m.vxRefs[vxHost]++; m.vxRefs[vxHost] == 1 {
			vx = true
		}
	}
	if ok {
		m.routes[p] = r
	} else {
		delete(m.routes, p)
	}
	return vx
}

// resolve computes the desired route to p from the records mapping onto it.
// vxHost names the host the route reaches over VXLAN ("" for none).
func (m *model) resolve(s *registry.Snapshot, p netip.Prefix) (r Route, vxHost string, ok bool) {
	for _, ip := range m.allocKeys(s, p) {
		a, found := s.Allocations[ip]
		if !found || a.Host == "" || a.Host == m.self.Name {
			continue
		}
		if b, ok := s.Blocks[a.Block]; ok && b.Host == a.Host {
			continue // covered by the block route
		}
		if r, vx, ok := m.via(s.Hosts[a.Host], p.Addr().Is6()); ok {
			r.Dst = p
			if vx {
				vxHost = a.Host
			}
			return r, vxHost, true
		}
	}
	for _, cidr := range m.srcBlocks[p] {
		b, found := s.Blocks[cidr]
		if !found {
			continue
		}
		if b.Host == m.self.Name {
			return Route{Dst: p, Kind: Unreachable}, "", true
		}
		if r, vx, ok := m.via(s.Hosts[b.Host], p.Addr().Is6()); ok {
			r.Dst = p
			if vx {
				vxHost = b.Host
			}
			return r, vxHost, true
		}
	}
	return Route{}, "", false
}

// allocKeys lists the address keys mapping onto p, lowest first.
func (m *model) allocKeys(s *registry.Snapshot, p netip.Prefix) []string {
	if !p.IsSingleIP() {
		return nil
	}
	odd := m.oddAllocs[p]
	canon := p.Addr().String()
	if _, ok := s.Allocations[canon]; !ok {
		return odd
	}
	if len(odd) == 0 {
		return []string{canon}
	}
	return insert(slices.Clone(odd), canon)
}

// via is the route (without Dst) to a destination on host h, and whether it
// goes over VXLAN.
func (m *model) via(h *petrelv1.Host, v6 bool) (Route, bool, bool) {
	if h == nil {
		return Route{}, false, false
	}
	if v6 {
		a, err := netip.ParseAddr(h.GetAddressV6())
		if err != nil {
			return Route{}, false, false
		}
		return Route{Via: a}, false, true
	}
	a, err := netip.ParseAddr(h.GetAddress())
	if err != nil || !a.Is4() {
		return Route{}, false, false
	}
	if m.self.Subnet.Contains(a) {
		return Route{Via: a}, false, true
	}
	if m.self.VXLANDev == "" || h.GetVxlanMac() == "" {
		return Route{}, false, false
	}
	return Route{Via: a, Dev: m.self.VXLANDev, Onlink: true}, true, true
}

// deriveVXLAN recomputes the neighbour and FDB entries of the hosts reached
// over VXLAN: O(those hosts), and only needed when that set or one of their
// records changed. On a clash (two hosts claiming one address or MAC) the
// lowest host name wins.
func (m *model) deriveVXLAN(s *registry.Snapshot) {
	clear(m.neigh)
	clear(m.fdb)
	for _, name := range slices.Sorted(maps.Keys(m.vxRefs)) {
		h := s.Hosts[name]
		if h == nil {
			continue
		}
		a, err := netip.ParseAddr(h.GetAddress())
		if err != nil {
			continue
		}
		mac := strings.ToLower(h.GetVxlanMac())
		if _, ok := m.neigh[a]; !ok {
			m.neigh[a] = mac
		}
		if _, ok := m.fdb[mac]; !ok {
			m.fdb[mac] = a
		}
	}
}

// blockPrefix is the prefix a block's CIDR names.
func blockPrefix(cidr string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

// allocPrefix is the host prefix of an address.
func allocPrefix(ip string) (netip.Prefix, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// blockKeyCIDR is the CIDR a block key names, as the cluster's snapshot
// keys it ("" if malformed): blocks/<pool>/<cidr with '/' as '-'>.
func blockKeyCIDR(key string) string {
	rest := strings.TrimPrefix(key, registry.BlocksPrefix)
	i := strings.IndexByte(rest, '/')
	if i < 0 || i == len(rest)-1 {
		return ""
	}
	return registry.KeyCIDR(rest[i+1:])
}

func addTo(m map[string]map[string]struct{}, k, v string) {
	set := m[k]
	if set == nil {
		set = map[string]struct{}{}
		m[k] = set
	}
	set[v] = struct{}{}
}

func delFrom(m map[string]map[string]struct{}, k, v string) {
	if set := m[k]; set != nil {
		delete(set, v)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

// insert adds v to the sorted slice s.
func insert(s []string, v string) []string {
	i, found := slices.BinarySearch(s, v)
	if found {
		return s
	}
	return slices.Insert(s, i, v)
}

// remove deletes v from the sorted slice s.
func remove(s []string, v string) []string {
	if i, found := slices.BinarySearch(s, v); found {
		return slices.Delete(s, i, i+1)
	}
	return s
}
