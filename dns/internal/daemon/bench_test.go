package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mesos/mesos-go/api/v1/lib/recordio"
	"github.com/miekg/dns"

	agentreg "github.com/petrel-net/petrel/agent/registry"
	"github.com/petrel-net/petrel/framework-tests/testutil"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// benchMaster serves a synthetic state of n tasks and a SUBSCRIBE stream
// that emits TASK_ADDED whenever a task is added.
type benchMaster struct {
	mu     sync.Mutex
	body   []byte
	tasks  []map[string]any
	subs   []chan struct{}
	leader string
}

func (m *benchMaster) task(i int, ip string) map[string]any {
	return map[string]any{
		"id": fmt.Sprintf("t%d.%08d", i, i), "name": fmt.Sprintf("task%d", i), "slave_id": "S-S0",
		"state": "TASK_RUNNING", "resources": map[string]any{"ports": "[31000-31001]"},
		"statuses": []any{map[string]any{"state": "TASK_RUNNING", "timestamp": 1.0,
			"container_status": map[string]any{"container_id": map[string]any{"value": fmt.Sprintf("c%d", i)},
				"network_infos": []any{map[string]any{"ip_addresses": []any{map[string]any{"ip_address": ip}}}}}}},
	}
}

func (m *benchMaster) render() {
	b, _ := json.Marshal(map[string]any{
		"leader": "master@" + m.leader,
		"slaves": []any{map[string]any{"id": "S-S0", "pid": "slave(1)@10.1.0.1:5051"}},
		"frameworks": []any{map[string]any{"id": "fw", "name": "marathon", "pid": "s@10.0.0.2:8080",
			"tasks": m.tasks}},
	})
	m.body = b
}

// add publishes one more task and notifies subscribers; the returned time
// is when the master "shows" the task.
func (m *benchMaster) add(i int) time.Time {
	m.mu.Lock()
	m.tasks = append(m.tasks, m.task(i, fmt.Sprintf("10.3.%d.%d", i/250%250, i%250+1)))
	m.render()
	subs := slices.Clone(m.subs)
	m.mu.Unlock()
	t := time.Now()
	for _, s := range subs {
		select {
		case s <- struct{}{}:
		default:
		}
	}
	return t
}

func (m *benchMaster) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/master/state":
		m.mu.Lock()
		b := m.body
		m.mu.Unlock()
		_, _ = w.Write(b)
	case "/api/v1":
		_, _ = io.Copy(io.Discard, r.Body)
		ch := make(chan struct{}, 1)
		m.mu.Lock()
		m.subs = append(m.subs, ch)
		m.mu.Unlock()
		rw := recordio.NewWriter(w)
		_ = rw.WriteFrame([]byte(`{"type":"SUBSCRIBED"}`))
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-ch:
				_ = rw.WriteFrame([]byte(`{"type":"TASK_ADDED"}`))
				w.(http.Flusher).Flush()
			}
		}
	default:
		http.NotFound(w, r)
	}
}

func startBench(b *testing.B, tasks int, etcdURL string) (string, *benchMaster) {
	b.Helper()
	m := &benchMaster{}
	for i := range tasks {
		m.tasks = append(m.tasks, m.task(i, fmt.Sprintf("10.2.%d.%d", i/250%250, i%250+1)))
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	m.leader = l.Addr().String()
	m.render()
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: m}}
	srv.Start()
	b.Cleanup(srv.Close)
	port := freePortB(b)
	cfgPath := filepath.Join(b.TempDir(), "config.json")
	cfg := fmt.Sprintf(`{"masters":[%q],"port":%d,"httpon":false,"listener":"127.0.0.1","externalon":false,"refreshSeconds":3600}`,
		m.leader, port)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	args := []string{"-config=" + cfgPath, "-log-level=error"}
	if etcdURL != "" {
		args = append(args, "-etcd-endpoints="+etcdURL)
	}
	go func() { done <- Run(ctx, args, nil, io.Discard, os.Stderr) }()
	b.Cleanup(func() { cancel(); <-done })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitA(b, addr, "task0.marathon.mesos.", "10.2.0.1", 30*time.Second)
	return addr, m
}

func freePortB(b *testing.B) int {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitA queries as fast as answers come back until name has A want.
func waitA(b *testing.B, addr, name, want string, timeout time.Duration) time.Time {
	b.Helper()
	c, err := net.Dial("udp4", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	req, _ := m.Pack()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(req); err != nil {
			continue
		}
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		r := new(dns.Msg)
		if r.Unpack(buf[:n]) == nil {
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == want {
					return time.Now()
				}
			}
		}
	}
	b.Fatalf("%s never resolved to %s", name, want)
	return time.Time{}
}

func report(b *testing.B, prefix string, d []time.Duration) {
	slices.Sort(d)
	q := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), prefix+"p50-ms")
	b.ReportMetric(q(0.99), prefix+"p99-ms")
	b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, prefix+"max-ms")
	b.Logf("%sn=%d p50=%.2fms p99=%.2fms max=%.2fms", prefix, len(d), q(0.5), q(0.99), float64(d[len(d)-1].Microseconds())/1000)
}

// BenchmarkRegistryPropagation times an endpoint write to etcd until its
// A answer is served (PETREL_DNS_TASKS tasks in the zone, default 10000).
func BenchmarkRegistryPropagation(b *testing.B) {
	etcd, cli := testutil.Etcd(b)
	tasks := envInt("PETREL_DNS_TASKS", 10000)
	addr, _ := startBench(b, tasks, etcd.ClientURL)
	ctx := context.Background()
	var d, afterPut []time.Duration
	i := 0
	for b.Loop() {
		ip := fmt.Sprintf("10.4.%d.%d", i/250%250, i%250+1)
		ep := &petrelv1.Endpoint{ContainerId: fmt.Sprintf("bench%d", i), Host: "h", Ips: []string{ip},
			Source: petrelv1.Source_SOURCE_DOCKER, ContainerName: fmt.Sprintf("bench%d", i)}
		v, _ := agentreg.EncodeEndpoint(ep)
		start := time.Now()
		if _, err := cli.Put(ctx, agentreg.EndpointKey("h", ep.ContainerId, "eth0"), string(v)); err != nil {
			b.Fatal(err)
		}
		put := time.Now()
		end := waitA(b, addr, fmt.Sprintf("bench%d.petrel.mesos.", i), ip, 10*time.Second)
		d = append(d, end.Sub(start))
		afterPut = append(afterPut, end.Sub(put))
		i++
	}
	report(b, "", d)
	// From the Put reply on, i.e. without the etcd commit.
	report(b, "afterput-", afterPut)
}

// BenchmarkStatePropagation times a task appearing in the master state (with
// a TASK_ADDED event on the SUBSCRIBE stream) until its A answer is served.
func BenchmarkStatePropagation(b *testing.B) {
	tasks := envInt("PETREL_DNS_TASKS", 10000)
	addr, m := startBench(b, tasks, "")
	var d []time.Duration
	i := tasks
	for b.Loop() {
		start := m.add(i)
		ip := fmt.Sprintf("10.3.%d.%d", i/250%250, i%250+1)
		d = append(d, waitA(b, addr, fmt.Sprintf("task%d.marathon.mesos.", i), ip, 30*time.Second).Sub(start))
		i++
	}
	report(b, "", d)
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}
