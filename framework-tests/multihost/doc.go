// Package multihost holds the framework tests of Petrel across hosts: four
// host namespaces (three on one underlay subnet joined by a bridge in its own
// namespace, one behind a router namespace), one petreld per host against a
// real 3-member etcd cluster of separate processes (one run with TLS), and
// containers attached through petreld's gRPC API. Run as root:
//
//	go test -v -count=1 ./framework-tests/multihost/
//
// The benchmarks (convergence with 3 real agents plus 100 simulated
// watchers, iperf3 throughput, one agent fed 1,000 simulated hosts) run with
// the command below. The throughput benchmark adds a second lab, two hosts
// whose underlay is one veth (a cable), so that the routed path is compared
// with the bare veth without the bridge namespace's forwarding on the same
// CPUs; the bridged figures are reported beside it.
//
//	go test -run '^$' -bench . -benchtime 1x ./framework-tests/multihost/
package multihost
