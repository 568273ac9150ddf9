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

	mu       sync.Mutex // serialises writers
	units    map[string]unit
	eps      map[string]*petrelv1.Endpoint // by registry key
	cidEps   map[string][]string           // container ID -> endpoint keys
	cidTasks map[string][]string           // container ID -> task unit keys
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
		eps:      map[string]*petrelv1.Endpoint{},
		cidEps:   map[string][]string{},
		cidTasks: map[string][]string{},
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

// unit is one source of records (a task, an agent, a framework, the masters,
// an endpoint). Units are compared with reflect.DeepEqual: equal units
// generate equal records.
type unit interface {
	records(z *Zone, emit func(name string, rr RR))
}

// Key prefixes of units.
const (
	keyMaster = "m"
	keyAgent  = "a/"
	keyFW     = "f/"
	keyTask   = "t/"
	keyEP     = "e/"
)

type emitter struct {
	z   *Zone
	t   *txn
	add bool
}

func (e *emitter) emit(name string, rr RR) {
	if !validName(name) {
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

// UpdateStats describes one applied change.
type UpdateStats struct {
	Units   int // units changed, added or removed
	Names   int // names republished
	Tasks   int // running tasks in the state
	Elapsed time.Duration
}

// UpdateState applies a master state: only changed units touch the index.
func (z *Zone) UpdateState(st *state.State) UpdateStats {
	start := time.Now()
	next := z.buildUnits(st)
	z.mu.Lock()
	defer z.mu.Unlock()
	t := z.idx.begin()
	var stats UpdateStats
	n := 0
	for key, u := range next {
		if n++; n%32 == 0 {
			z.opt.Yield()
		}
		if tu, ok := u.(*taskUnit); ok {
			stats.Tasks++
			tu.IPs = z.taskIPsLocked(tu)
		}
		if z.replaceLocked(t, key, u) {
			stats.Units++
		}
	}
	for key := range z.units {
		if strings.HasPrefix(key, keyEP) {
			continue
		}
		if _, ok := next[key]; !ok {
			z.replaceLocked(t, key, nil)
			stats.Units++
		}
	}
	clear(z.cidTasks)
	for key, u := range z.units {
		if tu, ok := u.(*taskUnit); ok {
			for _, c := range tu.CIDs {
				z.cidTasks[c] = append(z.cidTasks[c], key)
			}
		}
	}
	stats.Names = t.commit()
	if stats.Names > 0 || !z.ready.Load() {
		z.bumpSerial()
	}
	z.ready.Store(true)
	stats.Elapsed = time.Since(start)
	return stats
}

// buildUnits turns a state into units. It runs outside the writer lock (it
// may resolve host names).
func (z *Zone) buildUnits(st *state.State) map[string]unit {
	out := make(map[string]unit, 64)
	agents := map[string]*agentInfo{}
	for i := range st.Slaves {
		s := &st.Slaves[i]
		a := &agentInfo{tail: slaveIDTail(s.ID)}
		if pid, err := state.ParsePID(s.PID); err == nil {
			a.ips = z.hostIPs(pid.Host)
			a.port = pid.Port
		} else if s.Hostname != "" {
			a.ips = z.hostIPs(s.Hostname)
		}
		agents[s.ID] = a
		if len(a.ips) > 0 {
			out[keyAgent+s.ID] = &agentUnit{IPs: a.ips, Port: a.port}
		}
	}
	mu := &masterUnit{}
	if pid, err := state.ParsePID(st.Leader); err == nil {
		mu.Leader = z.hostIPs(pid.Host)
		mu.LeaderPort = pid.Port
	}
	for _, m := range z.opt.Masters {
		host, _, _ := strings.Cut(m, ":")
		if h, _, err := splitHostPort(m); err == nil {
			host = h
		}
		mu.Masters = append(mu.Masters, z.hostIPs(host))
	}
	out[keyMaster] = mu
	for fi := range st.Frameworks {
		f := &st.Frameworks[fi]
		z.opt.Yield()
		fw := DomainFrag(f.Name, z.spec)
		fkey := keyFW + f.ID + "/" + f.Name
		fu := &fwUnit{Order: fi, Name: f.Name, Label: fw}
		if pid, err := state.ParsePID(f.PID); err == nil {
			fu.IPs = z.hostIPs(pid.Host)
			fu.Port = pid.Port
		} else if f.Hostname != "" {
			fu.IPs = z.hostIPs(f.Hostname)
		}
		out[fkey] = fu
		for ti := range f.Tasks {
			task := &f.Tasks[ti]
			if task.State != "TASK_RUNNING" {
				continue
			}
			a, ok := agents[task.SlaveID]
			if !ok {
				continue
			}
			if ti%32 == 31 {
				z.opt.Yield()
			}
			tu := &taskUnit{
				FWKey: fkey, Order: ti, FW: fw, ID: task.ID, Name: task.Name,
				Ports:     state.Ports(task.Resources.Ports),
				SlaveTail: a.tail, SlaveIPs: a.ips,
				CIDs: task.ContainerIDs(),
			}
			if d := task.Discovery; d != nil {
				tu.Disc = true
				tu.DiscName = d.Name
				tu.DiscPorts = d.Ports.Ports
			}
			if s := task.RunningStatus(); s != nil {
				tu.Netinfo = s.NetinfoIPs()
				tu.MesosIPs = s.LabelIPs("MesosContainerizer.NetworkSettings.IPAddress")
				tu.DockerIPs = s.LabelIPs("Docker.NetworkSettings.IPAddress")
			}
			out[keyTask+f.ID+"/"+task.ID] = tu
		}
	}
	return out
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

type agentInfo struct {
	ips  []netip.Addr
	port uint16
	tail string
}

// taskIPsLocked picks the task's addresses from the first source that has any.
func (z *Zone) taskIPsLocked(t *taskUnit) []netip.Addr {
	for _, src := range z.opt.Sources {
		var ips []netip.Addr
		switch src {
		case "petrel":
			ips = z.petrelIPsLocked(t.CIDs)
		case "netinfo":
			ips = t.Netinfo
		case "mesos":
			ips = t.MesosIPs
		case "docker":
			ips = t.DockerIPs
		case "host":
			ips = t.SlaveIPs
		}
		if len(ips) > 0 {
			return ips
		}
	}
	return nil
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

// taskUnit is one running task.
type taskUnit struct {
	FWKey     string
	Order     int
	FW        string // framework label(s)
	ID, Name  string
	Disc      bool
	DiscName  string
	DiscPorts []state.DiscoveryPort
	Ports     []uint16
	SlaveTail string
	SlaveIPs  []netip.Addr
	Netinfo   []netip.Addr
	MesosIPs  []netip.Addr
	DockerIPs []netip.Addr
	CIDs      []string
	IPs       []netip.Addr // chosen by IPSources
}

func (u *taskUnit) records(z *Zone, emit func(string, RR)) {
	var names []string
	if u.Disc {
		// mesos-dns generates from the raw discovery name too ("LEGACY");
		// Marathon users rely on app.group.marathon.mesos.
		names = append(names, u.DiscName)
		if s := z.spec(u.DiscName); s != u.DiscName {
			names = append(names, s)
		}
	} else {
		names = append(names, z.spec(u.Name))
	}
	hash := hashString(u.ID)
	fw := "." + u.FW + z.suffix
	fwSlave := "." + u.FW + ".slave" + z.suffix
	for _, t := range names {
		if t == "" {
			continue
		}
		canon := t + "-" + hash + "-" + u.SlaveTail
		for _, ip := range u.IPs {
			emit(t+fw, addrRR(ip))
			emit(canon+fw, addrRR(ip))
		}
		for _, ip := range u.SlaveIPs {
			emit(t+fwSlave, addrRR(ip))
			emit(canon+fwSlave, addrRR(ip))
		}
		for _, p := range u.Ports {
			for _, proto := range []string{"._tcp", "._udp"} {
				emit("_"+t+proto+fwSlave, srvRR(canon+fwSlave, p))
				if !u.Disc {
					emit("_"+t+proto+fw, srvRR(canon+fwSlave, p))
				}
			}
		}
		for _, dp := range u.DiscPorts {
			if dp.Number <= 0 || dp.Number > 65535 {
				continue
			}
			protos := []string{"tcp", "udp"}
			if p := z.spec(dp.Protocol); p != "" {
				protos = []string{p}
			}
			for _, proto := range protos {
				rr := srvRR(canon+fw, uint16(dp.Number))
				emit("_"+t+"._"+proto+fw, rr)
				if n := z.spec(dp.Name); n != "" {
					emit("_"+n+"._"+t+"._"+proto+fw, rr)
				}
			}
		}
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

// refreshTasksLocked recomputes the addresses of the tasks running in the
// given containers.
func (z *Zone) refreshTasksLocked(t *txn, cids []string) {
	for _, c := range cids {
		for _, key := range z.cidTasks[c] {
			old, ok := z.units[key].(*taskUnit)
			if !ok {
				continue
			}
			nu := *old
			nu.IPs = z.taskIPsLocked(&nu)
			z.replaceLocked(t, key, &nu)
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
	tasks := map[string][]*taskUnit{}
	for key, u := range z.units {
		switch u := u.(type) {
		case *fwUnit:
			fws = append(fws, fwe{key, u})
		case *taskUnit:
			tasks[u.FWKey] = append(tasks[u.FWKey], u)
		}
	}
	slices.SortFunc(fws, func(a, b fwe) int { return cmp.Compare(a.u.Order, b.u.Order) })
	out := make([]EnumFramework, 0, len(fws))
	for _, f := range fws {
		ef := EnumFramework{Name: f.u.Name, Tasks: []EnumTask{}}
		ts := tasks[f.key]
		slices.SortFunc(ts, func(a, b *taskUnit) int { return cmp.Compare(a.Order, b.Order) })
		for _, tu := range ts {
			et := EnumTask{Name: tu.Name, ID: tu.ID, Records: []Record{}}
			tu.records(z, func(name string, rr RR) {
				if validName(name) {
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
	z.idx.Range(func(name string, n *Node) {
		for _, rr := range n.RRs {
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
