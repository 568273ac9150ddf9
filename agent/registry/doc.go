// Package registry defines Petrel's etcd key layout and the codecs of the
// records stored there: endpoints, hosts and applied revisions. It is the one
// place that knows key names; the agent, petrelctl and petrel-dns all import
// it. Records are stored as protojson of the petrel.v1 messages so that an
// operator can read them with etcdctl.
package registry
