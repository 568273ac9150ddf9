// Package policy holds the framework tests of netgroup isolation: the
// net-modules test matrix (mesos-protocols.md §1.8) reproduced on real
// network namespaces across two hosts, and the policy benchmarks.
package policy
