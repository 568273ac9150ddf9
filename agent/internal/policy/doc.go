// Package policy enforces netgroup isolation and anti-spoofing with nftables.
//
// Semantics (issue 7; net-modules / Calico netgroups):
//
//   - Two containers reach each other when they share a netgroup. Netgroups
//     come from net-modules "netgroups", Marathon ipAddress.groups (CNI args
//     org.apache.mesos.network_info.groups), or the Docker label
//     LabelNetgroups ("petrel.netgroups", a comma-separated list) on the
//     network or the container; see GroupsFromLabels.
//   - A container in the group "public" can be reached by everyone.
//   - Enforcement is on ingress only, at the destination host: a packet
//     forwarded to a local container is checked against the destination's
//     groups. Egress is not restricted; the receiving host decides.
//   - A container always reaches its own host, and the host (agent,
//     executor) always reaches its containers: the input and output hooks are
//     not filtered.
//   - Sources that are not container addresses (hosts, host-networked tasks,
//     anything outside the registry) are never dropped by policy; isolation
//     is between containers. Host-networked tasks are untouched.
//   - A container with no group follows the Default: DefaultOpen (the
//     default) makes it reachable by every container; DefaultClosed makes it
//     reachable by no container (only by its host and non-container
//     sources). Either way it reaches containers whose groups admit it (for
//     a group-less container: only "public" ones, and group-less ones when
//     open).
//   - Replies of an accepted flow are accepted (conntrack established or
//     related), so leaving a group stops new flows, not established ones.
//   - Anti-spoofing: a packet arriving from a local container's host-side
//     veth whose source address is not one of that container's addresses is
//     dropped, whatever its groups (IPv6 link-local and the unspecified
//     address are let through for neighbour discovery). nftables checks the
//     first packet of every IPv4 flow and every IPv6 packet, forwarded or
//     addressed to the host; the later packets of an established IPv4 flow
//     are checked by the kernel's strict reverse-path filter, which the
//     dataplane sets on every host-side veth (a forged source does not route
//     back through the veth it came in on). Per-packet set lookups on the
//     hot path cost 3 to 5% of throughput; rp_filter costs nothing extra, as
//     the route lookup happens anyway.
//
// Everything lives in one table, "inet petrel", inside the host network
// namespace. Membership is held in sets fed from the endpoint registry
// (local and remote endpoints alike):
//
//	set e4, e6            every container address in the cluster
//	set g4_<grp>, g6_<grp> the addresses of one group's members
//	set cifs              local containers' host-side interfaces
//	set own4, own6        (host ifname . address) pairs of local containers
//	map dst4, dst6        local container address -> verdict (jump c4_<combo>)
//	chain fwd   (forward, filter)  IPv4 established, jump spoof, established,
//	                               non-container source, dst vmap
//	chain in    (input, filter)    IPv4 established, jump spoof
//	chain spoof                    anti-spoofing (counted drops)
//	chain c4_<h>, c6_<h>  one per distinct group combination of local
//	                      containers: "saddr @g4_<grp> accept" per group, drop
//
// so the rule count grows with the number of group combinations in use on
// the host, never with the number of containers.
//
// Reconcile computes the desired table from a registry.Snapshot, reads the
// kernel's table back (unless the ruleset generation shows that nobody
// changed it since our last batch), and applies only the difference in one
// netlink batch. ReconcileChanged, which the cluster watch loop calls after
// each batch of registry changes, updates the last desired table for just
// the changed endpoints through a per-endpoint reference-counted index
// (index.go), so that its cost follows the change rather than the number of
// endpoints; it falls back to Reconcile at start, after an error, and when
// the generation moved. The table is never flushed and reloaded, so it
// survives agent restarts and is adopted by the next agent.
package policy
