// Package state decodes the Mesos master's /master/state, fetches it from the
// leading master, and listens to the v1 operator API SUBSCRIBE stream so that
// task changes trigger an immediate refresh.
package state

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// State is the part of /master/state that names are built from.
type State struct {
	Leader     string
	Slaves     []Slave
	Frameworks []Framework
}

// Slave is one agent.
type Slave struct {
	ID       string `json:"id"`
	PID      string `json:"pid"`
	Hostname string `json:"hostname"`
}

// Framework is one registered framework and its tasks.
type Framework struct {
	ID       string
	Name     string
	PID      string
	Hostname string
	// Tasks are the framework's tasks in state order. A task is nil when the
	// decoder was told that its raw hash is known (see Decoder.Known).
	Tasks []*Task
	// Raws are the raw hashes of Tasks, index by index.
	Raws []Raw
}

// Raw identifies the exact JSON text of a task within its framework: a
// 128-bit hash of the framework ID and the task's bytes. Equal Raws mean
// equal tasks; the zero Raw is never produced.
type Raw [2]uint64

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
func Decode(r io.Reader) (*State, error) { return NewDecoder().Decode(r) }

// Decoder reads successive /master/state documents. It streams the document
// through a small buffer and decodes only the leader, agents, frameworks and
// tasks, with encoding/json; the rest is skipped, checking only that its
// brackets match and its strings end. A Decoder is not safe for concurrent
// use.
type Decoder struct {
	// Known, when set, reports whether a task with this raw hash was in a
	// state already seen; such tasks are not decoded (their Tasks entry is
	// nil), which makes a reload of a mostly unchanged state cheap.
	Known func(Raw) bool
	// Yield, when set, is called every few dozen decoded tasks so that a
	// large state does not hold the CPU in one piece while queries wait
	// (runtime.Gosched).
	Yield func()

	seeds [2]maphash.Seed
	s     scanner
	n     int
	// slaves are the agents of the last document by raw hash, so that
	// unchanged ones are not decoded again; next collects this document's.
	slaves, next map[Raw]Slave
}

// NewDecoder returns a Decoder; its raw hashes are comparable only with its
// own.
func NewDecoder() *Decoder {
	return &Decoder{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, slaves: map[Raw]Slave{}, next: map[Raw]Slave{}}
}

// Decode reads one document.
func (d *Decoder) Decode(r io.Reader) (*State, error) {
	d.s.reset(r)
	defer d.s.reset(nil)
	st := &State{}
	err := d.s.object(func(k []byte) error {
		switch string(k) {
		case "leader":
			return d.s.decodeValue(&st.Leader)
		case "slaves":
			return d.s.array(func() error {
				raw, err := d.s.capture()
				if err != nil {
					return err
				}
				h := Raw{maphash.Bytes(d.seeds[0], raw), maphash.Bytes(d.seeds[1], raw)}
				sl, ok := d.slaves[h]
				if !ok {
					if err := json.Unmarshal(raw, &sl); err != nil {
						return err
					}
				}
				d.next[h] = sl
				st.Slaves = append(st.Slaves, sl)
				return nil
			})
		case "frameworks":
			return d.s.array(func() error {
				fw, err := d.framework()
				if err != nil {
					return err
				}
				st.Frameworks = append(st.Frameworks, fw)
				return nil
			})
		}
		return d.s.skip()
	})
	if err != nil {
		clear(d.next)
		return nil, fmt.Errorf("decode master state: %w", err)
	}
	d.slaves, d.next = d.next, d.slaves
	clear(d.next)
	return st, nil
}

func (d *Decoder) framework() (Framework, error) {
	var f Framework
	idSeen := false
	err := d.s.object(func(k []byte) error {
		switch string(k) {
		case "id":
			idSeen = true
			return d.s.decodeValue(&f.ID)
		case "name":
			return d.s.decodeValue(&f.Name)
		case "pid":
			return d.s.decodeValue(&f.PID)
		case "hostname":
			return d.s.decodeValue(&f.Hostname)
		case "tasks":
			// Known tasks are recognised by framework ID and bytes, so
			// only when the ID came first (Mesos writes it first).
			known := d.Known
			if !idSeen {
				known = nil
			}
			fh := [2]uint64{maphash.String(d.seeds[0], f.ID), maphash.String(d.seeds[1], f.ID)}
			return d.s.array(func() error {
				raw, err := d.s.capture()
				if err != nil {
					return err
				}
				h := Raw{maphash.Bytes(d.seeds[0], raw) ^ fh[0], maphash.Bytes(d.seeds[1], raw) ^ fh[1]}
				if h == (Raw{}) {
					h[0] = 1
				}
				d.n++
				if known != nil && known(h) {
					f.Tasks = append(f.Tasks, nil)
					f.Raws = append(f.Raws, h)
					if d.Yield != nil && d.n%256 == 0 {
						d.Yield()
					}
					return nil
				}
				t := &Task{}
				if err := json.Unmarshal(raw, t); err != nil {
					return err
				}
				f.Tasks = append(f.Tasks, t)
				f.Raws = append(f.Raws, h)
				if d.Yield != nil && d.n%16 == 0 {
					d.Yield()
				}
				return nil
			})
		}
		return d.s.skip()
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
