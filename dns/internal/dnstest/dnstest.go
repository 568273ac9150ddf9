// Package dnstest holds test helpers for petrel-dns: a sample Mesos state
// (the mesos-dns reference sample) and a recording dns.ResponseWriter.
package dnstest

import (
	"net"

	"github.com/miekg/dns"
)

// SampleState exercises netinfo v4+v6, DiscoveryInfo named ports, the Docker
// and Mesos labels, host fallback, an IPv6 agent, non-running and orphan
// tasks, an odd framework name and a Marathon nested group.
const SampleState = `{
  "leader": "master@127.0.0.1:15050",
  "slaves": [
    {"id": "20170101-000000-16777343-5050-1234-S0", "pid": "slave(1)@10.0.1.10:5051", "hostname": "agent-a"},
    {"id": "20170101-000000-16777343-5050-1234-S1", "pid": "slave(1)@10.0.1.11:5051", "hostname": "agent-b"},
    {"id": "20170101-000000-16777343-5050-1234-S2", "pid": "slave(1)@[2001:db8::11]:5051", "hostname": "agent-c"}
  ],
  "frameworks": [
    {"id": "fw-1", "name": "marathon", "pid": "scheduler-6c4bb2c7@10.0.0.2:8080", "hostname": "m1", "tasks": [
      {"id": "web.11111111-aaaa-11e6-a088-c20493233aa5", "name": "web",
       "slave_id": "20170101-000000-16777343-5050-1234-S0", "state": "TASK_RUNNING",
       "resources": {"ports": "[31000-31001]"},
       "discovery": {"visibility": "FRAMEWORK", "name": "web", "ports": {"ports": [
          {"number": 8080, "name": "http", "protocol": "tcp"}, {"number": 8443, "name": "https", "protocol": "tcp"}]}},
       "statuses": [{"state": "TASK_STARTING", "timestamp": 1500000000.0},
                    {"state": "TASK_RUNNING", "timestamp": 1500000001.5,
                     "container_status": {"container_id": {"value": "c-web"}, "network_infos": [{"ip_addresses": [
                        {"ip_address": "9.0.1.5"}, {"ip_address": "fd01:b::1:8000:5"}]}]}}]},
      {"id": "prod_api_server.22222222-aaaa-11e6-a088-c20493233aa5", "name": "server.api.prod",
       "slave_id": "20170101-000000-16777343-5050-1234-S1", "state": "TASK_RUNNING",
       "resources": {"ports": "[31500-31500]"},
       "discovery": {"name": "server.api.prod", "ports": {"ports": [{"number": 31500, "name": "api", "protocol": "tcp"}]}},
       "statuses": [{"state": "TASK_RUNNING", "timestamp": 1500000002.0}]},
      {"id": "db.33333333-aaaa-11e6-a088-c20493233aa5", "name": "db",
       "slave_id": "20170101-000000-16777343-5050-1234-S1", "state": "TASK_RUNNING",
       "resources": {"ports": "[31200-31200]"},
       "statuses": [{"state": "TASK_RUNNING", "timestamp": 1500000003.0,
                     "container_status": {"container_id": {"value": "c-db"}},
                     "labels": [{"key": "Docker.NetworkSettings.IPAddress", "value": "172.17.0.2"}]}]},
      {"id": "cache.44444444-aaaa-11e6-a088-c20493233aa5", "name": "cache",
       "slave_id": "20170101-000000-16777343-5050-1234-S0", "state": "TASK_RUNNING", "resources": {"ports": "[]"},
       "statuses": [{"state": "TASK_RUNNING", "timestamp": 1500000004.0,
                     "labels": [{"key": "MesosContainerizer.NetworkSettings.IPAddress", "value": "9.0.2.7"}]}]},
      {"id": "v6only.55555555-aaaa-11e6-a088-c20493233aa5", "name": "v6only",
       "slave_id": "20170101-000000-16777343-5050-1234-S2", "state": "TASK_RUNNING", "resources": {"ports": "[31300-31300]"},
       "statuses": [{"state": "TASK_RUNNING", "timestamp": 1500000005.0}]},
      {"id": "old.66666666-aaaa-11e6-a088-c20493233aa5", "name": "old",
       "slave_id": "20170101-000000-16777343-5050-1234-S0", "state": "TASK_KILLED", "statuses": []},
      {"id": "lost.77777777-aaaa-11e6-a088-c20493233aa5", "name": "lost",
       "slave_id": "20170101-000000-16777343-5050-1234-S9", "state": "TASK_RUNNING", "statuses": []}]},
    {"id": "fw-2", "name": "My Framework.v2", "pid": "scheduler(1)@10.0.0.3:9090", "tasks": [
      {"id": "batch.job_1.88888888", "name": "Batch.Job_1!",
       "slave_id": "20170101-000000-16777343-5050-1234-S1", "state": "TASK_RUNNING",
       "resources": {"ports": "[31600-31600, 31605-31606]"},
       "statuses": [{"state": "TASK_RUNNING", "timestamp": 1500000008.0}]}]},
    {"id": "fw-3", "name": "broken", "pid": "", "hostname": "", "tasks": []}
  ]
}`

// Recorder is a dns.ResponseWriter that keeps the reply.
type Recorder struct {
	TCP bool
	Msg *dns.Msg
	Raw []byte
	Err error
}

var _ dns.ResponseWriter = (*Recorder)(nil)

// LocalAddr implements dns.ResponseWriter.
func (r *Recorder) LocalAddr() net.Addr { return r.addr(53) }

// RemoteAddr implements dns.ResponseWriter.
func (r *Recorder) RemoteAddr() net.Addr { return r.addr(40000) }

func (r *Recorder) addr(port int) net.Addr {
	if r.TCP {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
}

// WriteMsg implements dns.ResponseWriter.
func (r *Recorder) WriteMsg(m *dns.Msg) error {
	r.Msg = m
	return nil
}

// Write implements dns.ResponseWriter: the raw reply is unpacked into Msg.
func (r *Recorder) Write(b []byte) (int, error) {
	r.Raw = append([]byte(nil), b...)
	m := new(dns.Msg)
	r.Err = m.Unpack(b)
	r.Msg = m
	return len(b), nil
}

// Close implements dns.ResponseWriter.
func (r *Recorder) Close() error { return nil }

// TsigStatus implements dns.ResponseWriter.
func (r *Recorder) TsigStatus() error { return nil }

// TsigTimersOnly implements dns.ResponseWriter.
func (r *Recorder) TsigTimersOnly(bool) {}

// Hijack implements dns.ResponseWriter.
func (r *Recorder) Hijack() {}
