package routes

import (
	"fmt"
	"net/netip"

	"github.com/petrel-net/petrel/agent/registry"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// SimHost is the host record a simulated host publishes (for benchmarks).
func SimHost(name, addr, subnet string) *petrelv1.Host {
	a := netip.MustParseAddr(addr)
	return &petrelv1.Host{Name: name, Address: addr, Subnet: subnet, Mtu: 1500, VxlanMac: VTEPMAC(a), VxlanAddress: addr}
}

// SimulatedCluster builds the state of n simulated hosts with three blocks each
// and borrowed addresses: one in ten hosts sits on another subnet (VXLAN).
// The local host is "self" at 10.96.0.1 on 10.96.0.0/14.
func SimulatedCluster(n, borrowed int) (*registry.Snapshot, *petrelv1.Host) {
	s := &registry.Snapshot{
		Hosts:       map[string]*petrelv1.Host{},
		Blocks:      map[string]registry.Block{},
		Allocations: map[string]registry.Allocation{},
		Endpoints:   map[string]*petrelv1.Endpoint{},
	}
	self := SimHost("self", "10.96.0.1", "10.96.0.0/14")
	s.Hosts["self"] = self
	for i := range n {
		name := fmt.Sprintf("sim%04d", i)
		addr := fmt.Sprintf("10.97.%d.%d", i/250, i%250+1)
		subnet := "10.96.0.0/14"
		if i%10 == 0 {
			addr = fmt.Sprintf("10.200.%d.%d", i/250, i%250+1)
			subnet = "10.200.0.0/16"
		}
		s.Hosts[name] = SimHost(name, addr, subnet)
		for j := range 3 {
			b := i*3 + j
			cidr := fmt.Sprintf("10.%d.%d.%d/26", 16+b/1024, (b/4)%256, (b%4)*64)
			s.Blocks[cidr] = registry.Block{Pool: "p", CIDR: cidr, Host: name}
		}
	}
	for k := range borrowed {
		b := k % (n * 3)
		ip := fmt.Sprintf("10.%d.%d.%d", 16+b/1024, (b/4)%256, (b%4)*64+1+k/(n*3))
		owner := s.Blocks[fmt.Sprintf("10.%d.%d.%d/26", 16+b/1024, (b/4)%256, (b%4)*64)].Host
		holder := fmt.Sprintf("sim%04d", (k*7+1)%n)
		if holder == owner {
			holder = fmt.Sprintf("sim%04d", (k*7+2)%n)
		}
		s.Allocations[ip] = registry.Allocation{IP: ip, Host: holder, Pool: "p",
			Block: fmt.Sprintf("10.%d.%d.%d/26", 16+b/1024, (b/4)%256, (b%4)*64)}
	}
	return s, self
}
