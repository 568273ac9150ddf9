package dataplane

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestPlanAttach(t *testing.T) {
	w := attachWant{hostName: "ptl0123456789ab", netns: "/n", ifname: "eth0", mtu: 1450, prefixes: pfx("10.0.0.2/32", "fd00::2/128")}
	healthyHost := hostObs{Exists: true, IsVeth: true, Index: 5, PeerIndex: 2, Up: true, MTU: 1450, MACOK: true,
		ProxyARP: true, RPFilter: true, LinkLocal: true, Routes: pfx("10.0.0.2/32", "fd00::2/128")}
	healthyCtr := ctrObs{Exists: true, Index: 2, PeerIndex: 5, Up: true, LoUp: true, MTU: 1450, Addrs: pfx("10.0.0.2/32", "fd00::2/128"),
		DefaultV4: true, DefaultV6: true, NeighV4: true, NeighV6: true}
	full := attachPlan{create: true, configureHost: true, routesAdd: w.prefixes, configureCtr: true,
		ctr: ctrConfig{mtu: 1450, addrAdd: w.prefixes, v4: true, v6: true}}
	fullRebuild := full
	fullRebuild.deleteHost = true

	tests := []struct {
		name    string
		h       hostObs
		c       ctrObs
		want    attachPlan
		wantErr error
	}{
		{name: "fresh", want: full},
		{name: "healthy", h: healthyHost, c: healthyCtr, want: attachPlan{ctr: ctrConfig{mtu: 1450, v4: true, v6: true}}},
		{name: "host veth without peer", h: healthyHost, want: fullRebuild},
		{name: "foreign eth0", c: ctrObs{Exists: true, Index: 2, PeerIndex: 9}, wantErr: ErrIfnameInUse},
		{name: "eth0 peer of another veth", h: healthyHost, c: ctrObs{Exists: true, Index: 3, PeerIndex: 7}, wantErr: ErrIfnameInUse},
		{
			name: "missing route and stray route",
			h:    func() hostObs { h := healthyHost; h.Routes = pfx("10.0.0.2/32", "10.0.0.9/32"); return h }(),
			c:    healthyCtr,
			want: attachPlan{routesAdd: pfx("fd00::2/128"), routesDel: pfx("10.0.0.9/32"), ctr: ctrConfig{mtu: 1450, v4: true, v6: true}},
		},
		{
			name: "proxy_arp off",
			h:    func() hostObs { h := healthyHost; h.ProxyARP = false; return h }(),
			c:    healthyCtr,
			want: attachPlan{configureHost: true, ctr: ctrConfig{mtu: 1450, v4: true, v6: true}},
		},
		{
			name: "container lost an address and has a stray one",
			h:    healthyHost,
			c:    func() ctrObs { c := healthyCtr; c.Addrs = pfx("fd00::2/128", "10.9.9.9/32"); return c }(),
			want: attachPlan{configureCtr: true, ctr: ctrConfig{mtu: 1450, v4: true, v6: true, addrAdd: pfx("10.0.0.2/32"), addrDel: pfx("10.9.9.9/32")}},
		},
		{
			name: "container default route missing",
			h:    healthyHost,
			c:    func() ctrObs { c := healthyCtr; c.DefaultV6 = false; return c }(),
			want: attachPlan{configureCtr: true, ctr: ctrConfig{mtu: 1450, v4: true, v6: true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planAttach(w, tc.h, tc.c)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(attachPlan{}, ctrConfig{}), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if tc.name == "healthy" && !got.empty() {
				t.Errorf("healthy endpoint gives a non-empty plan")
			}
		})
	}
}

func TestPlanAttachHostSideOnly(t *testing.T) {
	w := attachWant{hostName: "ptl0123456789ab", ifname: "eth0", tempName: "ptc0123456789ab", hostSideOnly: true, mtu: 1500, prefixes: pfx("10.0.0.2/32")}
	got, _ := planAttach(w, hostObs{}, ctrObs{})
	if !got.create || got.configureCtr {
		t.Errorf("fresh host-side-only plan = %+v, want create without container work", got)
	}
	h := hostObs{Exists: true, IsVeth: true, Up: true, MTU: 1500, MACOK: true, ProxyARP: true, RPFilter: true, Routes: pfx("10.0.0.2/32")}
	if got, _ := planAttach(w, h, ctrObs{}); !got.empty() {
		t.Errorf("existing host-side-only plan = %+v, want empty", got)
	}
}

func ep(id, netns, hostIf string) StoredEndpoint {
	return StoredEndpoint{Endpoint: &petrelv1.Endpoint{ContainerId: id, Netns: netns, Ifname: "eth0", HostIfname: hostIf}, Revision: 1}
}

func TestPlanReconcile(t *testing.T) {
	hA, hB, hC, hD, hO := HostIfName("a", "eth0"), HostIfName("b", "eth0"), HostIfName("c", "eth0"), HostIfName("d", "eth0"), HostIfName("orphan", "eth0")
	recs := []StoredEndpoint{
		ep("a", "/run/netns/a", hA), // alive, veth present: repair (maybe no-op)
		ep("b", "/run/netns/b", hB), // netns gone: remove
		ep("c", "/run/netns/c", hC), // alive, veth missing: repair (rebuild)
		ep("d", "", hD),             // docker, veth present: repair
		ep("e", "", ""),             // docker, veth missing: remove
	}
	ifs := []string{hO, hA, hB, hD}
	alive := map[string]bool{"/run/netns/a": true, "/run/netns/c": true}
	p := planReconcile(recs, ifs, alive)
	ids := func(rs []StoredEndpoint) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Endpoint.GetContainerId())
		}
		return out
	}
	if diff := cmp.Diff([]string{"b", "e"}, ids(p.remove)); diff != "" {
		t.Errorf("remove (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "c", "d"}, ids(p.repair)); diff != "" {
		t.Errorf("repair (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{hO}, p.deleteIfs); diff != "" {
		t.Errorf("deleteIfs (-want +got):\n%s", diff)
	}
}

func TestHostIfName(t *testing.T) {
	n := HostIfName("0123456789abcdef", "eth0")
	if len(n) != 15 || !IsHostIfName(n) {
		t.Errorf("HostIfName = %q (len %d), want 15 chars matching the pattern", n, len(n))
	}
	if HostIfName("x", "eth0") == HostIfName("x", "eth1") {
		t.Errorf("names collide across ifnames")
	}
	for _, bad := range []string{"ptl-abc", "ptl0123456789abz", "eth0", "ptl0123456789ab0"} {
		if IsHostIfName(bad) {
			t.Errorf("IsHostIfName(%q) = true", bad)
		}
	}
	mac := ContainerMAC("x", "eth0")
	if mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Errorf("ContainerMAC %s is not locally administered unicast", mac)
	}
}
