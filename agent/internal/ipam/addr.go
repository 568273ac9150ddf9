package ipam

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/bits"
	"net/netip"
)

// u128 is an address as a 128-bit integer (IPv4 as its mapped IPv6 form), so
// block arithmetic is the same for both families and never enumerates a pool.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(is4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	a := netip.AddrFrom16(b)
	if is4 {
		return a.Unmap()
	}
	return a
}

func (u u128) add(v u128) u128 {
	lo, c := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, c)
	return u128{hi, lo}
}

// shl returns x << n as a u128, for n < 128.
func shl(x uint64, n int) u128 {
	switch {
	case n == 0:
		return u128{0, x}
	case n >= 64:
		return u128{x << (n - 64), 0}
	default:
		return u128{x >> (64 - n), x << n}
	}
}

// pow2 returns 2^n capped at MaxUint64.
func pow2(n int) uint64 {
	if n >= 64 {
		return math.MaxUint64
	}
	return 1 << n
}

// geometry holds the block arithmetic of one pool.
type geometry struct {
	prefix    netip.Prefix
	blockSize int // prefix length of a block
	is4       bool
}

func newGeometry(p netip.Prefix, blockSize int) geometry {
	return geometry{prefix: p, blockSize: blockSize, is4: p.Addr().Is4()}
}

// hostBits is the number of address bits inside a block.
func (g geometry) hostBits() int { return g.prefix.Addr().BitLen() - g.blockSize }

// blockCap is the number of addresses in a block (at most 2^12 by validation).
func (g geometry) blockCap() uint64 { return pow2(g.hostBits()) }

// capacity is the number of addresses in the pool, capped at MaxUint64.
func (g geometry) capacity() uint64 { return pow2(g.prefix.Addr().BitLen() - g.prefix.Bits()) }

// indexBits is log2 of the number of blocks we ever index, capped at 62 so
// that huge IPv6 pools still work (only their first 2^62 blocks are used).
func (g geometry) indexBits() int { return min(g.blockSize-g.prefix.Bits(), 62) }

// numBlocks is the number of indexable blocks.
func (g geometry) numBlocks() uint64 { return uint64(1) << g.indexBits() }

// block returns the i-th block of the pool.
func (g geometry) block(i uint64) netip.Prefix {
	start := toU128(g.prefix.Addr()).add(shl(i, g.hostBits()))
	return netip.PrefixFrom(start.addr(g.is4), g.blockSize)
}

// blockOf returns the block holding ip.
func (g geometry) blockOf(ip netip.Addr) netip.Prefix {
	p, _ := ip.Prefix(g.blockSize)
	return p
}

// nth returns the j-th address of block b.
func (g geometry) nth(b netip.Prefix, j uint64) netip.Addr {
	return toU128(b.Addr()).add(u128{0, j}).addr(g.is4)
}

// offset returns the position of ip inside its block.
func (g geometry) offset(ip netip.Addr) uint64 {
	return toU128(ip).lo & (g.blockCap() - 1)
}

// startIndex spreads hosts over the pool: each host starts its search for a
// free block at a hash of its name, so two hosts claiming at once diverge
// instead of fighting over the same block, and retries stay deterministic.
func (g geometry) startIndex(host, pool string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(host))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(pool))
	return h.Sum64() & (g.numBlocks() - 1)
}
