package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mesos/mesos-go/api/v1/lib/recordio"

	"github.com/petrel-net/petrel/dns/internal/dnstest"
)

func TestDecodeSample(t *testing.T) {
	st, err := Decode(strings.NewReader(dnstest.SampleState))
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != "master@127.0.0.1:15050" || len(st.Slaves) != 3 || len(st.Frameworks) != 3 {
		t.Fatalf("got leader %q, %d slaves, %d frameworks", st.Leader, len(st.Slaves), len(st.Frameworks))
	}
	web := st.Frameworks[0].Tasks[0]
	rs := web.RunningStatus()
	if rs == nil || rs.Timestamp != 1500000001.5 {
		t.Fatalf("got running status %+v", rs)
	}
	if got := fmt.Sprint(rs.NetinfoIPs()); got != "[9.0.1.5 fd01:b::1:8000:5]" {
		t.Errorf("got netinfo %s", got)
	}
	if got := web.ContainerIDs(); !slices.Equal(got, []string{"c-web"}) {
		t.Errorf("got container IDs %q", got)
	}
	if d := web.Discovery; d == nil || len(d.Ports.Ports) != 2 || d.Ports.Ports[1].Name != "https" {
		t.Errorf("got discovery %+v", d)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"frameworks":{}}`, `{"frameworks":[{"tasks":[1]}]}`, `{"slaves":[{"id":1}]}`, `{"leader":`} {
		if _, err := Decode(strings.NewReader(in)); err == nil {
			t.Errorf("Decode(%q): got no error", in)
		}
	}
	// Unknown and null fields are fine.
	if _, err := Decode(strings.NewReader(`{"x":[1,{"y":2}],"frameworks":null,"completed_frameworks":[{"tasks":[]}]}`)); err != nil {
		t.Errorf("got %v", err)
	}
}

func TestParsePID(t *testing.T) {
	tests := []struct {
		in      string
		want    PID
		wantErr bool
	}{
		{in: "slave(1)@10.0.1.10:5051", want: PID{ID: "slave(1)", Host: "10.0.1.10", Port: 5051}},
		{in: "slave(1)@[2001:db8::11]:5051", want: PID{ID: "slave(1)", Host: "2001:db8::11", Port: 5051}},
		{in: "scheduler-x@m1.example:8080", want: PID{ID: "scheduler-x", Host: "m1.example", Port: 8080}},
		{in: "", wantErr: true},
		{in: "a@b", wantErr: true},
		{in: "a@b:c", wantErr: true},
		{in: "a@b@c:1", wantErr: true},
		{in: "a@:1", wantErr: true},
		{in: "a@h:70000", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParsePID(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParsePID(%q): got %+v, %v; want %+v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPorts(t *testing.T) {
	tests := []struct {
		in   string
		want []uint16
	}{
		{"[31000-31001]", []uint16{31000, 31001}},
		{"[31600-31600, 31605-31606]", []uint16{31600, 31605, 31606}},
		{"[]", nil},
		{"", nil},
		{"31000", []uint16{31000}},
		{"[5-3, x-y, 7-7]", []uint16{7}},
	}
	for _, tc := range tests {
		if got := Ports(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Ports(%q): got %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzDecode checks that the decoder never panics and that what it accepts
// can be used by every accessor.
func FuzzDecode(f *testing.F) {
	f.Add(dnstest.SampleState)
	f.Add(`{"leader":"master@1.2.3.4:5050","frameworks":[{"tasks":[{"statuses":[{"container_status":{"container_id":{"value":"a","parent":{"value":"b"}}}}]}]}]}`)
	f.Add(`{"frameworks":[{"pid":"","tasks":[{"resources":{"ports":"[1-"}}]}]}`)
	f.Fuzz(func(t *testing.T, in string) {
		st, err := Decode(strings.NewReader(in))
		if err != nil {
			return
		}
		_, _ = ParsePID(st.Leader)
		for _, fw := range st.Frameworks {
			_, _ = ParsePID(fw.PID)
			if len(fw.Raws) != len(fw.Tasks) {
				t.Fatalf("got %d raws for %d tasks", len(fw.Raws), len(fw.Tasks))
			}
			for _, task := range fw.Tasks {
				_ = Ports(task.Resources.Ports)
				_ = task.ContainerIDs()
				if s := task.RunningStatus(); s != nil {
					_ = s.NetinfoIPs()
					_ = s.LabelIPs("Docker.NetworkSettings.IPAddress")
				}
			}
		}
	})
}

// fakeMaster serves /master/state and a SUBSCRIBE stream on addr.
type fakeMaster struct {
	mu     sync.Mutex
	state  string
	events chan string
	srv    *httptest.Server
}

func startMaster(t *testing.T, addr, stateJSON string) *fakeMaster {
	t.Helper()
	m := &fakeMaster{state: stateJSON, events: make(chan string, 8)}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /master/state", func(w http.ResponseWriter, _ *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, _ = io.WriteString(w, m.state)
	})
	mux.HandleFunc("POST /api/v1", func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		rw := recordio.NewWriter(w)
		_ = rw.WriteFrame([]byte(`{"type":"SUBSCRIBED","subscribed":{"get_state":{}}}`))
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case ev := <-m.events:
				_ = rw.WriteFrame([]byte(ev))
				w.(http.Flusher).Flush()
			}
		}
	})
	m.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	m.srv.Start()
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeMaster) set(s string) {
	m.mu.Lock()
	m.state = s
	m.mu.Unlock()
}

func TestClientFollowsLeader(t *testing.T) {
	leader := startMaster(t, "127.0.0.1:0", "")
	_, port, _ := net.SplitHostPort(leader.srv.Listener.Addr().String())
	leader.set(`{"leader":"master@127.0.0.1:` + port + `","frameworks":[{"name":"from-leader"}]}`)
	other := startMaster(t, "127.0.0.2:"+port, `{"leader":"master@127.0.0.1:`+port+`","frameworks":[{"name":"from-follower"}]}`)
	c, err := NewClient(ClientConfig{Masters: []string{other.srv.Listener.Addr().String()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Frameworks[0].Name != "from-leader" || c.Leader() != "127.0.0.1:"+port {
		t.Errorf("got framework %q from %s, want from-leader from the leader", st.Frameworks[0].Name, c.Leader())
	}
}

func TestClientErrors(t *testing.T) {
	bad := startMaster(t, "127.0.0.1:0", `{"leader":""}`)
	c, err := NewClient(ClientConfig{Masters: []string{bad.srv.Listener.Addr().String()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "empty leader") {
		t.Errorf("got %v, want an empty leader error", err)
	}
}

// TestPollerSubscribe checks that a TASK_ADDED event on the SUBSCRIBE stream
// triggers a refresh long before the (1 h) interval.
func TestPollerSubscribe(t *testing.T) {
	m := startMaster(t, "127.0.0.1:0", "")
	addr := m.srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	st := func(name string) string {
		return `{"leader":"master@127.0.0.1:` + port + `","frameworks":[{"name":"` + name + `"}]}`
	}
	m.set(st("v1"))
	c, err := NewClient(ClientConfig{Masters: []string{addr}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	p := &Poller{
		Fetcher: c, Interval: time.Hour, Subscribe: true,
		OnState: func(s *State, _ time.Duration) { got <- s.Frameworks[0].Name },
		OnError: func(err error) { t.Logf("poller: %v", err) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	wait := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case name := <-got:
				if name == want {
					return
				}
			case <-deadline:
				t.Fatalf("state %q never arrived", want)
			}
		}
	}
	wait("v1")
	m.set(st("v2"))
	m.events <- `{"type":"TASK_ADDED","task_added":{"task":{"name":"x","task_id":{"value":"x"},"framework_id":{"value":"f"},"agent_id":{"value":"a"},"state":"TASK_RUNNING"}}}`
	wait("v2")
}

// reference decodes what Decoder decodes with encoding/json in one piece.
func reference(t *testing.T, in string) *State {
	t.Helper()
	var doc struct {
		Leader string  `json:"leader"`
		Slaves []Slave `json:"slaves"`
		Fws    []struct {
			ID       string  `json:"id"`
			Name     string  `json:"name"`
			PID      string  `json:"pid"`
			Hostname string  `json:"hostname"`
			Tasks    []*Task `json:"tasks"`
		} `json:"frameworks"`
	}
	if err := json.Unmarshal([]byte(in), &doc); err != nil {
		t.Fatal(err)
	}
	st := &State{Leader: doc.Leader, Slaves: doc.Slaves}
	for _, f := range doc.Fws {
		st.Frameworks = append(st.Frameworks, Framework{ID: f.ID, Name: f.Name, PID: f.PID, Hostname: f.Hostname, Tasks: f.Tasks})
	}
	return st
}

func withoutRaws(st *State) *State {
	out := *st
	out.Frameworks = slices.Clone(st.Frameworks)
	for i := range out.Frameworks {
		out.Frameworks[i].Raws = nil
		if len(out.Frameworks[i].Tasks) == 0 {
			out.Frameworks[i].Tasks = nil
		}
	}
	return &out
}

func TestDecoderMatchesEncodingJSON(t *testing.T) {
	want := reference(t, dnstest.SampleState)
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return strings.NewReader(dnstest.SampleState) }},
		// One byte per read: every token and captured task spans refills.
		{"bytewise", func() io.Reader { return iotest.OneByteReader(strings.NewReader(dnstest.SampleState)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder()
			got, err := d.Decode(tc.r())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(withoutRaws(got), withoutRaws(want)) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
			again, err := d.Decode(strings.NewReader(dnstest.SampleState))
			if err != nil {
				t.Fatal(err)
			}
			for i := range got.Frameworks {
				if !slices.Equal(got.Frameworks[i].Raws, again.Frameworks[i].Raws) {
					t.Errorf("framework %d: raws differ between reads of the same document", i)
				}
			}
		})
	}
}

func TestDecoderSkipsKnownTasks(t *testing.T) {
	d := NewDecoder()
	first, err := d.Decode(strings.NewReader(dnstest.SampleState))
	if err != nil {
		t.Fatal(err)
	}
	known := map[Raw]bool{}
	for _, f := range first.Frameworks {
		for _, r := range f.Raws {
			if known[r] {
				t.Fatalf("raw %v twice", r)
			}
			known[r] = true
		}
	}
	d.Known = func(r Raw) bool { return known[r] }
	// The same tasks: none decoded.
	st, err := d.Decode(strings.NewReader(dnstest.SampleState))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range st.Frameworks {
		if !slices.Equal(f.Raws, first.Frameworks[i].Raws) || slices.ContainsFunc(f.Tasks, func(t *Task) bool { return t != nil }) {
			t.Errorf("framework %s: got tasks %v raws %v, want none decoded", f.ID, f.Tasks, f.Raws)
		}
	}
	// One task changed: only that one is decoded.
	changed := strings.Replace(dnstest.SampleState, `"name": "web"`, `"name": "www"`, 1)
	st, err = d.Decode(strings.NewReader(changed))
	if err != nil {
		t.Fatal(err)
	}
	var decoded []string
	for _, f := range st.Frameworks {
		for _, task := range f.Tasks {
			if task != nil {
				decoded = append(decoded, task.Name)
			}
		}
	}
	if !slices.Equal(decoded, []string{"www"}) {
		t.Errorf("got decoded tasks %q, want [www]", decoded)
	}
	// The same task bytes under another framework ID are not the same task.
	moved := strings.Replace(dnstest.SampleState, `"id": "fw-1"`, `"id": "fw-9"`, 1)
	st, err = d.Decode(strings.NewReader(moved))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(st.Frameworks[0].Tasks, nil) {
		t.Error("tasks of a framework with a new ID were skipped")
	}
}

func TestEventType(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: `{"type":"TASK_ADDED"}`, want: "TASK_ADDED"},
		{in: `{"type":"HEARTBEAT"}`, want: "HEARTBEAT"},
		{in: `{"type":7}`, want: "FRAMEWORK_UPDATED"},
		{in: `{"type":42}`, want: "42"},
		{in: `{}`, want: "UNKNOWN"},
		{in: `{"type":"NOPE"}`, wantErr: true},
		{in: `{"type":true}`, wantErr: true},
	}
	for _, tc := range tests {
		var ev eventHeader
		err := json.Unmarshal([]byte(tc.in), &ev)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: got error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && ev.Type.String() != tc.want {
			t.Errorf("%s: got %s, want %s", tc.in, ev.Type, tc.want)
		}
	}
}
