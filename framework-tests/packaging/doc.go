// Package packaging checks that what operators copy from deploy/ works as it
// stands: the DC/OS package renders to valid Marathon apps that use real
// petreld and petrel-dns flags, and the Mesos and CNI configs name the paths
// that `make install` puts on disk.
package packaging
