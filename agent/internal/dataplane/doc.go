// Package dataplane wires containers into the host's routed network and keeps
// the endpoint registry.
//
// Each container interface is one veth pair. The host side is named from the
// container ID and interface name (HostIfName), carries the fixed MAC
// ee:ee:ee:ee:ee:ee, has proxy ARP on and strict reverse-path filtering, and
// is the target of one /32 (or /128) route per container address. Nothing is
// bridged. The container side carries IP/32 (and IP/128, without DAD) and a
// default route via 169.254.1.1 onlink for IPv4 and via the host side's
// link-local address fe80::ecee:eeff:feee:eeee onlink for IPv6. Both
// gateways also get a permanent neighbour entry in the container, so the
// first packet does not wait for ARP or NDP, and the host needs no route to
// 169.254.1.1 for proxy ARP to work.
//
// IPv6 choice (instead of proxy NDP): the host side's link-local address is
// derived from the fixed MAC, so it is the same on every host veth and can be
// named as the gateway before the link exists. The agent adds it itself with
// IFA_F_NODAD before the link comes up, so it is usable at once; no proxy NDP
// entries are needed because the gateway is a real address of the host side.
//
// The dataplane can run inside a given host network namespace. Host-side
// netlink work goes through a handle opened in that namespace; only
// per-interface sysctls need a thread switch (Linux has no netlink call for
// them), done through one ns.Do-style helper on a locked OS thread.
//
// Attach, Detach and Reconcile decide first, from an observation of the
// kernel and the registry, and then act: planAttach and planReconcile are
// pure functions.
package dataplane
