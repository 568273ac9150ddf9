package libnetwork

// Wire types of Docker's remote NetworkDriver and IpamDriver protocols. Field
// names are Docker's; see moby/libnetwork docs/remote.md and docs/ipam.md.

// Plugin discovery and naming.
const (
	// DriverName is the name of both drivers, so `-d petrel --ipam-driver petrel`.
	DriverName = "petrel"
	// DefaultSocketDir is where Docker looks for plugin sockets.
	DefaultSocketDir = "/run/docker/plugins"
	// contentType is what Docker's plugin client sends and expects.
	contentType = "application/vnd.docker.plugins.v1.1+json"
)

// Docker option and label keys the drivers read or write.
const (
	// optGateway is the IPAM Data key (and RequestAddressType value) for a
	// network's gateway.
	optGateway = "com.docker.network.gateway"
	// optRequestAddressType tells RequestAddress what the address is for.
	optRequestAddressType = "RequestAddressType"
	// optPool is the IPAM option naming a Petrel pool (--ipam-opt petrel.pool=x).
	optPool = "petrel.pool"
	// optGeneric carries driver options (-o) in CreateNetwork.
	optGeneric = "com.docker.network.generic"
)

// Address spaces the IPAM driver reports; CreateNetwork accepts only these,
// so a Petrel network always has Petrel addresses.
const (
	localAddressSpace  = "PetrelLocal"
	globalAddressSpace = "PetrelGlobal"
)

// Gateways handed to containers: every Petrel container routes via a
// link-local next hop answered by proxy ARP on the host side of its veth.
const (
	gatewayV4     = "169.254.1.1"
	gatewayV4CIDR = "169.254.1.1/32"
	gatewayV6CIDR = "fe80::1/128"
)

// Route types of a JoinResponse StaticRoute.
const (
	routeNextHop   = 0
	routeConnected = 1
)

// errResponse is every failure: HTTP 500 with {"Err": "..."}.
type errResponse struct {
	Err string
}

type activateResponse struct {
	Implements []string
}

type capabilitiesResponse struct {
	Scope             string
	ConnectivityScope string
}

// IPAMData describes one address pool of a network in CreateNetwork and
// AllocateNetwork.
type IPAMData struct {
	AddressSpace string            `json:",omitempty"`
	Pool         string            `json:",omitempty"`
	Gateway      string            `json:",omitempty"`
	AuxAddresses map[string]string `json:",omitempty"`
}

// CreateNetworkRequest is /NetworkDriver.CreateNetwork.
type CreateNetworkRequest struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []IPAMData
	IPv6Data  []IPAMData
}

// AllocateNetworkRequest is /NetworkDriver.AllocateNetwork (swarm managers).
type AllocateNetworkRequest struct {
	NetworkID string
	Options   map[string]string
	IPv4Data  []IPAMData
	IPv6Data  []IPAMData
}

type allocateNetworkResponse struct {
	Options map[string]string
}

// NetworkRequest is DeleteNetwork and FreeNetwork.
type NetworkRequest struct {
	NetworkID string
}

// EndpointInterface is the interface part of CreateEndpoint.
type EndpointInterface struct {
	Address     string `json:",omitempty"`
	AddressIPv6 string `json:",omitempty"`
	MacAddress  string `json:",omitempty"`
}

// CreateEndpointRequest is /NetworkDriver.CreateEndpoint.
type CreateEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  *EndpointInterface
	Options    map[string]any
}

type createEndpointResponse struct {
	Interface *EndpointInterface `json:",omitempty"`
}

// EndpointRequest is DeleteEndpoint, EndpointOperInfo, Leave and
// RevokeExternalConnectivity.
type EndpointRequest struct {
	NetworkID  string
	EndpointID string
}

type operInfoResponse struct {
	Value map[string]string
}

// JoinRequest is /NetworkDriver.Join.
type JoinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type interfaceName struct {
	SrcName   string
	DstPrefix string
}

type staticRoute struct {
	Destination string
	RouteType   int
	NextHop     string `json:",omitempty"`
}

type joinResponse struct {
	InterfaceName         interfaceName
	Gateway               string `json:",omitempty"`
	GatewayIPv6           string `json:",omitempty"`
	StaticRoutes          []staticRoute
	DisableGatewayService bool
}

// DiscoveryRequest is DiscoverNew and DiscoverDelete.
type DiscoveryRequest struct {
	DiscoveryType int
	DiscoveryData any
}

// ExternalConnectivityRequest is ProgramExternalConnectivity.
type ExternalConnectivityRequest struct {
	NetworkID  string
	EndpointID string
	Options    map[string]any
}

type ipamCapabilitiesResponse struct {
	RequiresMACAddress    bool
	RequiresRequestReplay bool
}

type addressSpacesResponse struct {
	LocalDefaultAddressSpace  string
	GlobalDefaultAddressSpace string
}

// RequestPoolRequest is /IpamDriver.RequestPool.
type RequestPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type requestPoolResponse struct {
	PoolID string
	Pool   string
	Data   map[string]string
}

// ReleasePoolRequest is /IpamDriver.ReleasePool.
type ReleasePoolRequest struct {
	PoolID string
}

// RequestAddressRequest is /IpamDriver.RequestAddress.
type RequestAddressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

type requestAddressResponse struct {
	Address string
	Data    map[string]string
}

// ReleaseAddressRequest is /IpamDriver.ReleaseAddress.
type ReleaseAddressRequest struct {
	PoolID  string
	Address string
}

type empty struct{}
