// Package state decodes the Mesos master's /master/state, fetches it from the
// leading master, and listens to the v1 operator API SUBSCRIBE stream so that
// task changes trigger an immediate refresh.
package state

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// State is the part of /master/state that names are built from.
type State struct {
	Leader     string      `json:"leader"`
	Slaves     []Slave     `json:"slaves"`
	Frameworks []Framework `json:"frameworks"`
}

// Slave is one agent.
type Slave struct {
	ID       string `json:"id"`
	PID      string `json:"pid"`
	Hostname string `json:"hostname"`
}

// Framework is one registered framework and its tasks.
type Framework struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	PID      string `json:"pid"`
	Hostname string `json:"hostname"`
	Tasks    []Task `json:"tasks"`
}

// Task is one task.
type Task struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	SlaveID   string     `json:"slave_id"`
	State     string     `json:"state"`
	Resources Resources  `json:"resources"`
	Statuses  []Status   `json:"statuses"`
	Discovery *Discovery `json:"discovery,omitempty"`
}

// Resources holds the task's port ranges in Mesos's string form "[a-b, c-d]".
type Resources struct {
	Ports string `json:"ports"`
}

// Status is one task status update.
type Status struct {
	State           string          `json:"state"`
	Timestamp       float64         `json:"timestamp"`
	Labels          []Label         `json:"labels,omitempty"`
	ContainerStatus ContainerStatus `json:"container_status"`
}

// Label is a key/value pair.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ContainerStatus carries the container ID and its network infos.
type ContainerStatus struct {
	ContainerID  *ContainerID  `json:"container_id,omitempty"`
	NetworkInfos []NetworkInfo `json:"network_infos,omitempty"`
}

// ContainerID is a (possibly nested) Mesos container ID.
type ContainerID struct {
	Value  string       `json:"value"`
	Parent *ContainerID `json:"parent,omitempty"`
}

// NetworkInfo is one network of a container.
type NetworkInfo struct {
	Name        string      `json:"name,omitempty"`
	IPAddresses []IPAddress `json:"ip_addresses,omitempty"`
	IPAddress   string      `json:"ip_address,omitempty"` // Mesos 0.25
}

// IPAddress is one address of a network info.
type IPAddress struct {
	IPAddress string `json:"ip_address"`
}

// Discovery is a task's DiscoveryInfo.
type Discovery struct {
	Name  string `json:"name"`
	Ports struct {
		Ports []DiscoveryPort `json:"ports"`
	} `json:"ports"`
}

// DiscoveryPort is one named DiscoveryInfo port.
type DiscoveryPort struct {
	Number   int    `json:"number"`
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
}

// Decode reads a /master/state document. Unlike mesos-dns, malformed PIDs or
// port strings do not fail the decode; they are checked where used.
func Decode(r io.Reader) (*State, error) { return DecodeYield(r, nil) }

// DecodeYield is Decode that streams frameworks and tasks one at a time and
// calls yield (when not nil) every 16 tasks, so that a large state
// does not hold the CPU in one piece while queries wait (runtime.Gosched).
func DecodeYield(r io.Reader, yield func()) (*State, error) {
	d := &decoder{dec: json.NewDecoder(r), yield: yield}
	s, err := d.state()
	if err != nil {
		return nil, fmt.Errorf("decode master state: %w", err)
	}
	return s, nil
}

type decoder struct {
	dec   *json.Decoder
	yield func()
	n     int
}

func (d *decoder) delim(want json.Delim) error {
	t, err := d.dec.Token()
	if err != nil {
		return err
	}
	if got, ok := t.(json.Delim); !ok || got != want {
		return fmt.Errorf("got %v, want %q", t, want)
	}
	return nil
}

func (d *decoder) key() (string, error) {
	t, err := d.dec.Token()
	if err != nil {
		return "", err
	}
	k, ok := t.(string)
	if !ok {
		return "", fmt.Errorf("got %v, want an object key", t)
	}
	return k, nil
}

func (d *decoder) skip() error {
	var raw json.RawMessage
	return d.dec.Decode(&raw)
}

// object walks one JSON object, calling field for every key; null is an
// empty object.
func (d *decoder) object(field func(k string) error) error {
	t, err := d.dec.Token()
	if err != nil {
		return err
	}
	if t == nil {
		return nil
	}
	if got, ok := t.(json.Delim); !ok || got != '{' {
		return fmt.Errorf("got %v, want an object", t)
	}
	for d.dec.More() {
		k, err := d.key()
		if err != nil {
			return err
		}
		if err := field(k); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return d.delim('}')
}

// array walks one JSON array, calling elem for every element; null is empty.
func (d *decoder) array(elem func() error) error {
	t, err := d.dec.Token()
	if err != nil {
		return err
	}
	if t == nil {
		return nil
	}
	if got, ok := t.(json.Delim); !ok || got != '[' {
		return fmt.Errorf("got %v, want an array", t)
	}
	for d.dec.More() {
		if err := elem(); err != nil {
			return err
		}
	}
	return d.delim(']')
}

func (d *decoder) state() (*State, error) {
	s := &State{}
	err := d.object(func(k string) error {
		switch k {
		case "leader":
			return d.dec.Decode(&s.Leader)
		case "slaves":
			return d.array(func() error {
				var sl Slave
				if err := d.dec.Decode(&sl); err != nil {
					return err
				}
				s.Slaves = append(s.Slaves, sl)
				return nil
			})
		case "frameworks":
			return d.array(func() error {
				fw, err := d.framework()
				if err != nil {
					return err
				}
				s.Frameworks = append(s.Frameworks, fw)
				return nil
			})
		}
		return d.skip()
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (d *decoder) framework() (Framework, error) {
	var f Framework
	err := d.object(func(k string) error {
		switch k {
		case "id":
			return d.dec.Decode(&f.ID)
		case "name":
			return d.dec.Decode(&f.Name)
		case "pid":
			return d.dec.Decode(&f.PID)
		case "hostname":
			return d.dec.Decode(&f.Hostname)
		case "tasks":
			return d.array(func() error {
				var t Task
				if err := d.dec.Decode(&t); err != nil {
					return err
				}
				f.Tasks = append(f.Tasks, t)
				if d.n++; d.yield != nil && d.n%16 == 0 {
					d.yield()
				}
				return nil
			})
		}
		return d.skip()
	})
	return f, err
}

// PID is a parsed libprocess PID "id@host:port".
type PID struct {
	ID   string
	Host string
	Port uint16
}

// ParsePID parses "id@host:port" (host may be an IPv6 literal in brackets).
func ParsePID(s string) (PID, error) {
	id, hp, ok := strings.Cut(s, "@")
	if !ok || strings.Contains(hp, "@") {
		return PID{}, fmt.Errorf("pid %q: want id@host:port", s)
	}
	i := strings.LastIndexByte(hp, ':')
	if i <= 0 {
		return PID{}, fmt.Errorf("pid %q: missing port", s)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(hp[:i], "["), "]")
	port, err := strconv.ParseUint(hp[i+1:], 10, 16)
	if err != nil || host == "" {
		return PID{}, fmt.Errorf("pid %q: bad host:port", s)
	}
	return PID{ID: id, Host: host, Port: uint16(port)}, nil
}

// Ports parses a Mesos ports resource string such as "[31000-31001, 31005-31005]".
// Malformed ranges are skipped (mesos-dns panics on some of them); the
// expansion is capped at 1024 ports per task.
func Ports(s string) []uint16 {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	var out []uint16
	for r := range strings.SplitSeq(s, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		lo, hi, ok := strings.Cut(r, "-")
		if !ok {
			hi = lo
		}
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || a > b {
			continue
		}
		for p := a; p <= b && len(out) < 1024; p++ {
			out = append(out, uint16(p))
		}
	}
	return out
}

// RunningStatus returns the TASK_RUNNING status with the largest timestamp.
func (t *Task) RunningStatus() *Status {
	var best *Status
	for i := range t.Statuses {
		s := &t.Statuses[i]
		if s.State == "TASK_RUNNING" && (best == nil || s.Timestamp > best.Timestamp) {
			best = s
		}
	}
	return best
}

// ContainerIDs returns the task's container IDs (and their parents), newest
// status first, without duplicates.
func (t *Task) ContainerIDs() []string {
	var out []string
	for i := len(t.Statuses) - 1; i >= 0; i-- {
		for c := t.Statuses[i].ContainerStatus.ContainerID; c != nil; c = c.Parent {
			if c.Value != "" && !contains(out, c.Value) {
				out = append(out, c.Value)
			}
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// NetinfoIPs are the addresses of the running status's network infos.
func (s *Status) NetinfoIPs() []netip.Addr {
	var out []netip.Addr
	for _, ni := range s.ContainerStatus.NetworkInfos {
		if len(ni.IPAddresses) == 0 {
			if a, err := netip.ParseAddr(ni.IPAddress); err == nil {
				out = append(out, a.Unmap())
			}
			continue
		}
		for _, ip := range ni.IPAddresses {
			if a, err := netip.ParseAddr(ip.IPAddress); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// LabelIPs are the addresses in labels named key.
func (s *Status) LabelIPs(key string) []netip.Addr {
	var out []netip.Addr
	for _, l := range s.Labels {
		if l.Key == key {
			if a, err := netip.ParseAddr(l.Value); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}
