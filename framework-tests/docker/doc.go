// Package docker holds the framework tests of Petrel's Docker path: the
// libnetwork NetworkDriver and IpamDriver named petrel, driven by the real
// Docker engine of the machine, with the agent in the root network namespace.
// The tests skip without a Docker engine unless PETREL_REQUIRE_DOCKER=1, when
// they fail instead.
package docker
