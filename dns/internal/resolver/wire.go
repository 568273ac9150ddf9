// Package resolver answers DNS queries for the Mesos domain straight from the
// zone index, encoding responses on the wire without building dns.Msg
// values, and forwards other names to the configured resolvers. It serves
// UDP with batched socket reads and writes, and TCP through miekg/dns.
package resolver

import (
	"encoding/binary"
	"math/rand/v2"
	"unsafe"

	"github.com/petrel-net/petrel/dns/internal/zone"
)

// DNS constants used on the wire.
const (
	typeA     = 1
	typeNS    = 2
	typeSOA   = 6
	typeAAAA  = 28
	typeSRV   = 33
	typeOPT   = 41
	typeANY   = 255
	classIN   = 1
	hdrLen    = 12
	minUDP    = 512
	maxMsg    = 65535
	ourUDPMax = 1232

	rcodeSuccess  = 0
	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNXDomain = 3
	rcodeNotImp   = 4
	rcodeRefused  = 5
)

// outcome is what the responder did with a query.
type outcome int

const (
	outAnswer   outcome = iota // NOERROR with answers
	outNoData                  // NOERROR, no answers
	outNXDomain                // NXDOMAIN
	outServFail                // not ready
	outRefused                 // external names disabled
	outFormErr                 // malformed query
	outNotImp                  // opcode other than QUERY
	outForward                 // caller must forward
	outDrop                    // not a query; no reply
	nOutcomes
)

var outcomeNames = [nOutcomes]string{"answer", "nodata", "nxdomain", "servfail", "refused", "formerr", "notimp", "forward", "drop"}

// query is a parsed request.
type query struct {
	id       uint16
	flags    uint16
	qEnd     int // end of the question section in the request
	qtype    uint16
	lower    bool // the question name is already lower case on the wire
	edns     bool
	udpSize  int
	nameLen  int
	labelOff [128]uint8 // offsets of label starts in the dotted name
	nLabels  int
}

// worker holds the per-goroutine buffers of the responder.
type worker struct {
	name []byte // lower-case dotted question name with trailing dot
	out  []byte
	comp []compEntry
	perm []int
	rng  *rand.PCG
	q    query
	rrs  []zone.RR // records of the question name
	trrs []zone.RR // records of an SRV target
	ends []int     // end offsets of answer RRs
	// authBytes is the size of the authority RRs written so far.
	authBytes int
}

type compEntry struct {
	s   string
	off uint16
}

const maxComp = 96

func newWorker() *worker {
	return &worker{
		name: make([]byte, 0, 256),
		out:  make([]byte, 0, 4096),
		comp: make([]compEntry, 0, maxComp),
		rng:  rand.NewPCG(rand.Uint64(), rand.Uint64()),
	}
}

// parse reads the header, the single question and an optional OPT RR.
func (w *worker) parse(req []byte) outcome {
	q := &w.q
	*q = query{}
	if len(req) < hdrLen {
		return outDrop
	}
	q.id = binary.BigEndian.Uint16(req)
	q.flags = binary.BigEndian.Uint16(req[2:])
	if q.flags&0x8000 != 0 {
		return outDrop
	}
	if (q.flags>>11)&0xF != 0 {
		return outNotImp
	}
	qd := binary.BigEndian.Uint16(req[4:])
	an := binary.BigEndian.Uint16(req[6:])
	ns := binary.BigEndian.Uint16(req[8:])
	ar := binary.BigEndian.Uint16(req[10:])
	if qd != 1 {
		return outFormErr
	}
	w.name = w.name[:0]
	q.lower = true
	off := hdrLen
	for {
		if off >= len(req) {
			return outFormErr
		}
		l := int(req[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 || off+1+l > len(req) || q.nLabels == len(q.labelOff) {
			return outFormErr
		}
		q.labelOff[q.nLabels] = uint8(len(w.name))
		q.nLabels++
		for _, c := range req[off+1 : off+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
				q.lower = false
			} else if c == '.' {
				// A dot inside a label cannot be represented in our
				// dotted names; such names never exist in the zone.
				c = 0
			}
			w.name = append(w.name, c)
		}
		w.name = append(w.name, '.')
		off += 1 + l
		if len(w.name) > 254 {
			return outFormErr
		}
	}
	if len(w.name) == 0 {
		w.name = append(w.name, '.')
	}
	if off+4 > len(req) {
		return outFormErr
	}
	q.qtype = binary.BigEndian.Uint16(req[off:])
	off += 4
	q.qEnd = off
	q.udpSize = minUDP
	if an == 0 && ns == 0 && ar > 0 {
		for range ar {
			// Skip the owner name (normally the root).
			for {
				if off >= len(req) {
					return outFormErr
				}
				l := int(req[off])
				if l&0xC0 == 0xC0 {
					off += 2
					break
				}
				off += 1 + l
				if l == 0 {
					break
				}
			}
			if off+10 > len(req) {
				return outFormErr
			}
			typ := binary.BigEndian.Uint16(req[off:])
			class := binary.BigEndian.Uint16(req[off+2:])
			rdlen := int(binary.BigEndian.Uint16(req[off+8:]))
			off += 10 + rdlen
			if off > len(req) {
				return outFormErr
			}
			if typ == typeOPT {
				q.edns = true
				q.udpSize = max(int(class), minUDP)
			}
		}
	}
	return outAnswer
}

// Responder answers queries from a zone.
type Responder struct {
	Zone        ZoneReader
	Domain      string // lower case, no trailing dot
	TTL         uint32
	Mname       string
	Rname       string
	Refresh     uint32
	Retry       uint32
	Expire      uint32
	SRVWeight   uint16
	RecurseOn   bool
	ExternalOn  bool // and at least one resolver configured
	SetTruncate bool
}

// ZoneReader is what the responder reads.
type ZoneReader interface {
	Index() *zone.Index
	Ready() bool
	Serial() uint32
}

// inDomain reports whether the dotted name is the domain or below it.
func (r *Responder) inDomain(name []byte) bool {
	d := r.Domain
	n := len(name) - 1 // without the trailing dot
	if n < len(d) || string(name[n-len(d):n]) != d {
		return false
	}
	return n == len(d) || name[n-len(d)-1] == '.'
}

// respond writes the reply to req into w.out and returns it. maxSize is the
// transport limit (0: UDP, use the client's EDNS size or 512).
func (r *Responder) respond(w *worker, req []byte, tcp bool) ([]byte, outcome) {
	oc := w.parse(req)
	q := &w.q
	w.ends = w.ends[:0]
	w.authBytes = 0
	switch oc {
	case outDrop:
		return nil, oc
	case outNotImp, outFormErr:
		return w.errorReply(req, oc), oc
	}
	maxSize := maxMsg
	if !tcp {
		maxSize = min(q.udpSize, maxMsg)
	}
	if !r.inDomain(w.name) {
		if r.ExternalOn {
			return nil, outForward
		}
		return w.header(req, rcodeRefused, false, r.RecurseOn), outRefused
	}
	if !r.Zone.Ready() {
		// mesos-dns fix (#344): never an authoritative NXDOMAIN before the
		// first state; SERVFAIL makes resolvers try again later.
		return w.finish(w.header(req, rcodeServFail, false, r.RecurseOn), q, 0, 0, 0, maxSize, r.SetTruncate), outServFail
	}
	cleanWild(w)
	name := unsafe.String(unsafe.SliceData(w.name), len(w.name))
	w.rrs = r.Zone.Index().LookupBytes(w.name).AppendRRs(w.rrs[:0])
	rrs := w.rrs
	out := w.header(req, rcodeSuccess, true, r.RecurseOn)
	w.comp = w.comp[:0]
	if q.lower {
		// The question name is at offset 12: point at it and its suffixes.
		for i := 0; i < q.nLabels && len(w.comp) < maxComp; i++ {
			off := int(q.labelOff[i])
			w.comp = append(w.comp, compEntry{s: name[off:], off: uint16(hdrLen + off)})
		}
	}
	w.out = out
	var an, ns, ar int
	switch q.qtype {
	case typeA:
		an = r.addrs(w, name, rrs, zone.TypeA)
	case typeAAAA:
		an = r.addrs(w, name, rrs, zone.TypeAAAA)
	case typeSRV:
		an, ar = r.srvs(w, name, rrs, true)
	case typeANY:
		an, _ = r.srvs(w, name, rrs, false)
		an += r.addrs(w, name, rrs, zone.TypeA)
		an += r.addrs(w, name, rrs, zone.TypeAAAA)
		ns = 2
		r.soa(w, name)
		r.nsRR(w, name)
	case typeSOA:
		r.soa(w, name)
		ns = 1
	case typeNS:
		r.nsRR(w, name)
		ns = 1
	}
	oc = outAnswer
	if an == 0 && q.qtype != typeSOA && q.qtype != typeNS && q.qtype != typeSRV {
		if len(rrs) > 0 {
			oc = outNoData
		} else {
			oc = outNXDomain
			w.out[3] = w.out[3]&0xF0 | rcodeNXDomain
		}
		if q.qtype != typeANY {
			r.soa(w, name)
			ns = 1
		}
	} else if an == 0 {
		oc = outNoData
	}
	return w.finish(w.out, q, an, ns, ar, maxSize, r.SetTruncate), oc
}

// cleanWild removes every ".*" from the name, as mesos-dns does.
func cleanWild(w *worker) {
	for i := 0; i+1 < len(w.name); i++ {
		if w.name[i] == '.' && w.name[i+1] == '*' {
			w.name = append(w.name[:i], w.name[i+2:]...)
			w.q.lower = false // the offsets no longer match the question
			i--
		}
	}
}

func (w *worker) answersEnd() int {
	if len(w.ends) == 0 {
		return len(w.out)
	}
	return w.ends[len(w.ends)-1]
}

// header starts a reply: the request's ID, opcode, RD and question.
func (w *worker) header(req []byte, rcode int, aa, ra bool) []byte {
	q := &w.q
	out := w.out[:0]
	flags := uint16(0x8000) | q.flags&0x7900 // QR, opcode, RD
	if aa {
		flags |= 0x0400
	}
	if ra {
		flags |= 0x0080
	}
	flags |= uint16(rcode)
	out = binary.BigEndian.AppendUint16(out, q.id)
	out = binary.BigEndian.AppendUint16(out, flags)
	out = append(out, 0, 1, 0, 0, 0, 0, 0, 0)
	out = append(out, req[hdrLen:q.qEnd]...)
	w.out = out
	return out
}

// errorReply answers a malformed or unsupported request with its header only.
func (w *worker) errorReply(req []byte, oc outcome) []byte {
	rc := rcodeFormErr
	if oc == outNotImp {
		rc = rcodeNotImp
	}
	out := w.out[:0]
	out = binary.BigEndian.AppendUint16(out, binary.BigEndian.Uint16(req))
	flags := uint16(0x8000) | binary.BigEndian.Uint16(req[2:])&0x7900 | uint16(rc)
	out = binary.BigEndian.AppendUint16(out, flags)
	out = append(out, 0, 0, 0, 0, 0, 0, 0, 0)
	w.out = out
	return out
}

// finish sets the counts, truncates to maxSize and appends OPT when the
// client sent one. Only answers are cut with TC set; extras are dropped first
// (they are optional, RFC 2181 9).
func (w *worker) finish(out []byte, q *query, an, ns, ar, maxSize int, setTC bool) []byte {
	reserve := 0
	if q.edns {
		reserve = 11
	}
	if len(out)+reserve > maxSize {
		if ar > 0 {
			out = out[:w.answersEnd()+w.authLen(ns)]
			ar = 0
		}
		if len(out)+reserve > maxSize {
			k := len(w.ends)
			for k > 0 && w.ends[k-1]+reserve > maxSize {
				k--
			}
			if k > 0 {
				out = out[:w.ends[k-1]]
			} else {
				out = out[:q.qEnd]
			}
			an, ns = k, 0
			if setTC {
				out[2] |= 0x02
			}
		}
	}
	binary.BigEndian.PutUint16(out[6:], uint16(an))
	binary.BigEndian.PutUint16(out[8:], uint16(ns))
	if q.edns {
		out = append(out, 0, 0, typeOPT, byte(ourUDPMax>>8), byte(ourUDPMax&0xFF), 0, 0, 0, 0, 0, 0)
		ar++
	}
	binary.BigEndian.PutUint16(out[10:], uint16(ar))
	w.out = out
	return out
}

// authLen is the length of the authority RRs written right after the answers
// (tracked by authEnd).
func (w *worker) authLen(ns int) int {
	if ns == 0 {
		return 0
	}
	return w.authBytes
}

// writeName appends a lower-case dotted FQDN, compressed against earlier names
// unless noCompress is set (SRV targets, RFC 2782).
func (w *worker) writeName(name string, noCompress bool) {
	pos := 0
	for pos < len(name) {
		suffix := name[pos:]
		if !noCompress {
			for i := range w.comp {
				if w.comp[i].s == suffix {
					w.out = append(w.out, 0xC0|byte(w.comp[i].off>>8), byte(w.comp[i].off))
					return
				}
			}
		}
		if off := len(w.out); off < 0x3FFF && len(w.comp) < maxComp {
			w.comp = append(w.comp, compEntry{s: suffix, off: uint16(off)})
		}
		i := pos
		for i < len(name) && name[i] != '.' {
			i++
		}
		w.out = append(w.out, byte(i-pos))
		w.out = append(w.out, name[pos:i]...)
		pos = i + 1
	}
	w.out = append(w.out, 0)
}

func (w *worker) rrHeader(name string, typ uint16, ttl uint32) {
	w.writeName(name, false)
	w.out = binary.BigEndian.AppendUint16(w.out, typ)
	w.out = binary.BigEndian.AppendUint16(w.out, classIN)
	w.out = binary.BigEndian.AppendUint32(w.out, ttl)
}

// shuffled returns a random permutation of the indexes of the RRs of type t.
func (w *worker) shuffled(rrs []zone.RR, t uint16) []int {
	w.perm = w.perm[:0]
	for i := range rrs {
		if rrs[i].Type == t {
			w.perm = append(w.perm, i)
		}
	}
	for i := len(w.perm) - 1; i > 0; i-- {
		j := int(w.rng.Uint64() % uint64(i+1))
		w.perm[i], w.perm[j] = w.perm[j], w.perm[i]
	}
	return w.perm
}

func (r *Responder) addrs(w *worker, name string, rrs []zone.RR, t uint16) int {
	n := 0
	for _, i := range w.shuffled(rrs, t) {
		ip := rrs[i].IP
		w.rrHeader(name, t, r.TTL)
		if t == zone.TypeA {
			b := ip.As4()
			w.out = append(w.out, 0, 4)
			w.out = append(w.out, b[:]...)
		} else {
			b := ip.As16()
			w.out = append(w.out, 0, 16)
			w.out = append(w.out, b[:]...)
		}
		w.ends = append(w.ends, len(w.out))
		n++
	}
	return n
}

// srvs writes the SRV answers and, as additionals, the lowest A and AAAA of
// each distinct target.
func (r *Responder) srvs(w *worker, name string, rrs []zone.RR, extras bool) (an, ar int) {
	perm := w.shuffled(rrs, zone.TypeSRV)
	for _, i := range perm {
		rr := &rrs[i]
		w.rrHeader(name, typeSRV, r.TTL)
		lenAt := len(w.out)
		w.out = append(w.out, 0, 0, 0, 0)
		w.out = binary.BigEndian.AppendUint16(w.out, r.SRVWeight)
		w.out = binary.BigEndian.AppendUint16(w.out, rr.Port)
		w.writeName(rr.Target, true)
		binary.BigEndian.PutUint16(w.out[lenAt:], uint16(len(w.out)-lenAt-2))
		w.ends = append(w.ends, len(w.out))
		an++
	}
	if !extras {
		return an, 0
	}
	idx := r.Zone.Index()
	for k, i := range perm {
		target := rrs[i].Target
		dup := false
		for _, j := range perm[:k] {
			if rrs[j].Target == target {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		w.trrs = idx.Lookup(target).AppendRRs(w.trrs[:0])
		trrs := w.trrs
		for _, t := range [2]uint16{zone.TypeA, zone.TypeAAAA} {
			// The lowest address of the type, so that the additional
			// section does not depend on the order records arrived in.
			best := -1
			for j := range trrs {
				if trrs[j].Type == t && (best < 0 || trrs[j].IP.Less(trrs[best].IP)) {
					best = j
				}
			}
			if best < 0 {
				continue
			}
			rr := &trrs[best]
			w.rrHeader(target, t, r.TTL)
			if t == zone.TypeA {
				b := rr.IP.As4()
				w.out = append(w.out, 0, 4)
				w.out = append(w.out, b[:]...)
			} else {
				b := rr.IP.As16()
				w.out = append(w.out, 0, 16)
				w.out = append(w.out, b[:]...)
			}
			ar++
		}
	}
	return an, ar
}

func (r *Responder) soa(w *worker, name string) {
	start := len(w.out)
	w.rrHeader(name, typeSOA, r.TTL)
	lenAt := len(w.out)
	w.out = append(w.out, 0, 0)
	w.writeName(r.Mname, false)
	w.writeName(r.Rname, false)
	w.out = binary.BigEndian.AppendUint32(w.out, r.Zone.Serial())
	w.out = binary.BigEndian.AppendUint32(w.out, r.Refresh)
	w.out = binary.BigEndian.AppendUint32(w.out, r.Retry)
	w.out = binary.BigEndian.AppendUint32(w.out, r.Expire)
	w.out = binary.BigEndian.AppendUint32(w.out, r.TTL) // mesos-dns: minimum = ttl
	binary.BigEndian.PutUint16(w.out[lenAt:], uint16(len(w.out)-lenAt-2))
	w.authBytes += len(w.out) - start
}

func (r *Responder) nsRR(w *worker, name string) {
	start := len(w.out)
	w.rrHeader(name, typeNS, r.TTL)
	lenAt := len(w.out)
	w.out = append(w.out, 0, 0)
	w.writeName(r.Mname, false)
	binary.BigEndian.PutUint16(w.out[lenAt:], uint16(len(w.out)-lenAt-2))
	w.authBytes += len(w.out) - start
}
