// Package dnsenv runs petrel-dns for the framework tests: a fake Mesos master
// on 127.0.0.1 serving /master/state, the petrel-dns binary as a process
// with a mesos-dns config.json, and pollers that wait (with a deadline, no
// sleeps for state) until a name answers what the test expects over DNS and
// over the HTTP API.
package dnsenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-net/petrel/framework-tests/testutil"

	"github.com/miekg/dns"
)

// AgentIP is the Mesos agent address in the fake state (the agent's pid). It
// is what a task name answers from the "host" IP source once no better source
// has an address. It is a loopback address, so nothing ever leaves the
// machine even if something used it.
const AgentIP = "127.0.0.2"

// Task is one RUNNING Marathon task in the fake master's state.
type Task struct {
	// Name is the task name (the first label of <name>.marathon.<domain>).
	Name string
	// ContainerID is the Mesos container ID in the task's RUNNING status
	// (container_status.container_id.value).
	ContainerID string
}

// Master is a fake Mesos master serving /master/state with one agent and a
// Marathon framework whose tasks the test sets.
type Master struct {
	srv   *httptest.Server
	mu    sync.Mutex
	tasks []Task
}

// NewMaster starts a fake master on 127.0.0.1 and stops it in t.Cleanup.
func NewMaster(t testing.TB, tasks ...Task) *Master {
	t.Helper()
	m := &Master{tasks: tasks}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// Addr is the master's host:port, as config.json's masters list wants it.
func (m *Master) Addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

// SetTasks replaces the running tasks.
func (m *Master) SetTasks(tasks ...Task) {
	m.mu.Lock()
	m.tasks = slices.Clone(tasks)
	m.mu.Unlock()
}

// State is the JSON the master serves now.
func (m *Master) State() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	const agentID = "ptl-agent-S0"
	type cid struct {
		Value string `json:"value"`
	}
	type status struct {
		State           string  `json:"state"`
		Timestamp       float64 `json:"timestamp"`
		ContainerStatus struct {
			ContainerID cid `json:"container_id"`
		} `json:"container_status"`
	}
	type task struct {
		ID        string            `json:"id"`
		Name      string            `json:"name"`
		SlaveID   string            `json:"slave_id"`
		State     string            `json:"state"`
		Resources map[string]string `json:"resources"`
		Statuses  []status          `json:"statuses"`
	}
	var tasks []task
	for i, tk := range m.tasks {
		s := status{State: "TASK_RUNNING", Timestamp: 1.7e9 + float64(i)}
		s.ContainerStatus.ContainerID.Value = tk.ContainerID
		tasks = append(tasks, task{
			ID: fmt.Sprintf("%s.%08d-aaaa-11e6-a088-c20493233aa5", tk.Name, i), Name: tk.Name,
			SlaveID: agentID, State: "TASK_RUNNING", Resources: map[string]string{"ports": "[]"},
			Statuses: []status{s},
		})
	}
	st := map[string]any{
		"leader": "master@" + m.Addr(),
		"slaves": []map[string]string{{"id": agentID, "pid": "slave(1)@" + AgentIP + ":5051", "hostname": "h1"}},
		"frameworks": []map[string]any{{
			"id": "ptl-fw-marathon", "name": "marathon", "pid": "scheduler-1@127.0.0.1:8080", "hostname": "m1",
			"tasks": tasks,
		}},
	}
	b, _ := json.Marshal(st)
	return b
}

func (m *Master) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/master/state" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(m.State())
}

// Server is a running petrel-dns process.
type Server struct {
	// DNSAddr is the resolver's 127.0.0.1:port (UDP and TCP).
	DNSAddr string
	// HTTPAddr is the HTTP API's 127.0.0.1:port.
	HTTPAddr string
	// Domain is the config's domain, without dots around it.
	Domain string
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *testutil.LogBuffer
}

// Options are what Start needs.
type Options struct {
	// Bin is the petrel-dns binary.
	Bin string
	// Master is the fake master listed in masters.
	Master *Master
	// EtcdURL is -etcd-endpoints (the registry).
	EtcdURL string
	// Extra are more config.json keys (e.g. "IPSources").
	Extra map[string]any
}

// Start writes config.json (domain mesos, listeners on 127.0.0.1 free
// ports, refreshSeconds 1, externalon false, no resolvers) and runs
// petrel-dns with -etcd-endpoints and -subscribe=false (the fake master has
// no operator API). It stops the process by PID in t.Cleanup.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	dnsPort, httpPort := freePort(t), freePort(t)
	cfg := map[string]any{
		"masters": []string{o.Master.Addr()}, "domain": "mesos", "refreshSeconds": 1,
		"listener": "127.0.0.1", "port": dnsPort, "httpListener": "127.0.0.1", "httpport": httpPort,
		"externalon": false, "resolvers": []string{}, "ttl": 1,
	}
	for k, v := range o.Extra {
		cfg[k] = v
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{
		DNSAddr: fmt.Sprintf("127.0.0.1:%d", dnsPort), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		Domain: "mesos", exited: make(chan struct{}), logs: &testutil.LogBuffer{},
	}
	s.cmd = exec.Command(o.Bin, "-config="+path, "-etcd-endpoints="+o.EtcdURL, "-subscribe=false", "-log-level=debug")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start petrel-dns: %v", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("petrel-dns log:\n%s", s.logs)
		}
	})
	return s
}

// stop sends SIGTERM to the process and waits; SIGKILL after 20 s.
func (s *Server) stop(t testing.TB) {
	select {
	case <-s.exited:
		if s.cmd.ProcessState != nil && !s.cmd.ProcessState.Success() {
			t.Errorf("petrel-dns exited early: %v", s.cmd.ProcessState)
		}
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if !s.cmd.ProcessState.Success() {
			t.Errorf("petrel-dns exit after SIGTERM: got %v, want status 0", s.cmd.ProcessState)
		}
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		t.Errorf("petrel-dns (pid %d) ignored SIGTERM for 20s", s.cmd.Process.Pid)
	}
}

// Logs returns what petrel-dns wrote so far.
func (s *Server) Logs() string { return s.logs.String() }

// Answer is one DNS reply reduced to what the tests compare.
type Answer struct {
	Rcode string
	// IPs are the A and AAAA addresses of the answer section, sorted.
	IPs []string
}

func (a Answer) String() string { return a.Rcode + " [" + strings.Join(a.IPs, " ") + "]" }

// Query asks the resolver for name (a relative name gets the domain
// appended) over UDP.
func (s *Server) Query(name string, qtype uint16) (Answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(s.FQDN(name), qtype)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, s.DNSAddr)
	if err != nil {
		return Answer{}, err
	}
	a := Answer{Rcode: dns.RcodeToString[r.Rcode]}
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			a.IPs = append(a.IPs, rr.A.String())
		case *dns.AAAA:
			a.IPs = append(a.IPs, rr.AAAA.String())
		}
	}
	slices.Sort(a.IPs)
	return a, nil
}

// FQDN makes name absolute, under the domain when it does not end in it.
func (s *Server) FQDN(name string) string {
	name = strings.TrimSuffix(name, ".")
	if !strings.HasSuffix(name, "."+s.Domain) {
		name += "." + s.Domain
	}
	return name + "."
}

// HTTPHosts asks the HTTP API's /v1/hosts/<name> and returns its
// addresses, sorted (the API answers [{"host":"","ip":""}] for none).
func (s *Server) HTTPHosts(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.HTTPAddr+"/v1/hosts/"+strings.TrimSuffix(s.FQDN(name), "."), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/hosts/%s: %s: %s", name, resp.Status, body)
	}
	var hosts []struct {
		Host string `json:"host"`
		IP   string `json:"ip"`
	}
	if err := json.Unmarshal(body, &hosts); err != nil {
		return nil, fmt.Errorf("GET /v1/hosts/%s: %w: %s", name, err, body)
	}
	var ips []string
	for _, h := range hosts {
		if h.IP != "" {
			ips = append(ips, h.IP)
		}
	}
	slices.Sort(ips)
	return ips, nil
}

// deadline bounds every wait. Registry events reach answers in
// milliseconds and a state in about refreshSeconds; this is slack for a
// loaded 2-CPU machine.
const deadline = 30 * time.Second

// poll calls check until it returns nil, the deadline passes, or petrel-dns
// exits; it returns the last error.
func (s *Server) poll(check func() error) error {
	end := time.Now().Add(deadline)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("petrel-dns exited (%v); last: %w", s.cmd.ProcessState, err)
		default:
		}
		if time.Now().After(end) {
			return fmt.Errorf("after %v: %w", deadline, err)
		}
		<-tick.C // poll interval, not a wait for state
	}
}

// WaitA polls until an A query for name answers NOERROR with exactly ips
// (in any order).
func (s *Server) WaitA(t testing.TB, name string, ips ...string) {
	t.Helper()
	want := Answer{Rcode: "NOERROR", IPs: sorted(ips)}
	s.waitAnswer(t, name, want)
}

// WaitNXDOMAIN polls until an A query for name answers NXDOMAIN.
func (s *Server) WaitNXDOMAIN(t testing.TB, name string) {
	t.Helper()
	s.waitAnswer(t, name, Answer{Rcode: "NXDOMAIN"})
}

func (s *Server) waitAnswer(t testing.TB, name string, want Answer) {
	t.Helper()
	err := s.poll(func() error {
		got, err := s.Query(name, dns.TypeA)
		if err != nil {
			return err
		}
		if got.String() != want.String() {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("A %s: %v, want %s\npetrel-dns log tail:\n%s", s.FQDN(name), err, want, tail(s.Logs()))
	}
}

// WaitHTTP polls until /v1/hosts/<name> lists exactly ips.
func (s *Server) WaitHTTP(t testing.TB, name string, ips ...string) {
	t.Helper()
	want := sorted(ips)
	err := s.poll(func() error {
		got, err := s.HTTPHosts(name)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("/v1/hosts/%s: %v, want %v", s.FQDN(name), err, want)
	}
}

// ResolveA waits until name answers exactly one address and returns it.
func (s *Server) ResolveA(t testing.TB, name string) string {
	t.Helper()
	var got Answer
	err := s.poll(func() error {
		var err error
		if got, err = s.Query(name, dns.TypeA); err != nil {
			return err
		}
		if got.Rcode != "NOERROR" || len(got.IPs) != 1 {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("A %s: %v, want one address", s.FQDN(name), err)
	}
	return got.IPs[0]
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// freePort returns a free TCP port of 127.0.0.1 that is free for UDP too.
func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal(errors.New("no port of 127.0.0.1 free for both TCP and UDP"))
	return 0
}
