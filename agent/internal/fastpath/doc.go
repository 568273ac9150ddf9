// Package fastpath forwards IPv4 between local containers and the underlay
// with a tc eBPF program instead of the kernel's IP forwarding, an option
// (petreld --fast-path) for hosts that run without netgroup policy.
//
// The routed dataplane forwards every packet twice between two hosts: the
// sending host takes it from the container's veth through ip_rcv, a FIB
// lookup and ip_forward onto the underlay, and the receiving host does the
// same onto the destination's veth, which queues it once more for the
// container. The program, attached to the ingress (clsact, direct action) of
// each local container's host-side veth and of the underlay device, does the
// same FIB lookup itself (bpf_fib_lookup, with the kernel's routes and
// neighbours, so the route reconciler stays the only source of truth),
// decrements the TTL, rewrites the Ethernet addresses, and hands the packet
// straight to the device the route names: bpf_redirect_peer into a local
// container's namespace, bpf_redirect out of the underlay.
//
// It forwards only what the kernel would have forwarded the same way:
//
//   - IPv4 without options and with a TTL above 1 (IPv6, ICMP errors for an
//     expiring TTL and everything else go up the stack);
//   - from a container only when the source is one of that container's
//     addresses (anti-spoofing, the job rp_filter does on the kernel path);
//   - to the underlay only when the route's next hop is a Petrel host's
//     underlay address, so traffic to other networks keeps going through the
//     host's netfilter (NAT, firewall); never from the underlay back out of it;
//   - only when the route is complete (a resolved neighbour, a packet that
//     fits the MTU); every other result goes up the stack unchanged, which
//     resolves the neighbour or sends the ICMP error.
//
// Redirected packets skip the netfilter forward hook, which is why the agent
// refuses the fast path together with netgroup policy.
//
// The reconciler keeps one hash map, keyed by (ifindex, IPv4 address), in
// line with the registry: the local endpoints' host-side veths and their
// addresses, the underlay, and the other hosts' underlay addresses. Full
// reconciles diff the desired map against the kernel's; watch batches update
// only the endpoints and hosts they touched. The dataplane writes an
// endpoint's record while it creates the veth, so a record can arrive
// before its link: such an endpoint waits, and Run, which follows the
// namespace's new links over netlink, completes it when the link appears.
// The tc filters hold the program
// and its map, so forwarding goes on while petreld restarts; a new agent
// loads its own program, fills its map and then replaces each filter, an
// atomic swap.
package fastpath
