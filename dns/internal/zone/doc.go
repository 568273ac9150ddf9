// Package zone builds the Mesos-DNS record set and keeps it in an in-memory
// index that is patched per event: a new master state changes only the
// records of tasks, agents and frameworks that differ from the last one, and a
// registry event changes only its endpoint's records and the tasks that use
// its container ID. Queries read the index concurrently and never wait for a
// rebuild.
package zone
