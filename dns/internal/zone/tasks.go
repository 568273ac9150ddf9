package zone

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/petrel-net/petrel/dns/internal/state"
)

// taskKey identifies a task: its framework's ID and its own.
type taskKey struct{ fw, id string }

// fwInfo is what a task's records and /v1/enumerate need from its framework.
type fwInfo struct {
	key   string // the framework's unit key
	label string // the sanitised name
}

// agentInfo is what a task's records need from its agent.
type agentInfo struct {
	id   string
	ips  []netip.Addr
	port uint16
	tail string
}

// sameForTasks reports whether a and b give tasks the same records.
func (a *agentInfo) sameForTasks(b *agentInfo) bool {
	return a == b || a.id == b.id && a.tail == b.tail && slices.Equal(a.ips, b.ips)
}

// taskUnit is one running task. Its fields other than raw, seen, order and fw
// are immutable once the unit is in the zone; those four are bookkeeping that
// the writer updates in place (under the zone lock) when a task is listed
// again with equal records.
type taskUnit struct {
	key   taskKey
	raw   state.Raw // of the JSON the unit was built from
	seen  uint32    // the UpdateState generation that last listed the task
	order int32     // position in the framework's task list
	fw    *fwInfo

	agent     *agentInfo
	name      string
	disc      bool
	discName  string
	discPorts []state.DiscoveryPort
	ports     []uint16
	// src holds the netinfo addresses, then the Mesos label addresses, then
	// the Docker label addresses; nsrc has the first two counts.
	src  []netip.Addr
	nsrc [2]uint16
	cids []string
	ips  []netip.Addr // chosen by IPSources
}

// equal reports whether u and o generate the same records from the same
// sources.
func (u *taskUnit) equal(o *taskUnit) bool {
	return u.key == o.key && u.fw.label == o.fw.label && u.name == o.name && u.disc == o.disc &&
		u.discName == o.discName && slices.Equal(u.discPorts, o.discPorts) && slices.Equal(u.ports, o.ports) &&
		u.agent.sameForTasks(o.agent) && slices.Equal(u.src, o.src) && u.nsrc == o.nsrc &&
		slices.Equal(u.cids, o.cids) && slices.Equal(u.ips, o.ips)
}

func (u *taskUnit) netinfo() []netip.Addr { return u.src[:u.nsrc[0]] }
func (u *taskUnit) mesosIPs() []netip.Addr {
	return u.src[u.nsrc[0] : u.nsrc[0]+u.nsrc[1]]
}
func (u *taskUnit) dockerIPs() []netip.Addr { return u.src[u.nsrc[0]+u.nsrc[1]:] }

// newTaskUnit builds the unit of a running task.
func newTaskUnit(f *state.Framework, fw *fwInfo, a *agentInfo, task *state.Task, raw state.Raw, order int) *taskUnit {
	u := &taskUnit{
		key: taskKey{fw: f.ID, id: task.ID}, raw: raw, order: int32(order), fw: fw, agent: a,
		name: task.Name, ports: state.Ports(task.Resources.Ports), cids: task.ContainerIDs(),
	}
	if d := task.Discovery; d != nil {
		u.disc = true
		u.discName = d.Name
		if u.discName == u.name {
			u.discName = u.name // one copy of the string
		}
		u.discPorts = d.Ports.Ports
	}
	if s := task.RunningStatus(); s != nil {
		ni := s.NetinfoIPs()
		mi := s.LabelIPs("MesosContainerizer.NetworkSettings.IPAddress")
		di := s.LabelIPs("Docker.NetworkSettings.IPAddress")
		// At most 65535 of each (the counts are 16 bits); a DNS message
		// holds far fewer.
		ni, mi = ni[:min(len(ni), 0xFFFF)], mi[:min(len(mi), 0xFFFF)]
		if n := len(ni) + len(mi) + len(di); n > 0 {
			u.src = make([]netip.Addr, 0, n)
			u.src = append(append(append(u.src, ni...), mi...), di...)
			u.nsrc = [2]uint16{uint16(len(ni)), uint16(len(mi))}
		}
	}
	return u
}

// UpdateStats describes one applied change.
type UpdateStats struct {
	Units   int // units changed, added or removed
	Names   int // names republished
	Tasks   int // running tasks in the state
	Elapsed time.Duration
}

// KnownTask reports whether a running task with this raw hash is in the zone,
// so that a decoder need not decode it (state.Decoder.Known). UpdateState
// then takes the task as it is.
func (z *Zone) KnownTask(raw state.Raw) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	_, ok := z.byRaw[raw]
	return ok && !z.stale
}

// commitEvery bounds the names one transaction collects during a large
// change (the first load): committing in steps keeps the memory peak down.
// Each name is still published whole; a large change was never published
// all at once anyway (one shard after another).
const commitEvery = 16384

// UpdateState applies a master state: only changed units touch the index.
// Tasks the decoder skipped as known (nil, see KnownTask) keep their units;
// they are rebuilt only when their agent or framework label changed.
func (z *Zone) UpdateState(st *state.State) UpdateStats {
	start := time.Now()
	b := z.build(st)
	z.mu.Lock()
	defer z.mu.Unlock()
	t := z.idx.begin()
	var stats UpdateStats
	n := 0
	for key, u := range b.units {
		if n++; n%32 == 0 {
			z.opt.Yield()
		}
		if z.replaceLocked(t, key, u) {
			stats.Units++
		}
	}
	for key := range z.units {
		if strings.HasPrefix(key, keyEP) {
			continue
		}
		if _, ok := b.units[key]; !ok {
			z.replaceLocked(t, key, nil)
			stats.Units++
		}
	}
	z.gen++
	missed := false
	for i := range st.Frameworks {
		f := &st.Frameworks[i]
		fb := &b.fws[i]
		for ti, task := range f.Tasks {
			if n++; n%64 == 0 {
				z.opt.Yield()
			}
			nu := fb.tasks[ti]
			if task == nil {
				old := z.byRaw[f.Raws[ti]]
				if old == nil {
					// Not possible while states are applied in the
					// order they are decoded; decode everything next
					// time rather than lose the task for good.
					missed = true
					continue
				}
				a, ok := b.agents[old.agent.id]
				if !ok {
					continue
				}
				nu = old
				if old.fw.label != fb.info.label || old.fw.key != fb.info.key || !old.agent.sameForTasks(a) {
					c := *old
					c.fw, c.agent = fb.info, a
					nu = &c
				}
				nu.order = int32(ti)
			}
			if nu == nil {
				continue
			}
			stats.Tasks++
			if z.applyTaskLocked(t, nu) {
				stats.Units++
			}
			if len(t.pending) >= commitEvery {
				stats.Names += t.commit()
				t = z.idx.begin()
			}
		}
	}
	for _, u := range z.tasks {
		if u.seen != z.gen {
			z.replaceTaskLocked(t, u, nil)
			stats.Units++
		}
	}
	z.stale = missed
	stats.Names += t.commit()
	if stats.Names > 0 || !z.ready.Load() {
		z.bumpSerial()
	}
	z.ready.Store(true)
	stats.Elapsed = time.Since(start)
	return stats
}

// applyTaskLocked puts nu in place of the unit with its key, unless that one
// has equal records; it reports whether records changed.
func (z *Zone) applyTaskLocked(t *txn, nu *taskUnit) bool {
	nu.seen = z.gen
	old := z.tasks[nu.key]
	if old == nu {
		return false
	}
	nu.ips = z.taskIPsLocked(nu)
	if old != nil && old.equal(nu) {
		old.seen, old.order, old.fw = nu.seen, nu.order, nu.fw
		if old.raw != nu.raw {
			if z.byRaw[old.raw] == old {
				delete(z.byRaw, old.raw)
			}
			old.raw = nu.raw
			z.byRaw[old.raw] = old
		}
		return false
	}
	z.replaceTaskLocked(t, old, nu)
	return true
}

// replaceTaskLocked swaps task unit old for nu (either may be nil) and
// records the record changes in t; new records are added first.
func (z *Zone) replaceTaskLocked(t *txn, old, nu *taskUnit) {
	sameCIDs := old != nil && nu != nil && slices.Equal(old.cids, nu.cids)
	if nu != nil {
		e := emitter{z: z, t: t, add: true}
		nu.records(z, e.emit)
		z.tasks[nu.key] = nu
		if nu.raw != (state.Raw{}) {
			z.byRaw[nu.raw] = nu
		}
		if !sameCIDs {
			for _, c := range nu.cids {
				z.cidTasks[c] = append(z.cidTasks[c], nu.key)
			}
		}
	}
	if old == nil {
		return
	}
	e := emitter{z: z, t: t}
	old.records(z, e.emit)
	if z.byRaw[old.raw] == old {
		delete(z.byRaw, old.raw)
	}
	if nu == nil || nu.key != old.key {
		delete(z.tasks, old.key)
	}
	if !sameCIDs {
		for _, c := range old.cids {
			ks := slices.DeleteFunc(z.cidTasks[c], func(k taskKey) bool { return k == old.key })
			if len(ks) == 0 {
				delete(z.cidTasks, c)
			} else {
				z.cidTasks[c] = ks
			}
		}
	}
}

// built is a state turned into units, outside the writer lock.
type built struct {
	units  map[string]unit // masters, agents, frameworks
	agents map[string]*agentInfo
	fws    []builtFW // index by index with the state's frameworks
}

type builtFW struct {
	info  *fwInfo
	tasks []*taskUnit // index by index with the tasks; nil: not running, no agent, or known
}

// pidAddrs resolves a libprocess PID ("name@host:port") to addresses and a
// port; an unparsable PID falls back to hostname, with no port.
func (z *Zone) pidAddrs(rawPID, hostname string) (ips []netip.Addr, port uint16) {
	if pid, err := state.ParsePID(rawPID); err == nil {
		return z.hostIPs(pid.Host), pid.Port
	}
	if hostname != "" {
		return z.hostIPs(hostname), 0
	}
	return nil, 0
}

// build turns a state into units. It runs outside the writer lock (it may
// resolve host names).
func (z *Zone) build(st *state.State) *built {
	b := &built{units: make(map[string]unit, 64), agents: make(map[string]*agentInfo, len(st.Slaves))}
	for i := range st.Slaves {
		s := &st.Slaves[i]
		a := &agentInfo{id: s.ID, tail: slaveIDTail(s.ID)}
		a.ips, a.port = z.pidAddrs(s.PID, s.Hostname)
		b.agents[s.ID] = a
		if len(a.ips) > 0 {
			b.units[keyAgent+s.ID] = &agentUnit{IPs: a.ips, Port: a.port}
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
	b.units[keyMaster] = mu
	b.fws = make([]builtFW, len(st.Frameworks))
	for fi := range st.Frameworks {
		f := &st.Frameworks[fi]
		z.opt.Yield()
		info := &fwInfo{key: keyFW + f.ID + "/" + f.Name, label: DomainFrag(f.Name, z.spec)}
		fu := &fwUnit{Order: fi, Name: f.Name, Label: info.label}
		fu.IPs, fu.Port = z.pidAddrs(f.PID, f.Hostname)
		b.units[info.key] = fu
		fb := &b.fws[fi]
		fb.info = info
		fb.tasks = make([]*taskUnit, len(f.Tasks))
		for ti, task := range f.Tasks {
			if task == nil || task.State != "TASK_RUNNING" {
				continue
			}
			a, ok := b.agents[task.SlaveID]
			if !ok {
				continue
			}
			if ti%32 == 31 {
				z.opt.Yield()
			}
			var raw state.Raw
			if ti < len(f.Raws) {
				raw = f.Raws[ti]
			}
			fb.tasks[ti] = newTaskUnit(f, info, a, task, raw, ti)
		}
	}
	return b
}

func (u *taskUnit) records(z *Zone, emit func(string, RR)) {
	var names []string
	if u.disc {
		// mesos-dns generates from the raw discovery name too ("LEGACY");
		// Marathon users rely on app.group.marathon.mesos.
		names = append(names, u.discName)
		if s := z.spec(u.discName); s != u.discName {
			names = append(names, s)
		}
	} else {
		names = append(names, z.spec(u.name))
	}
	hash := hashString(u.key.id)
	fw := "." + u.fw.label + z.suffix
	fwSlave := "." + u.fw.label + ".slave" + z.suffix
	for _, t := range names {
		if t == "" {
			continue
		}
		canon := t + "-" + hash + "-" + u.agent.tail
		for _, ip := range u.ips {
			emit(t+fw, addrRR(ip))
			emit(canon+fw, addrRR(ip))
		}
		for _, ip := range u.agent.ips {
			emit(t+fwSlave, addrRR(ip))
			emit(canon+fwSlave, addrRR(ip))
		}
		for _, p := range u.ports {
			for _, proto := range []string{"._tcp", "._udp"} {
				emit("_"+t+proto+fwSlave, srvRR(canon+fwSlave, p))
				if !u.disc {
					emit("_"+t+proto+fw, srvRR(canon+fwSlave, p))
				}
			}
		}
		for _, dp := range u.discPorts {
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

// taskIPsLocked picks the task's addresses from the first source that has any.
func (z *Zone) taskIPsLocked(t *taskUnit) []netip.Addr {
	for _, src := range z.opt.Sources {
		var ips []netip.Addr
		switch src {
		case "petrel":
			ips = z.petrelIPsLocked(t.cids)
		case "netinfo":
			ips = t.netinfo()
		case "mesos":
			ips = t.mesosIPs()
		case "docker":
			ips = t.dockerIPs()
		case "host":
			ips = t.agent.ips
		}
		if len(ips) > 0 {
			return ips
		}
	}
	return nil
}

// refreshTasksLocked recomputes the addresses of the tasks running in the
// given containers.
func (z *Zone) refreshTasksLocked(t *txn, cids []string) {
	for _, c := range cids {
		for _, key := range z.cidTasks[c] {
			old := z.tasks[key]
			if old == nil {
				continue
			}
			nu := *old
			nu.ips = z.taskIPsLocked(&nu)
			if slices.Equal(nu.ips, old.ips) {
				continue
			}
			z.replaceTaskLocked(t, old, &nu)
		}
	}
}
