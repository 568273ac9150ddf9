package policy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// model is the desired table of the last reconcile together with an index of
// what every endpoint contributed to it, so that ReconcileChanged can update
// the table in place for a few changed endpoints: its cost follows the
// change (the endpoints' addresses and groups, and the members of a group
// whose set appears), not the number of endpoints.
//
// Every element is reference-counted by the endpoints that put it there;
// combo chains by the local addresses whose dst map entry jumps to them, and
// group sets by the combo chains that look them up. want always equals
// desired() of the snapshot the model was last brought up to date with.
type model struct {
	host string
	def  Default
	want state
	eps  map[string]contrib // endpoint key -> its contribution

	all      map[netip.Addr]int            // e4, e6
	ifaces   map[string]int                // cifs
	own      map[string]int                // own4, own6 ("ifname . addr")
	members  map[string]map[netip.Addr]int // group -> member addresses, all hosts
	local    map[netip.Addr]*localAddr     // local container addresses
	chainUse map[string]int                // combo chain -> dst entries jumping to it
	setUse   map[string]int                // group set -> combo chains using it
}

// localAddr is a local container address: how many local endpoints hold it,
// and the union of their groups (counted).
type localAddr struct {
	n      int
	groups map[string]int
}

// contrib is what one endpoint puts into the table.
type contrib struct {
	local  bool
	ifname string // host-side interface of a local endpoint, or ""
	groups []string
	addrs  []netip.Addr
}

func contribOf(ep *petrelv1.Endpoint, host string) (contrib, bool) {
	if ep == nil {
		return contrib{}, false
	}
	c := contrib{local: ep.GetHost() == host, groups: NormalizeGroups(ep.GetNetgroups())}
	if c.local {
		c.ifname = ep.GetHostIfname()
	}
	for _, raw := range ep.GetIps() {
		if a, ok := parseAddr(raw); ok {
			c.addrs = append(c.addrs, a)
		}
	}
	return c, true
}

// touched collects the keys whose desired value an update may have changed.
type touched struct {
	all    map[netip.Addr]struct{}
	ifaces map[string]struct{}
	own    map[string]struct{}
	local  map[netip.Addr]struct{}
	member map[string]map[netip.Addr]struct{}
}

func newTouched() *touched {
	return &touched{
		all:    map[netip.Addr]struct{}{},
		ifaces: map[string]struct{}{},
		own:    map[string]struct{}{},
		local:  map[netip.Addr]struct{}{},
		member: map[string]map[netip.Addr]struct{}{},
	}
}

// newModel indexes snap, whose desired table is want (desired(snap, host,
// def)). It takes ownership of want.
func newModel(snap *registry.Snapshot, host string, def Default, want state) *model {
	m := &model{
		host: host, def: def, want: want,
		eps:      map[string]contrib{},
		all:      map[netip.Addr]int{},
		ifaces:   map[string]int{},
		own:      map[string]int{},
		members:  map[string]map[netip.Addr]int{},
		local:    map[netip.Addr]*localAddr{},
		chainUse: map[string]int{},
		setUse:   map[string]int{},
	}
	if snap != nil {
		for key, ep := range snap.Endpoints {
			if c, ok := contribOf(ep, host); ok {
				m.eps[key] = c
				m.count(c, 1, nil)
			}
		}
	}
	for _, vmap := range []string{mapDst4, mapDst6} {
		for _, v := range want.Elems[vmap] {
			if c, ok := strings.CutPrefix(v, jumpPrefix); ok {
				m.chainUse[c]++
			}
		}
	}
	for _, spec := range want.specs {
		if fam, ok := comboFamily(spec.Kind); ok {
			for _, g := range spec.Groups {
				m.setUse[groupSet(fam, g)]++
			}
		}
	}
	return m
}

func comboFamily(k chainKind) (int, bool) {
	switch k {
	case chainKindCombo4:
		return 4, true
	case chainKindCombo6:
		return 6, true
	}
	return 0, false
}

func bump[K comparable](m map[K]int, k K, d int) {
	if n := m[k] + d; n > 0 {
		m[k] = n
	} else {
		delete(m, k)
	}
}

func mark[K comparable](m map[K]struct{}, k K) {
	if m != nil {
		m[k] = struct{}{}
	}
}

// count adds (d = 1) or removes (d = -1) an endpoint's contribution to the
// index, noting in t (when not nil) the keys it touched.
func (m *model) count(c contrib, d int, t *touched) {
	var tt touched
	if t != nil {
		tt = *t
	}
	if c.local && c.ifname != "" {
		bump(m.ifaces, c.ifname, d)
		mark(tt.ifaces, c.ifname)
	}
	for _, a := range c.addrs {
		bump(m.all, a, d)
		mark(tt.all, a)
		for _, g := range c.groups {
			ms := m.members[g]
			if ms == nil {
				ms = map[netip.Addr]int{}
				m.members[g] = ms
			}
			bump(ms, a, d)
			if len(ms) == 0 {
				delete(m.members, g)
			}
			if t != nil {
				if t.member[g] == nil {
					t.member[g] = map[netip.Addr]struct{}{}
				}
				t.member[g][a] = struct{}{}
			}
		}
		if !c.local {
			continue
		}
		if c.ifname != "" {
			k := c.ifname + " . " + a.String()
			bump(m.own, k, d)
			mark(tt.own, k)
		}
		la := m.local[a]
		if la == nil {
			la = &localAddr{groups: map[string]int{}}
			m.local[a] = la
		}
		la.n += d
		for _, g := range c.groups {
			bump(la.groups, g, d)
		}
		if la.n <= 0 {
			delete(m.local, a)
		}
		mark(tt.local, a)
	}
}

// verdict is the dst map entry of local address a ("" for none) and, for a
// jump, the combo chain's spec.
func (m *model) verdict(a netip.Addr) (string, chainSpec) {
	la := m.local[a]
	if la == nil {
		return "", chainSpec{}
	}
	groups := slices.Sorted(maps.Keys(la.groups))
	if slices.Contains(groups, GroupPublic) {
		return verdictAcc, chainSpec{}
	}
	if len(groups) == 0 && m.def == DefaultOpen {
		return "", chainSpec{}
	}
	fam, kind := 4, chainKindCombo4
	if a.Is6() {
		fam, kind = 6, chainKindCombo6
	}
	return jumpPrefix + comboChain(fam, groups), chainSpec{Kind: kind, Groups: groups}
}

// planner accumulates a plan while updating want.
type planner struct {
	want *state
	p    plan
}

// setElem makes element key of set hold data (present) or be absent.
func (pl *planner) setElem(set, key, data string, present bool) {
	els := pl.want.Elems[set]
	old, had := els[key]
	switch {
	case present && had && old == data:
	case present:
		if had {
			pl.p.DelElems[set] = append(pl.p.DelElems[set], elem{Key: key, Data: old})
		}
		pl.p.AddElems[set] = append(pl.p.AddElems[set], elem{Key: key, Data: data})
		els[key] = data
	case had:
		pl.p.DelElems[set] = append(pl.p.DelElems[set], elem{Key: key, Data: old})
		delete(els, key)
	}
}

// update brings the model from the previous snapshot to snap, which differs
// from it only in the endpoints under keys (keys of other kinds are
// ignored), and returns the plan that turns the previous table into the new
// one.
func (m *model) update(snap *registry.Snapshot, keys []string) plan {
	t := newTouched()
	for _, key := range keys {
		if !strings.HasPrefix(key, registry.EndpointsPrefix) {
			continue
		}
		if old, ok := m.eps[key]; ok {
			m.count(old, -1, t)
			delete(m.eps, key)
		}
		var ep *petrelv1.Endpoint
		if snap != nil {
			ep = snap.Endpoints[key]
		}
		if c, ok := contribOf(ep, m.host); ok {
			m.eps[key] = c
			m.count(c, 1, t)
		}
	}

	pl := &planner{want: &m.want, p: plan{DelElems: map[string][]elem{}, AddElems: map[string][]elem{}}}
	for a := range t.all {
		set := setAll4
		if a.Is6() {
			set = setAll6
		}
		pl.setElem(set, a.String(), "", m.all[a] > 0)
	}
	for ifn := range t.ifaces {
		pl.setElem(setIfaces, ifn, "", m.ifaces[ifn] > 0)
	}
	for k := range t.own {
		set := setOwn4
		if _, addr, _ := strings.Cut(k, " . "); strings.Contains(addr, ":") {
			set = setOwn6
		}
		pl.setElem(set, k, "", m.own[k] > 0)
	}

	// dst entries: first take every new chain (and set) into use, then move
	// the entries, then release the old chains, so that a chain or set
	// that one address leaves and another joins is never deleted and
	// re-created in one batch.
	type move struct {
		addr     netip.Addr
		old, new string
	}
	var moves []move
	for a := range t.local {
		vmap := mapDst4
		if a.Is6() {
			vmap = mapDst6
		}
		old := m.want.Elems[vmap][a.String()]
		v, spec := m.verdict(a)
		if v == old {
			continue
		}
		moves = append(moves, move{addr: a, old: old, new: v})
		if c, ok := strings.CutPrefix(v, jumpPrefix); ok {
			m.useChain(pl, c, spec)
		}
	}
	for _, mv := range moves {
		vmap := mapDst4
		if mv.addr.Is6() {
			vmap = mapDst6
		}
		pl.setElem(vmap, mv.addr.String(), mv.new, mv.new != "")
	}
	for _, mv := range moves {
		if c, ok := strings.CutPrefix(mv.old, jumpPrefix); ok {
			m.releaseChain(pl, c)
		}
	}

	// Members of groups whose sets exist (a set created above already
	// holds its members).
	for g, addrs := range t.member {
		for a := range addrs {
			fam := 4
			if a.Is6() {
				fam = 6
			}
			set := groupSet(fam, g)
			if _, ok := m.want.Sets[set]; !ok {
				continue
			}
			pl.setElem(set, a.String(), "", m.members[g][a] > 0)
		}
	}
	return pl.p.normalize()
}

// useChain counts one more dst entry jumping to combo chain name, creating
// the chain (and the group sets it looks up) on first use.
func (m *model) useChain(pl *planner, name string, spec chainSpec) {
	m.chainUse[name]++
	if m.chainUse[name] > 1 {
		return
	}
	fam, _ := comboFamily(spec.Kind)
	for _, g := range spec.Groups {
		set := groupSet(fam, g)
		m.setUse[set]++
		if m.setUse[set] > 1 {
			continue
		}
		kind := kindAddr4
		if fam == 6 {
			kind = kindAddr6
		}
		m.want.addSet(set, kind)
		pl.p.AddSets = append(pl.p.AddSets, setDef{Name: set, Kind: kind})
		for a := range m.members[g] {
			if a.Is4() == (fam == 4) {
				pl.setElem(set, a.String(), "", true)
			}
		}
	}
	m.want.addChain(name, spec)
	pl.p.AddChains = append(pl.p.AddChains, chainDef{Name: name, Spec: spec})
}

// releaseChain counts one dst entry less jumping to combo chain name,
// deleting the chain (and the group sets no other chain uses) on last use.
func (m *model) releaseChain(pl *planner, name string) {
	m.chainUse[name]--
	if m.chainUse[name] > 0 {
		return
	}
	delete(m.chainUse, name)
	spec := m.want.specs[name]
	delete(m.want.Chains, name)
	delete(m.want.specs, name)
	pl.p.DelChains = append(pl.p.DelChains, name)
	fam, _ := comboFamily(spec.Kind)
	for _, g := range spec.Groups {
		set := groupSet(fam, g)
		m.setUse[set]--
		if m.setUse[set] > 0 {
			continue
		}
		delete(m.setUse, set)
		delete(m.want.Sets, set)
		delete(m.want.Elems, set)
		delete(pl.p.AddElems, set) // members added this round go with it
		pl.p.DelSets = append(pl.p.DelSets, set)
	}
}

// normalize sorts a plan's lists (for stable batches and comparisons) and
// drops empty element maps, and element removals from sets it deletes.
func (p plan) normalize() plan {
	byKey := func(a, b elem) int { return cmp.Compare(a.Key, b.Key) }
	for _, set := range p.DelSets {
		delete(p.DelElems, set)
	}
	for _, m := range []map[string][]elem{p.DelElems, p.AddElems} {
		for set, es := range m {
			if len(es) == 0 {
				delete(m, set)
				continue
			}
			slices.SortFunc(es, byKey)
		}
	}
	if len(p.DelElems) == 0 {
		p.DelElems = nil
	}
	if len(p.AddElems) == 0 {
		p.AddElems = nil
	}
	slices.SortFunc(p.AddSets, func(a, b setDef) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(p.AddChains, func(a, b chainDef) int { return cmp.Compare(a.Name, b.Name) })
	slices.Sort(p.DelChains)
	slices.Sort(p.DelSets)
	return p
}
