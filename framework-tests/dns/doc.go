// Package dns holds Petrel's end-to-end DNS tests: petreld attaches
// containers through the net-modules and CNI shims on a real kernel (in
// namespaces the tests make), petrel-dns runs as a process against the same
// real etcd and a fake Mesos master, and the tests assert what names
// resolve to, over DNS and the HTTP API.
package dns
