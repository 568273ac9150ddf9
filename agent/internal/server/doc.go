// Package server implements petreld's gRPC services (petrel.v1 IPAM, Cluster
// and, from the dataplane component, Dataplane) on top of the agent's
// components. It validates requests, maps domain errors to gRPC status codes
// in one place (errors.go), and records per-RPC metrics.
//
// Each service is a struct that holds its dependencies behind small
// interfaces owned here, so tests can run the real gRPC path against fakes or
// against the real components and a real etcd.
package server
