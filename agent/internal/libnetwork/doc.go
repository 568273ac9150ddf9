// Package libnetwork serves Docker's remote NetworkDriver and IpamDriver
// plugin protocols (JSON over HTTP on a unix socket, driver name "petrel")
// on top of Petrel's IPAM and dataplane.
//
// Decisions, recorded here because Docker's protocol leaves them open:
//
//   - Scope. GetCapabilities answers Scope "local" with ConnectivityScope
//     "global". Docker refuses a global-scope remote network outside a swarm
//     ("This node is not a swarm manager", checked on Docker 20.10), and
//     Petrel does not need Docker to share network objects: its etcd IPAM
//     and routes already make one pool routable across hosts. An operator
//     runs the same `docker network create --subnet <pool>` on every host
//     and the containers reach each other.
//   - Pool binding. RequestPool binds a Docker network to the Petrel pool that
//     equals or contains --subnet, or to the pool named by the IPAM option
//     petrel.pool=<name>. The pool ID is self-describing
//     ("petrel:<pool>:<subnet>"), so the IPAM side keeps no state. A --subnet
//     smaller than its pool binds to the whole pool: addresses may come from
//     anywhere in the pool. --ip-range is refused.
//   - Gateway. RequestPool hands Docker the gateway 169.254.1.1/32 in its Data,
//     so Docker never asks for a gateway address and none is spent. An explicit
//     gateway request is answered with 169.254.1.1/32 without reserving
//     anything; any other --gateway is refused.
//   - Handles. RequestAddress allocates with a fresh handle "docker-<hex>"
//     (Docker does not tell the IPAM driver the endpoint ID). ReleaseAddress
//     finds the handle in the address's allocation record and releases by it;
//     an address that is already free, or not held by a Docker handle, is a
//     successful no-op. CreateEndpoint copies the handle onto the endpoint, so
//     leak checks tie the address to its endpoint.
//   - Names. Docker sends IDs only. A background resolver reads names and
//     labels from the Docker Engine API (events stream plus inspect calls) and
//     writes them onto endpoint and network records. No plugin request ever
//     waits for Docker: Docker waits for its plugins while it starts, and
//     Calico's plugin deadlocked there.
//   - Strict decoding. Bodies are limited to 1 MiB, must be one JSON object
//     with correctly typed fields and nothing after it. Unknown fields are
//     accepted, because newer Docker versions add fields.
package libnetwork
