package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/petrel-net/petrel/agent/registry"
)

// Default says what a container without any netgroup admits.
type Default int

const (
	// DefaultOpen makes a group-less container reachable by every container.
	DefaultOpen Default = iota
	// DefaultClosed makes a group-less container reachable by no container.
	DefaultClosed
)

// String returns "open" or "closed".
func (d Default) String() string {
	if d == DefaultClosed {
		return "closed"
	}
	return "open"
}

// ParseDefault parses "open" or "closed".
func ParseDefault(s string) (Default, bool) {
	switch s {
	case "open", "":
		return DefaultOpen, true
	case "closed":
		return DefaultClosed, true
	}
	return DefaultOpen, false
}

// ruleVersion is stamped (hashed) into every rule's user data; bump it when
// the rules a chain spec renders to change, so old chains are rewritten.
const ruleVersion = "petrel-policy/2"

// setKind is the key (and data) type of one set.
type setKind uint8

const (
	kindIfname  setKind = iota + 1 // ifname
	kindAddr4                      // ipv4_addr
	kindAddr6                      // ipv6_addr
	kindIfAddr4                    // ifname . ipv4_addr
	kindIfAddr6                    // ifname . ipv6_addr
	kindVmap4                      // ipv4_addr : verdict
	kindVmap6                      // ipv6_addr : verdict
)

func (k setKind) isMap() bool { return k == kindVmap4 || k == kindVmap6 }

// Fixed object names.
const (
	setAll4     = "e4"
	setAll6     = "e6"
	setIfaces   = "cifs"
	setOwn4     = "own4"
	setOwn6     = "own6"
	mapDst4     = "dst4"
	mapDst6     = "dst6"
	chainSpoof  = "spoof"
	chainFwd    = "fwd"
	chainIn     = "in"
	verdictAcc  = "accept"
	jumpPrefix  = "jump "
	chainPrefx4 = "c4_"
	chainPrefx6 = "c6_"
)

// chainKind says which rules a chain holds.
type chainKind uint8

const (
	chainKindSpoof  chainKind = iota + 1 // anti-spoofing, jumped to from fwd and in
	chainKindFwd                         // ingress policy, hook forward
	chainKindIn                          // anti-spoofing of traffic to the host, hook input
	chainKindCombo4                      // accept IPv4 sources of Groups, drop
	chainKindCombo6                      // accept IPv6 sources of Groups, drop
)

// chainSpec is everything the rules of one chain are rendered from.
type chainSpec struct {
	Kind   chainKind
	Groups []string // combo chains: sorted, without "public"
}

// sig is the fingerprint stored in the user data of the chain's rules: when
// it differs from the kernel's, the chain's rules are rewritten.
func (c chainSpec) sig() string {
	h := sha256.New()
	h.Write([]byte(ruleVersion))
	h.Write([]byte{0, byte(c.Kind)})
	for _, g := range c.Groups {
		h.Write([]byte{0})
		h.Write([]byte(g))
	}
	return ruleVersion + " " + hex.EncodeToString(h.Sum(nil))[:16]
}

// state is the content of Petrel's table, desired or read from the kernel.
// Element data is "" in plain sets and a verdict ("accept", "drop",
// "jump <chain>") in maps. Chains map a name to its rules' fingerprint.
type state struct {
	Table  bool
	Sets   map[string]setKind
	Elems  map[string]map[string]string
	Chains map[string]string
	// specs holds the rendering input of desired chains (not read back).
	specs map[string]chainSpec
}

func newState() state {
	return state{
		Sets:   map[string]setKind{},
		Elems:  map[string]map[string]string{},
		Chains: map[string]string{},
		specs:  map[string]chainSpec{},
	}
}

func (s *state) addSet(name string, k setKind) {
	if _, ok := s.Sets[name]; !ok {
		s.Sets[name] = k
		s.Elems[name] = map[string]string{}
	}
}

func (s *state) addChain(name string, spec chainSpec) {
	s.Chains[name] = spec.sig()
	s.specs[name] = spec
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// groupSet names the member set of a group for one address family. Names
// that are not plain are hashed ("~" cannot occur in a plain name, so the
// two forms never collide).
func groupSet(fam int, g string) string {
	p := "g4"
	if fam == 6 {
		p = "g6"
	}
	if safeName.MatchString(g) {
		return p + "_" + g
	}
	sum := sha256.Sum256([]byte(g))
	return p + "~" + hex.EncodeToString(sum[:])[:16]
}

// comboChain names the chain that admits the sources of a group combination.
func comboChain(fam int, groups []string) string {
	sum := sha256.Sum256([]byte(strings.Join(groups, "\x00")))
	p := chainPrefx4
	if fam == 6 {
		p = chainPrefx6
	}
	return p + hex.EncodeToString(sum[:])[:16]
}

// parseAddr accepts a bare address or a single-address prefix.
func parseAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if p, err := netip.ParsePrefix(s); err == nil && p.IsSingleIP() {
		return p.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// desired renders the table a host should hold for a snapshot. Endpoints
// with unparsable addresses contribute their valid ones only.
func desired(snap *registry.Snapshot, host string, def Default) state {
	st := newState()
	st.Table = true
	st.addSet(setAll4, kindAddr4)
	st.addSet(setAll6, kindAddr6)
	st.addSet(setIfaces, kindIfname)
	st.addSet(setOwn4, kindIfAddr4)
	st.addSet(setOwn6, kindIfAddr6)
	st.addSet(mapDst4, kindVmap4)
	st.addSet(mapDst6, kindVmap6)
	st.addChain(chainSpoof, chainSpec{Kind: chainKindSpoof})
	st.addChain(chainFwd, chainSpec{Kind: chainKindFwd})
	st.addChain(chainIn, chainSpec{Kind: chainKindIn})
	if snap == nil {
		return st
	}

	members := map[string][]netip.Addr{} // group -> addresses, all hosts
	local := map[netip.Addr][]string{}   // local address -> groups (union)
	for _, key := range slices.Sorted(maps.Keys(snap.Endpoints)) {
		ep := snap.Endpoints[key]
		if ep == nil {
			continue
		}
		groups := NormalizeGroups(ep.GetNetgroups())
		isLocal := ep.GetHost() == host
		ifname := ep.GetHostIfname()
		if isLocal && ifname != "" {
			st.Elems[setIfaces][ifname] = ""
		}
		for _, raw := range ep.GetIps() {
			a, ok := parseAddr(raw)
			if !ok {
				continue
			}
			if a.Is4() {
				st.Elems[setAll4][a.String()] = ""
			} else {
				st.Elems[setAll6][a.String()] = ""
			}
			for _, g := range groups {
				members[g] = append(members[g], a)
			}
			if !isLocal {
				continue
			}
			if ifname != "" {
				if a.Is4() {
					st.Elems[setOwn4][ifname+" . "+a.String()] = ""
				} else {
					st.Elems[setOwn6][ifname+" . "+a.String()] = ""
				}
			}
			local[a] = NormalizeGroups(append(local[a], groups...))
		}
	}

	for a, groups := range local {
		fam, vmap := 4, mapDst4
		if a.Is6() {
			fam, vmap = 6, mapDst6
		}
		if slices.Contains(groups, GroupPublic) {
			st.Elems[vmap][a.String()] = verdictAcc
			continue
		}
		if len(groups) == 0 && def == DefaultOpen {
			continue
		}
		name := comboChain(fam, groups)
		kind := chainKindCombo4
		if fam == 6 {
			kind = chainKindCombo6
		}
		st.addChain(name, chainSpec{Kind: kind, Groups: groups})
		st.Elems[vmap][a.String()] = jumpPrefix + name
		for _, g := range groups {
			set := groupSet(fam, g)
			k := kindAddr4
			if fam == 6 {
				k = kindAddr6
			}
			if _, ok := st.Sets[set]; ok {
				continue
			}
			st.addSet(set, k)
			for _, m := range members[g] {
				if m.Is4() == (fam == 4) {
					st.Elems[set][m.String()] = ""
				}
			}
		}
	}
	return st
}

// setDef is a set to create.
type setDef struct {
	Name string
	Kind setKind
}

// chainDef is a chain to create or rewrite.
type chainDef struct {
	Name string
	Spec chainSpec
}

// elem is one set element: a key, and a verdict in maps.
type elem struct {
	Key  string
	Data string
}

// plan is the difference between the kernel's table and the desired one, in
// the order it is applied within one batch (see apply in nft_linux.go):
// table, sets, element removals, new chains, rewritten chains, element
// additions, chain removals, set removals.
type plan struct {
	AddTable  bool
	DelTable  bool // only when the table holds objects of an unknown shape
	AddSets   []setDef
	DelElems  map[string][]elem
	AddChains []chainDef
	Rewrite   []chainDef
	AddElems  map[string][]elem
	DelChains []string
	DelSets   []string
}

// empty reports whether the plan changes nothing.
func (p plan) empty() bool {
	return !p.AddTable && !p.DelTable && len(p.AddSets) == 0 && len(p.DelElems) == 0 &&
		len(p.AddChains) == 0 && len(p.Rewrite) == 0 && len(p.AddElems) == 0 &&
		len(p.DelChains) == 0 && len(p.DelSets) == 0
}

// diff computes the plan that turns actual into want. A set whose type differs
// from the wanted one (a table written by another version) cannot be changed
// in place: the plan then deletes the table, and the next diff rebuilds it.
func diff(want, actual state) plan {
	var p plan
	if !actual.Table {
		p.AddTable = true
		actual = newState()
	}
	for name, k := range actual.Sets {
		if wk, ok := want.Sets[name]; ok && wk != k {
			return plan{DelTable: true}
		}
	}
	p.DelElems = map[string][]elem{}
	p.AddElems = map[string][]elem{}
	for _, name := range slices.Sorted(maps.Keys(want.Sets)) {
		if _, ok := actual.Sets[name]; !ok {
			p.AddSets = append(p.AddSets, setDef{Name: name, Kind: want.Sets[name]})
		}
		have := actual.Elems[name]
		for _, key := range slices.Sorted(maps.Keys(want.Elems[name])) {
			data := want.Elems[name][key]
			old, ok := have[key]
			if ok && old == data {
				continue
			}
			if ok {
				p.DelElems[name] = append(p.DelElems[name], elem{Key: key, Data: old})
			}
			p.AddElems[name] = append(p.AddElems[name], elem{Key: key, Data: data})
		}
		for _, key := range slices.Sorted(maps.Keys(have)) {
			if _, ok := want.Elems[name][key]; !ok {
				p.DelElems[name] = append(p.DelElems[name], elem{Key: key, Data: have[key]})
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(actual.Sets)) {
		if _, ok := want.Sets[name]; !ok {
			p.DelSets = append(p.DelSets, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want.Chains)) {
		sig, ok := actual.Chains[name]
		switch {
		case !ok:
			p.AddChains = append(p.AddChains, chainDef{Name: name, Spec: want.specs[name]})
		case sig != want.Chains[name]:
			p.Rewrite = append(p.Rewrite, chainDef{Name: name, Spec: want.specs[name]})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(actual.Chains)) {
		if _, ok := want.Chains[name]; !ok {
			p.DelChains = append(p.DelChains, name)
		}
	}
	if len(p.DelElems) == 0 {
		p.DelElems = nil
	}
	if len(p.AddElems) == 0 {
		p.AddElems = nil
	}
	// Regular (combo) chains must exist before base chains jump to them and
	// before map elements name them; sort base chains last.
	slices.SortStableFunc(p.AddChains, func(a, b chainDef) int { return isBase(a.Spec.Kind) - isBase(b.Spec.Kind) })
	return p
}

func isBase(k chainKind) int {
	if k == chainKindFwd || k == chainKindIn {
		return 1
	}
	return 0
}

// ruleCount is the number of rules a state renders to (see rules in
// nft_linux.go; kept here so the growth bound is unit-tested everywhere).
func ruleCount(s state) int {
	n := 0
	for _, spec := range s.specs {
		switch spec.Kind {
		case chainKindSpoof:
			n += spoofRuleCount
		case chainKindFwd:
			n += fwdRuleCount
		case chainKindIn:
			n += inRuleCount
		default:
			n += len(spec.Groups) + 1
		}
	}
	return n
}

// Rule counts of the base chains; nft_linux.go checks them against its
// renderers in a test.
const (
	spoofRuleCount = 4
	fwdRuleCount   = 7
	inRuleCount    = 2
)
