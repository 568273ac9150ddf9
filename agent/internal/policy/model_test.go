package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func ep(host, id, ifname string, ips []string, groups ...string) *petrelv1.Endpoint {
	return &petrelv1.Endpoint{ContainerId: id, Host: host, Ips: ips, Ifname: "eth0", HostIfname: ifname, Netgroups: groups}
}

func snapOf(eps ...*petrelv1.Endpoint) *registry.Snapshot {
	s := &registry.Snapshot{Endpoints: map[string]*petrelv1.Endpoint{}}
	for _, e := range eps {
		s.Endpoints[registry.EndpointKey(e.Host, e.ContainerId, e.Ifname)] = e
	}
	return s
}

// render prints the non-empty sets and the chains of a state, one per line,
// sorted, with combo chains named by their groups ("c4[a,b]") instead of
// their hash.
func render(s state) string {
	names := map[string]string{}
	for n, spec := range s.specs {
		switch spec.Kind {
		case chainKindCombo4:
			names[n] = "c4[" + strings.Join(spec.Groups, ",") + "]"
		case chainKindCombo6:
			names[n] = "c6[" + strings.Join(spec.Groups, ",") + "]"
		}
	}
	var lines []string
	for _, set := range slices.Sorted(maps.Keys(s.Sets)) {
		var els []string
		for _, k := range slices.Sorted(maps.Keys(s.Elems[set])) {
			v := s.Elems[set][k]
			if c, ok := strings.CutPrefix(v, jumpPrefix); ok {
				v = names[c]
			}
			if v != "" {
				k += "=" + v
			}
			els = append(els, k)
		}
		if len(els) > 0 {
			lines = append(lines, set+": "+strings.Join(els, " "))
		}
	}
	var chains []string
	for _, c := range slices.Sorted(maps.Keys(s.Chains)) {
		if n, ok := names[c]; ok {
			c = n
		}
		chains = append(chains, c)
	}
	slices.Sort(chains)
	return strings.Join(append(lines, "chains: "+strings.Join(chains, " ")), "\n")
}

func TestDesired(t *testing.T) {
	tests := []struct {
		name string
		def  Default
		snap *registry.Snapshot
		want string
	}{
		{
			name: "empty",
			snap: snapOf(),
			want: "chains: fwd in spoof",
		},
		{
			name: "same group local and remote",
			snap: snapOf(
				ep("h1", "a", "v1", []string{"10.0.0.1"}, "web"),
				ep("h2", "b", "v9", []string{"10.0.1.1"}, "web"),
			),
			want: `cifs: v1
dst4: 10.0.0.1=c4[web]
e4: 10.0.0.1 10.0.1.1
g4_web: 10.0.0.1 10.0.1.1
own4: v1 . 10.0.0.1
chains: c4[web] fwd in spoof`,
		},
		{
			name: "multiple groups, public, no group open, duplicates trimmed",
			snap: snapOf(
				ep("h1", "a", "v1", []string{"10.0.0.1", "10.0.0.2"}, " b", "a", "a", ""),
				ep("h1", "p", "v2", []string{"10.0.0.3"}, "public", "a"),
				ep("h1", "n", "v3", []string{"10.0.0.4"}),
				ep("h2", "r", "v4", []string{"10.0.1.1", "fd00::1"}, "b"),
				ep("h2", "x", "v5", []string{"10.0.1.2"}, "zzz"),
			),
			want: `cifs: v1 v2 v3
dst4: 10.0.0.1=c4[a,b] 10.0.0.2=c4[a,b] 10.0.0.3=accept
e4: 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.1.1 10.0.1.2
e6: fd00::1
g4_a: 10.0.0.1 10.0.0.2 10.0.0.3
g4_b: 10.0.0.1 10.0.0.2 10.0.1.1
own4: v1 . 10.0.0.1 v1 . 10.0.0.2 v2 . 10.0.0.3 v3 . 10.0.0.4
chains: c4[a,b] fwd in spoof`,
		},
		{
			name: "no group closed, IPv6, bad address skipped",
			def:  DefaultClosed,
			snap: snapOf(
				ep("h1", "n", "v3", []string{"10.0.0.4", "fd00::4", "bogus"}),
				ep("h1", "g", "v4", []string{"fd00::5/128"}, "G"),
			),
			want: `cifs: v3 v4
dst4: 10.0.0.4=c4[]
dst6: fd00::4=c6[] fd00::5=c6[G]
e4: 10.0.0.4
e6: fd00::4 fd00::5
g6_G: fd00::5
own4: v3 . 10.0.0.4
own6: v3 . fd00::4 v4 . fd00::5
chains: c4[] c6[G] c6[] fwd in spoof`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := render(desired(tc.snap, "h1", tc.def))
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("desired (-want +got):\n%s", d)
			}
		})
	}
}

func TestGroupSetNames(t *testing.T) {
	tests := []struct{ group, want string }{
		{"web", "g4_web"},
		{"a.b-c_D9", "g4_a.b-c_D9"},
		{"with space", "g4~"},
		{"é", "g4~"},
		{strings.Repeat("x", 65), "g4~"},
	}
	for _, tc := range tests {
		got := groupSet(4, tc.group)
		if !strings.HasPrefix(got, tc.want) || (tc.want == "g4~" && len(got) != 3+16) {
			t.Errorf("groupSet(%q) = %q, want %q…", tc.group, got, tc.want)
		}
	}
}

func TestDiff(t *testing.T) {
	snap1 := snapOf(ep("h1", "a", "v1", []string{"10.0.0.1"}, "x"), ep("h1", "b", "v2", []string{"10.0.0.2"}, "y"))
	snap2 := snapOf(ep("h1", "a", "v1", []string{"10.0.0.1"}, "x"), ep("h1", "b", "v2", []string{"10.0.0.2"}, "x"))
	s1, s2 := desired(snap1, "h1", DefaultOpen), desired(snap2, "h1", DefaultOpen)
	cx, cy := comboChain(4, []string{"x"}), comboChain(4, []string{"y"})

	stale := cloneState(s1)
	stale.Chains[chainFwd] = "old version"

	wrongKind := cloneState(s1)
	wrongKind.Sets[setAll4] = kindAddr6

	tests := []struct {
		name         string
		want, actual state
		plan         plan
	}{
		{name: "in sync", want: s1, actual: cloneState(s1), plan: plan{}},
		{
			name: "group change moves element, drops chain and set",
			want: s2, actual: cloneState(s1),
			plan: plan{
				DelElems:  map[string][]elem{mapDst4: {{"10.0.0.2", jumpPrefix + cy}}},
				AddElems:  map[string][]elem{mapDst4: {{"10.0.0.2", jumpPrefix + cx}}, "g4_x": {{"10.0.0.2", ""}}},
				DelChains: []string{cy},
				DelSets:   []string{"g4_y"},
			},
		},
		{
			name: "stale rules are rewritten",
			want: s1, actual: stale,
			plan: plan{Rewrite: []chainDef{{chainFwd, chainSpec{Kind: chainKindFwd}}}},
		},
		{name: "foreign set type rebuilds the table", want: s1, actual: wrongKind, plan: plan{DelTable: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := diff(tc.want, tc.actual)
			if d := cmp.Diff(tc.plan, got); d != "" {
				t.Errorf("diff (-want +got):\n%s", d)
			}
		})
	}

	t.Run("from nothing", func(t *testing.T) {
		p := diff(s1, newState())
		if !p.AddTable || len(p.AddSets) != len(s1.Sets) || len(p.AddChains) != len(s1.Chains) {
			t.Fatalf("got %+v, want table, %d sets, %d chains", p, len(s1.Sets), len(s1.Chains))
		}
		if k := p.AddChains[len(p.AddChains)-1].Spec.Kind; isBase(k) != 1 || isBase(p.AddChains[0].Spec.Kind) != 0 {
			t.Errorf("got chain order %v, want combo chains before base chains", p.AddChains)
		}
	})
}

// TestRuleCount pins the growth bound: rules depend on the group
// combinations in use on the host, not on the number of containers.
func TestRuleCount(t *testing.T) {
	build := func(containers, groups int) state {
		var eps []*petrelv1.Endpoint
		for i := range containers {
			host := "h1"
			if (i/groups)%2 == 1 {
				host = "h2"
			}
			eps = append(eps, ep(host, fmt.Sprint("c", i), fmt.Sprint("v", i),
				[]string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}, fmt.Sprint("g", i%groups)))
		}
		return desired(snapOf(eps...), "h1", DefaultOpen)
	}
	base := spoofRuleCount + fwdRuleCount + inRuleCount
	tests := []struct{ containers, groups, want int }{
		{10, 5, base + 5*2},
		{1000, 5, base + 5*2},
		{10000, 5, base + 5*2},
		{1000, 100, base + 100*2},
	}
	for _, tc := range tests {
		if got := ruleCount(build(tc.containers, tc.groups)); got != tc.want {
			t.Errorf("%d containers in %d groups: got %d rules, want %d", tc.containers, tc.groups, got, tc.want)
		}
	}
}

func TestGroupsFromLabels(t *testing.T) {
	tests := []struct {
		labels map[string]string
		want   []string
	}{
		{nil, nil},
		{map[string]string{"other": "a"}, nil},
		{map[string]string{LabelNetgroups: ""}, nil},
		{map[string]string{LabelNetgroups: "b, a,,a ,public"}, []string{"a", "b", "public"}},
	}
	for _, tc := range tests {
		if got := GroupsFromLabels(tc.labels); !slices.Equal(got, tc.want) {
			t.Errorf("GroupsFromLabels(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

func FuzzGroupsFromLabels(f *testing.F) {
	f.Add("a,b")        // plain list
	f.Add(" ,public, ") // blanks and the keyword
	f.Add("\x00,é,a b") // odd bytes
	f.Fuzz(func(t *testing.T, v string) {
		got := GroupsFromLabels(map[string]string{LabelNetgroups: v})
		if !slices.IsSorted(got) {
			t.Fatalf("got %q, want sorted", got)
		}
		for _, g := range got {
			if g == "" || strings.TrimSpace(g) != g {
				t.Fatalf("got group %q, want trimmed non-empty", g)
			}
			// Every name must map to a valid set name.
			if n := groupSet(4, g); len(n) > 70 {
				t.Fatalf("groupSet(%q) = %q: too long", g, n)
			}
		}
	})
}

// TestReconcileFake drives random transitions through the fake kernel: each
// reconcile converges in one batch, a second one changes nothing, and a new
// Policy adopts the table without change.
func TestReconcileFake(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel()
	p := newWithDeps("h1", DefaultClosed, k)
	r := rand.New(rand.NewPCG(1, 2))
	groups := []string{"a", "b", "c", "public", "weird name"}
	for step := range 200 {
		var eps []*petrelv1.Endpoint
		for i := range r.IntN(12) {
			var gs []string
			for _, g := range groups {
				if r.IntN(3) == 0 {
					gs = append(gs, g)
				}
			}
			ips := []string{fmt.Sprintf("10.0.0.%d", i+1)}
			if r.IntN(4) == 0 {
				ips = append(ips, fmt.Sprintf("fd00::%d", i+1))
			}
			eps = append(eps, ep([]string{"h1", "h2"}[r.IntN(2)], fmt.Sprint("c", i), fmt.Sprint("v", i), ips, gs...))
		}
		snap := snapOf(eps...)
		if err := p.Reconcile(ctx, snap); err != nil {
			t.Fatalf("step %d: Reconcile: %v", step, err)
		}
		want := desired(snap, "h1", DefaultClosed)
		if d := cmp.Diff(render(want), render(k.st)); d != "" {
			t.Fatalf("step %d: kernel (-want +got):\n%s", step, d)
		}
		n := k.applies
		if err := p.Reconcile(ctx, snap); err != nil || k.applies != n || p.Stats().Changed {
			t.Fatalf("step %d: second Reconcile: err %v, applies %d -> %d, want no change", step, err, n, k.applies)
		}
		if err := newWithDeps("h1", DefaultClosed, k).Reconcile(ctx, snap); err != nil || k.applies != n {
			t.Fatalf("step %d: adopting Reconcile: err %v, applies %d -> %d, want no change", step, err, n, k.applies)
		}
	}
}

func TestReconcileError(t *testing.T) {
	k := newFakeKernel()
	k.failErr = errors.New("boom")
	err := newWithDeps("h1", DefaultOpen, k).Reconcile(context.Background(), snapOf())
	if !errors.Is(err, k.failErr) {
		t.Fatalf("got %v, want wrapped boom", err)
	}
}

// TestReconcileCache: with the ruleset generation unchanged the kernel is not
// read back; a change by another program bumps it and gets repaired.
func TestReconcileCache(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel()
	p := newWithDeps("h1", DefaultOpen, k)
	snap := snapOf(ep("h1", "a", "v1", []string{"10.0.0.1"}, "x"))
	if err := p.Reconcile(ctx, snap); err != nil {
		t.Fatal(err)
	}
	reads := k.reads
	if err := p.Reconcile(ctx, snap); err != nil || k.reads != reads {
		t.Fatalf("unchanged generation: err %v, reads %d -> %d, want no read", err, reads, k.reads)
	}
	k.tamper(func(s *state) { delete(s.Elems["g4_x"], "10.0.0.1") })
	if err := p.Reconcile(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if k.reads != reads+1 || !p.Stats().Changed {
		t.Fatalf("after tampering: reads %d -> %d, changed %v; want one read and a repair", reads, k.reads, p.Stats().Changed)
	}
	if _, ok := k.st.Elems["g4_x"]["10.0.0.1"]; !ok {
		t.Fatalf("got g4_x %v, want 10.0.0.1 restored", k.st.Elems["g4_x"])
	}
}
