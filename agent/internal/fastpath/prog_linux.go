package fastpath

import (
	"github.com/cilium/ebpf/asm"
)

// Offsets the program uses.
const (
	// skbIfindex is __sk_buff.ifindex: the device the packet arrived on.
	skbIfindex = 40

	// The Ethernet and IPv4 headers are copied to the stack at hdr, chosen
	// so that the addresses sit on 4-byte boundaries (the verifier wants
	// aligned stack access).
	hdr        = -42
	hdrEthType = hdr + 12
	hdrVerIHL  = hdr + 14
	hdrTOS     = hdr + 15
	hdrTTL     = hdr + 22 // TTL, then protocol: one 16-bit word
	hdrProto   = hdr + 23
	hdrSrc     = hdr + 26
	hdrDst     = hdr + 30
	hdrLen     = 14 + 20

	// keyIf and keyAddr are a Key on the stack.
	keyIf   = -56
	keyAddr = -52
	// statIdx is the counter index on the stack.
	statIdx = -60

	// fib is struct bpf_fib_lookup (64 bytes) on the stack.
	fib        = -128
	fibFamily  = fib + 0
	fibL4      = fib + 1
	fibIfindex = fib + 8
	fibTOS     = fib + 12
	fibSrc     = fib + 16
	fibDst     = fib + 32 // the next hop after a lookup
	fibSMAC    = fib + 52
	fibDMAC    = fib + 58
	fibLen     = 64

	// Packet offsets written back.
	pktCsum = 14 + 10
	pktTTL  = 14 + 8

	afInet     = 2
	ethPIPLE   = 0x0008 // ETH_P_IP as it reads little-endian from the wire
	tcActOK    = 0
	tcActShot  = 2
	fibSuccess = 0
	csumSize2  = 2 // l3_csum_replace flags: a 16-bit field
)

// program returns the tc ingress program for the map at ifsFD (Key ->
// Kind) and the per-CPU counters at statsFD (index Kind -> packets). The
// design is in doc.go; every branch that does not forward returns TC_ACT_OK
// before the packet was touched, so the stack sees it as it arrived.
func program(ifsFD, statsFD int) asm.Instructions {
	// lookup leaves the map value's address for the Key at keyIf in R0 and
	// branches to miss when there is none.
	lookup := func(miss string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, ifsFD),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, keyIf),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, miss),
		}
	}
	var p asm.Instructions
	add := func(is ...asm.Instruction) { p = append(p, is...) }
	// kindOf leaves in dst the kind of the interface whose index is in
	// idx, and passes the packet up when the map has none.
	kindOf := func(idx, dst asm.Register) {
		add(
			asm.StoreMem(asm.RFP, keyIf, idx, asm.Word),
			asm.StoreImm(asm.RFP, keyAddr, 0, asm.Word),
		)
		add(lookup("pass")...)
		add(asm.LoadMem(dst, asm.R0, 0, asm.Word))
	}

	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		// Copy the Ethernet and IPv4 headers; a shorter packet passes.
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, hdr),
		asm.Mov.Imm(asm.R4, hdrLen),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		// IPv4, no options, and a TTL that survives the hop.
		asm.LoadMem(asm.R1, asm.RFP, hdrEthType, asm.Half),
		asm.JNE.Imm(asm.R1, ethPIPLE, "pass"),
		asm.LoadMem(asm.R1, asm.RFP, hdrVerIHL, asm.Byte),
		asm.JNE.Imm(asm.R1, 0x45, "pass"),
		asm.LoadMem(asm.R1, asm.RFP, hdrTTL, asm.Byte),
		asm.JLE.Imm(asm.R1, 1, "pass"),
		// R7: the kind of the interface the packet came in on.
		asm.LoadMem(asm.R1, asm.R6, skbIfindex, asm.Word),
	)
	kindOf(asm.R1, asm.R7)
	add(
		// From a container, only its own source addresses.
		asm.JNE.Imm(asm.R7, int32(KindContainer), "route"),
		asm.LoadMem(asm.R1, asm.RFP, hdrSrc, asm.Word),
		asm.StoreMem(asm.RFP, keyAddr, asm.R1, asm.Word),
	)
	add(lookup("pass")...)
	// The kernel's route: zero the parameters, then fill the input.
	add(asm.Mov.Imm(asm.R1, 0).WithSymbol("route"))
	for off := int16(fib); off < fib+fibLen; off += 8 {
		add(asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	add(asm.StoreImm(asm.RFP, fibFamily, afInet, asm.Byte))
	for _, f := range []struct {
		base     asm.Register
		from, to int16
		size     asm.Size
	}{
		{asm.RFP, hdrProto, fibL4, asm.Byte},
		{asm.RFP, hdrTOS, fibTOS, asm.Byte},
		{asm.R6, skbIfindex, fibIfindex, asm.Word},
		{asm.RFP, hdrSrc, fibSrc, asm.Word},
		{asm.RFP, hdrDst, fibDst, asm.Word},
	} {
		add(asm.LoadMem(asm.R1, f.base, f.from, f.size), asm.StoreMem(asm.RFP, f.to, asm.R1, f.size))
	}
	add(
		// tot_len stays 0: the kernel then checks the packet against the
		// output MTU itself, GSO packets included.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fib),
		asm.Mov.Imm(asm.R3, fibLen),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnFibLookup.Call(),
		asm.JNE.Imm(asm.R0, fibSuccess, "pass"),
		// R8: the output interface, never the input one.
		asm.LoadMem(asm.R8, asm.RFP, fibIfindex, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, skbIfindex, asm.Word),
		asm.JEq.Reg(asm.R8, asm.R1, "pass"),
	)
	// R9: the output interface's kind.
	kindOf(asm.R8, asm.R9)
	add(
		asm.JEq.Imm(asm.R9, int32(KindContainer), "forward"),
		asm.JNE.Imm(asm.R9, int32(KindUnderlay), "pass"),
		// Out of the underlay: never back where it came from, and only to
		// another Petrel host.
		asm.JEq.Imm(asm.R7, int32(KindUnderlay), "pass"),
		asm.LoadMem(asm.R1, asm.RFP, fibDst, asm.Word),
		asm.StoreMem(asm.RFP, keyAddr, asm.R1, asm.Word),
	)
	add(lookup("pass")...)
	add(
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Imm(asm.R1, int32(KindPeer), "pass"),
		// Forward: TTL and header checksum first (nothing is written
		// if the checksum update fails), then the Ethernet addresses.
		asm.LoadMem(asm.R7, asm.RFP, hdrTTL, asm.Half).WithSymbol("forward"),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, -1), // the TTL is the low byte and above 1
		asm.StoreMem(asm.RFP, hdrTTL, asm.R1, asm.Half),
		asm.Mov.Reg(asm.R4, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, pktCsum),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Mov.Imm(asm.R5, csumSize2),
		asm.FnL3CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
	)
	store := func(off int32, from int32, n int32) {
		add(
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, off),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, from),
			asm.Mov.Imm(asm.R4, n),
			asm.Mov.Imm(asm.R5, 0),
			asm.FnSkbStoreBytes.Call(),
			// The checksum already changed: a packet half rewritten
			// must not go on.
			asm.JNE.Imm(asm.R0, 0, "drop"),
		)
	}
	store(pktTTL, hdrTTL, 1)
	store(0, fibDMAC, 6)
	store(6, fibSMAC, 6)
	add(
		asm.StoreMem(asm.RFP, statIdx, asm.R9, asm.Word),
		asm.LoadMapPtr(asm.R1, statsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, statIdx),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "redirect"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R8).WithSymbol("redirect"),
		asm.Mov.Imm(asm.R2, 0),
		asm.JEq.Imm(asm.R9, int32(KindContainer), "peer"),
		asm.FnRedirect.Call(),
		asm.Return(),
		// Into the container's namespace, past its veth's queue.
		asm.FnRedirectPeer.Call().WithSymbol("peer"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	)
	return p
}
