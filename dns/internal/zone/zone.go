package zone

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-net/petrel/dns/internal/state"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

// Options configure record generation.
type Options struct {
	Domain        string   // "mesos" (no trailing dot)
	SOAMname      string   // FQDN, gets the listener addresses
	EnforceRFC952 bool     // label function RFC952 instead of RFC1123
	Sources       []string // IP sources in order: petrel, netinfo, mesos, docker, host
	// Masters are the configured masters (host:port) for masterN records.
	Masters []string
	// ListenerIPs are the addresses of SOAMname.
	ListenerIPs []netip.Addr
	// LookupIP resolves non-literal hosts in pids and framework hostnames.
	// Nil means such hosts get no records.
	LookupIP func(host string) []netip.Addr
	// Now is the clock for the SOA serial (time.Now when nil).
	Now func() time.Time
	// Yield is called every few hundred units while a state is applied
	// (runtime.Gosched in the daemon) so queries on the same core run
	// between slices of the work. May be nil.
	Yield func()
}

// Zone is the record set of one domain.
type Zone struct {
	opt    Options
	spec   LabelFunc
	suffix string // "." + domain + "."
	idx    *Index

	mu       sync.Mutex                    // serialises writers
	units    map[string]unit               // masters, agents, frameworks, endpoints
	tasks    map[taskKey]*taskUnit         // running tasks
	byRaw    map[state.Raw]*taskUnit       // running tasks by the hash of their JSON
	gen      uint32                        // UpdateState generation
	stale    bool                          // byRaw missed a known task: decode all next time
	eps      map[string]*petrelv1.Endpoint // by registry key
	cidEps   map[string][]string           // container ID -> endpoint keys
	cidTasks map[string][]taskKey          // container ID -> tasks
	dropped  int                           // invalid names skipped so far

	ready  atomic.Bool
	serial atomic.Uint32
}

// New returns an empty zone. It is not Ready until the first master state.
func New(opt Options) *Zone {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Yield == nil {
		opt.Yield = func() {}
	}
	z := &Zone{
		opt:      opt,
		spec:     RFC1123,
		suffix:   "." + opt.Domain + ".",
		idx:      newIndex(opt.Yield),
		units:    map[string]unit{},
		tasks:    map[taskKey]*taskUnit{},
		byRaw:    map[state.Raw]*taskUnit{},
		eps:      map[string]*petrelv1.Endpoint{},
		cidEps:   map[string][]string{},
		cidTasks: map[string][]taskKey{},
	}
	if opt.EnforceRFC952 {
		z.spec = RFC952
	}
	z.serial.Store(uint32(opt.Now().Unix()))
	return z
}

// Index returns the query index.
func (z *Zone) Index() *Index { return z.idx }

// Ready reports whether a master state has been loaded.
func (z *Zone) Ready() bool { return z.ready.Load() }

// Serial is the SOA serial: the unix time of the last change.
func (z *Zone) Serial() uint32 { return z.serial.Load() }

// Domain returns the domain without trailing dot.
func (z *Zone) Domain() string { return z.opt.Domain }

// Dropped returns how many generated names were invalid and skipped.
func (z *Zone) Dropped() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.dropped
}

func (z *Zone) bumpSerial() {
	s := uint32(z.opt.Now().Unix())
	if old := z.serial.Load(); s <= old {
		s = old + 1
	}
	z.serial.Store(s)
}

// unit is one source of records other than a task (an agent, a framework,
// the masters, an endpoint). Units are compared with reflect.DeepEqual: equal
// units generate equal records.
type unit interface {
	records(z *Zone, emit func(name string, rr RR))
}

// Key prefixes of units.
const (
	keyMaster = "m"
	keyAgent  = "a/"
	keyFW     = "f/"
	keyEP     = "e/"
)

type emitter struct {
	z   *Zone
	t   *txn
	add bool
}

func (e *emitter) emit(name string, rr RR) {
	if !validName(name) || rr.Type == TypeSRV && !validName(rr.Target) {
		if e.add {
			e.z.dropped++
		}
		return
	}
	if e.add {
		e.t.add(name, rr)
	} else {
		e.t.del(name, rr)
	}
}

// replaceLocked swaps the unit under key (nil new removes it) and records
// the record changes in t. New records are added before old ones are
// removed, so a record present in both never disappears.
func (z *Zone) replaceLocked(t *txn, key string, u unit) bool {
	old, had := z.units[key]
	if had && u != nil && reflect.DeepEqual(old, u) {
		return false
	}
	if u != nil {
		e := emitter{z: z, t: t, add: true}
		u.records(z, e.emit)
		z.units[key] = u
	} else {
		delete(z.units, key)
	}
	if had {
		e := emitter{z: z, t: t}
		old.records(z, e.emit)
	}
	return true
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", strconv.ErrSyntax
	}
	return strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]"), s[i+1:], nil
}

func (z *Zone) hostIPs(host string) []netip.Addr {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	if z.opt.LookupIP == nil || host == "" {
		return nil
	}
	return z.opt.LookupIP(host)
}

func (z *Zone) petrelIPsLocked(cids []string) []netip.Addr {
	var out []netip.Addr
	for _, c := range cids {
		for _, k := range z.cidEps[c] {
			for _, s := range z.eps[k].GetIps() {
				if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
					out = append(out, a.Unmap())
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

func addrRR(ip netip.Addr) RR {
	ip = ip.WithZone("") // the index keeps no zones, and DNS has none
	if ip.Is4() {
		return RR{Type: TypeA, IP: ip}
	}
	return RR{Type: TypeAAAA, IP: ip}
}

func srvRR(target string, port uint16) RR { return RR{Type: TypeSRV, Target: target, Port: port} }

// masterUnit holds leader, master, masterN and the SOA mname records.
type masterUnit struct {
	Leader     []netip.Addr
	LeaderPort uint16
	Masters    [][]netip.Addr
}

func (u *masterUnit) records(z *Zone, emit func(string, RR)) {
	d := z.suffix
	for _, ip := range z.opt.ListenerIPs {
		emit(z.opt.SOAMname, addrRR(ip))
	}
	for _, ip := range u.Leader {
		emit("leader"+d, addrRR(ip))
		emit("master"+d, addrRR(ip))
	}
	if len(u.Leader) > 0 {
		emit("_leader._tcp"+d, srvRR("leader"+d, u.LeaderPort))
		emit("_leader._udp"+d, srvRR("leader"+d, u.LeaderPort))
	}
	leaderListed := false
	for i, ips := range u.Masters {
		for _, ip := range ips {
			emit("master"+d, addrRR(ip))
			emit("master"+strconv.Itoa(i)+d, addrRR(ip))
			if slices.Contains(u.Leader, ip) {
				leaderListed = true
			}
		}
	}
	if !leaderListed {
		for _, ip := range u.Leader {
			emit("master"+strconv.Itoa(len(u.Masters))+d, addrRR(ip))
		}
	}
}

// agentUnit holds slave.D and _slave._tcp.D of one agent.
type agentUnit struct {
	IPs  []netip.Addr
	Port uint16
}

func (u *agentUnit) records(z *Zone, emit func(string, RR)) {
	for _, ip := range u.IPs {
		emit("slave"+z.suffix, addrRR(ip))
	}
	emit("_slave._tcp"+z.suffix, srvRR("slave"+z.suffix, u.Port))
}

// fwUnit holds the framework's scheduler records.
type fwUnit struct {
	Order int
	Name  string // raw, for /v1/enumerate
	Label string
	IPs   []netip.Addr
	Port  uint16 // 0: no pid
}

func (u *fwUnit) records(z *Zone, emit func(string, RR)) {
	name := u.Label + z.suffix
	for _, ip := range u.IPs {
		emit(name, addrRR(ip))
	}
	if u.Port != 0 {
		emit("_framework._tcp."+name, srvRR(name, u.Port))
	}
}

// epUnit holds the names of one registry endpoint (see README: Naming of
// registry endpoints).
type epUnit struct {
	Labels  []string
	Network string
	IPs     []netip.Addr
}

func (u *epUnit) records(z *Zone, emit func(string, RR)) {
	base := ".petrel" + z.suffix
	for _, l := range u.Labels {
		for _, ip := range u.IPs {
			emit(l+base, addrRR(ip))
			if u.Network != "" {
				emit(l+"."+u.Network+base, addrRR(ip))
			}
		}
	}
}

func (z *Zone) epUnitOf(ep *petrelv1.Endpoint) *epUnit {
	u := &epUnit{Network: DomainFrag(ep.GetNetworkName(), z.spec)}
	add := func(l string) {
		if l != "" && !slices.Contains(u.Labels, l) {
			u.Labels = append(u.Labels, l)
		}
	}
	add(z.spec(ep.GetContainerName()))
	add(z.spec(ep.GetHostname()))
	cid := ep.GetContainerId()
	if ep.GetSource() == petrelv1.Source_SOURCE_DOCKER && len(cid) > 12 {
		cid = cid[:12] // the Docker short ID
	}
	add(z.spec(cid))
	for _, s := range ep.GetIps() {
		if a, err := netip.ParseAddr(s); err == nil {
			u.IPs = append(u.IPs, a.Unmap())
		}
	}
	return u
}

func epCIDs(ep *petrelv1.Endpoint) []string {
	var out []string
	if c := ep.GetContainerId(); c != "" {
		out = append(out, c)
	}
	if c := ep.GetMesosContainerId(); c != "" && c != ep.GetContainerId() {
		out = append(out, c)
	}
	return out
}

// PutEndpoint adds or replaces the endpoint stored under registry key.
func (z *Zone) PutEndpoint(key string, ep *petrelv1.Endpoint) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	t := z.idx.begin()
	z.putEndpointLocked(t, key, ep)
	return z.commitLocked(t)
}

// DeleteEndpoint removes the endpoint stored under registry key.
func (z *Zone) DeleteEndpoint(key string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	t := z.idx.begin()
	z.deleteEndpointLocked(t, key)
	return z.commitLocked(t)
}

// ResetEndpoints replaces every endpoint (after a registry list).
func (z *Zone) ResetEndpoints(eps map[string]*petrelv1.Endpoint) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	t := z.idx.begin()
	for key := range z.eps {
		if _, ok := eps[key]; !ok {
			z.deleteEndpointLocked(t, key)
		}
	}
	for key, ep := range eps {
		z.putEndpointLocked(t, key, ep)
	}
	return z.commitLocked(t)
}

func (z *Zone) commitLocked(t *txn) int {
	n := t.commit()
	if n > 0 {
		z.bumpSerial()
	}
	return n
}

func (z *Zone) putEndpointLocked(t *txn, key string, ep *petrelv1.Endpoint) {
	old := z.eps[key]
	affected := epCIDs(ep)
	if old != nil {
		z.unindexEndpointLocked(key, old)
		affected = append(affected, epCIDs(old)...)
	}
	z.eps[key] = ep
	for _, c := range epCIDs(ep) {
		z.cidEps[c] = append(z.cidEps[c], key)
	}
	z.replaceLocked(t, keyEP+key, z.epUnitOf(ep))
	z.refreshTasksLocked(t, affected)
}

func (z *Zone) deleteEndpointLocked(t *txn, key string) {
	old := z.eps[key]
	if old == nil {
		return
	}
	z.unindexEndpointLocked(key, old)
	delete(z.eps, key)
	z.replaceLocked(t, keyEP+key, nil)
	z.refreshTasksLocked(t, epCIDs(old))
}

func (z *Zone) unindexEndpointLocked(key string, ep *petrelv1.Endpoint) {
	for _, c := range epCIDs(ep) {
		ks := slices.DeleteFunc(z.cidEps[c], func(k string) bool { return k == key })
		if len(ks) == 0 {
			delete(z.cidEps, c)
		} else {
			z.cidEps[c] = ks
		}
	}
}

// Record is one enumerated record.
type Record struct {
	Name  string `json:"name"`
	Host  string `json:"host"`
	RType string `json:"rtype"`
}

// EnumTask is one task in /v1/enumerate.
type EnumTask struct {
	Name    string   `json:"name"`
	ID      string   `json:"id"`
	Records []Record `json:"records"`
}

// EnumFramework is one framework in /v1/enumerate.
type EnumFramework struct {
	Name  string     `json:"name"`
	Tasks []EnumTask `json:"tasks"`
}

// Enumerate lists frameworks, their running tasks and each task's records
// in generation order.
func (z *Zone) Enumerate() []EnumFramework {
	z.mu.Lock()
	defer z.mu.Unlock()
	type fwe struct {
		key string
		u   *fwUnit
	}
	var fws []fwe
	for key, u := range z.units {
		if u, ok := u.(*fwUnit); ok {
			fws = append(fws, fwe{key, u})
		}
	}
	tasks := map[string][]*taskUnit{}
	for _, u := range z.tasks {
		tasks[u.fw.key] = append(tasks[u.fw.key], u)
	}
	slices.SortFunc(fws, func(a, b fwe) int { return cmp.Compare(a.u.Order, b.u.Order) })
	out := make([]EnumFramework, 0, len(fws))
	for _, f := range fws {
		ef := EnumFramework{Name: f.u.Name, Tasks: []EnumTask{}}
		ts := tasks[f.key]
		slices.SortFunc(ts, func(a, b *taskUnit) int { return cmp.Compare(a.order, b.order) })
		for _, tu := range ts {
			et := EnumTask{Name: tu.name, ID: tu.key.id, Records: []Record{}}
			tu.records(z, func(name string, rr RR) {
				if validName(name) && (rr.Type != TypeSRV || validName(rr.Target)) {
					et.Records = append(et.Records, toRecord(name, rr))
				}
			})
			ef.Tasks = append(ef.Tasks, et)
		}
		out = append(out, ef)
	}
	return out
}

func toRecord(name string, rr RR) Record {
	switch rr.Type {
	case TypeA:
		return Record{Name: name, Host: rr.IP.String(), RType: "A"}
	case TypeAAAA:
		return Record{Name: name, Host: rr.IP.String(), RType: "AAAA"}
	default:
		return Record{Name: name, Host: rr.Target + ":" + strconv.Itoa(int(rr.Port)), RType: "SRV"}
	}
}

// Records is the /v1/axfr record map.
type Records struct {
	As    map[string][]string
	AAAAs map[string][]string
	SRVs  map[string][]string
}

// AXFR returns every record.
func (z *Zone) AXFR() Records {
	r := Records{As: map[string][]string{}, AAAAs: map[string][]string{}, SRVs: map[string][]string{}}
	var rrs []RR
	z.idx.Range(func(name string, n Node) {
		rrs = n.AppendRRs(rrs[:0])
		for _, rr := range rrs {
			v := toRecord(name, rr).Host
			switch rr.Type {
			case TypeA:
				r.As[name] = append(r.As[name], v)
			case TypeAAAA:
				r.AAAAs[name] = append(r.AAAAs[name], v)
			case TypeSRV:
				r.SRVs[name] = append(r.SRVs[name], v)
			}
		}
	})
	return r
}
