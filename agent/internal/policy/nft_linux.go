package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftKernel is the kernel implementation over netlink.
type nftKernel struct {
	conn  *nftables.Conn
	gen   *netlink.Conn // for NFT_MSG_GETGEN, which the library lacks
	netns *os.File      // nil: the caller's namespace
	table *nftables.Table
}

var _ kernel = (*nftKernel)(nil)

// sockBuf is the netlink socket buffer size: a batch for thousands of
// endpoints is far larger than the default buffer.
const sockBuf = 8 << 20

// elemChunk bounds the elements carried by one netlink message.
const elemChunk = 1024

func newNFTKernel(netnsPath, table string) (*nftKernel, error) {
	k := &nftKernel{table: &nftables.Table{Name: table, Family: nftables.TableFamilyINet}}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("policy: open netns %s: %w", netnsPath, err)
		}
		k.netns = f
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		_ = k.close()
		return nil, fmt.Errorf("policy: nftables connection: %w", err)
	}
	k.conn = c
	cfg := &netlink.Config{}
	if k.netns != nil {
		cfg.NetNS = int(k.netns.Fd())
	}
	if k.gen, err = netlink.Dial(unix.NETLINK_NETFILTER, cfg); err != nil {
		_ = k.close()
		return nil, fmt.Errorf("policy: netfilter netlink socket: %w", err)
	}
	return k, nil
}

// generation returns the namespace's nftables ruleset generation, which
// every committed batch (ours or anyone's) increments.
func (k *nftKernel) generation(ctx context.Context) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	msgs, err := k.gen.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("get ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("decode ruleset generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("get ruleset generation: no NFTA_GEN_ID in reply")
}

func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf))
	}); err != nil {
		return err
	}
	if serr != nil {
		// Without CAP_NET_ADMIN the forced sizes fail; fall back to the
		// capped ones.
		_ = c.SetWriteBuffer(sockBuf)
		_ = c.SetReadBuffer(sockBuf)
	}
	return nil
}

func (k *nftKernel) close() error {
	var errs []error
	if k.conn != nil {
		errs = append(errs, k.conn.CloseLasting())
	}
	if k.gen != nil {
		errs = append(errs, k.gen.Close())
	}
	if k.netns != nil {
		errs = append(errs, k.netns.Close())
	}
	return errors.Join(errs...)
}

// Set types.
var (
	typeIfAddr4 = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	typeIfAddr6 = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)
)

func keyType(k setKind) nftables.SetDatatype {
	switch k {
	case kindIfname:
		return nftables.TypeIFName
	case kindAddr4, kindVmap4:
		return nftables.TypeIPAddr
	case kindAddr6, kindVmap6:
		return nftables.TypeIP6Addr
	case kindIfAddr4:
		return typeIfAddr4
	case kindIfAddr6:
		return typeIfAddr6
	}
	return nftables.SetDatatype{}
}

// kindOf maps a kernel set back to its kind (0 when it is of no known kind).
func kindOf(s *nftables.Set) setKind {
	if s.IsMap && s.KeyType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic() {
		// google/nftables v0.3.0 decodes a verdict map's data type into
		// KeyType, losing the key type; fall back to the name (the element
		// keys are still checked when decoded).
		if k := kindFromName(s.Name); k.isMap() {
			return k
		}
		return 0
	}
	for _, k := range []setKind{kindIfname, kindAddr4, kindAddr6, kindIfAddr4, kindIfAddr6, kindVmap4, kindVmap6} {
		kt := keyType(k)
		if s.KeyType.GetNFTMagic() != kt.GetNFTMagic() || s.IsMap != k.isMap() {
			continue
		}
		if s.IsMap && s.DataType.GetNFTMagic() != nftables.TypeVerdict.GetNFTMagic() {
			continue
		}
		return k
	}
	return 0
}

func (k *nftKernel) read(ctx context.Context) (state, error) {
	if err := ctx.Err(); err != nil {
		return state{}, err
	}
	st := newState()
	tables, err := k.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == k.table.Name }) {
		return st, nil
	}
	st.Table = true
	sets, err := k.conn.GetSets(k.table)
	if err != nil {
		return st, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		kind := kindOf(s)
		st.Sets[s.Name] = kind
		st.Elems[s.Name] = map[string]string{}
		if kind == 0 {
			continue
		}
		els, err := k.conn.GetSetElements(s)
		if err != nil {
			return st, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		for _, e := range els {
			key, data, err := decodeElem(kind, e)
			if err != nil {
				return st, fmt.Errorf("set %s: %w", s.Name, err)
			}
			st.Elems[s.Name][key] = data
		}
	}
	chains, err := k.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != k.table.Name {
			continue
		}
		rules, err := k.conn.GetRules(k.table, c)
		if err != nil {
			return st, fmt.Errorf("list rules of chain %s: %w", c.Name, err)
		}
		st.Chains[c.Name] = rulesSig(rules)
	}
	return st, ctx.Err()
}

// rulesSig returns the fingerprint all rules of a chain carry, or "" when
// they disagree or the chain is empty.
func rulesSig(rules []*nftables.Rule) string {
	sig := ""
	for i, r := range rules {
		s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if i > 0 && s != sig {
			return ""
		}
		sig = s
	}
	return sig
}

// encodeKey turns an element key of a set kind into its kernel bytes.
func encodeKey(kind setKind, key string) ([]byte, error) {
	switch kind {
	case kindIfname:
		return ifnameBytes(key)
	case kindAddr4, kindAddr6, kindVmap4, kindVmap6:
		a, err := netip.ParseAddr(key)
		if err != nil || a.Is4() != (kind == kindAddr4 || kind == kindVmap4) {
			return nil, fmt.Errorf("bad address key %q", key)
		}
		return a.AsSlice(), nil
	case kindIfAddr4, kindIfAddr6:
		ifn, addr, ok := strings.Cut(key, " . ")
		a, err := netip.ParseAddr(addr)
		if !ok || err != nil || a.Is4() != (kind == kindIfAddr4) {
			return nil, fmt.Errorf("bad interface . address key %q", key)
		}
		b, err := ifnameBytes(ifn)
		if err != nil {
			return nil, err
		}
		return append(b, a.AsSlice()...), nil
	}
	return nil, fmt.Errorf("set kind %d has no key encoding", kind)
}

func ifnameBytes(name string) ([]byte, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("bad interface name %q", name)
	}
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b, nil
}

func decodeElem(kind setKind, e nftables.SetElement) (key, data string, err error) {
	switch kind {
	case kindIfname:
		key = strings.TrimRight(string(e.Key), "\x00")
	case kindAddr4, kindAddr6, kindVmap4, kindVmap6:
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok || a.Is4() != (kind == kindAddr4 || kind == kindVmap4) {
			return "", "", fmt.Errorf("bad address element %x", e.Key)
		}
		key = a.String()
	case kindIfAddr4, kindIfAddr6:
		if len(e.Key) <= unix.IFNAMSIZ {
			return "", "", fmt.Errorf("bad interface . address element %x", e.Key)
		}
		a, ok := netip.AddrFromSlice(e.Key[unix.IFNAMSIZ:])
		if !ok {
			return "", "", fmt.Errorf("bad interface . address element %x", e.Key)
		}
		key = strings.TrimRight(string(e.Key[:unix.IFNAMSIZ]), "\x00") + " . " + a.String()
	}
	if kind.isMap() {
		data, err = decodeVerdict(e.Val)
	}
	return key, data, err
}

// decodeVerdict parses the nested NFTA_DATA_VERDICT attributes the library
// leaves undecoded in SetElement.Val.
func decodeVerdict(b []byte) (string, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return "", fmt.Errorf("decode verdict: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return "", fmt.Errorf("decode verdict: %w", err)
	}
	switch expr.VerdictKind(code) {
	case expr.VerdictAccept:
		return verdictAcc, nil
	case expr.VerdictDrop:
		return "drop", nil
	case expr.VerdictJump:
		return jumpPrefix + chain, nil
	}
	return fmt.Sprintf("verdict %d %s", code, chain), nil
}

func encodeVerdict(data string) (*expr.Verdict, error) {
	switch {
	case data == verdictAcc:
		return &expr.Verdict{Kind: expr.VerdictAccept}, nil
	case data == "drop":
		return &expr.Verdict{Kind: expr.VerdictDrop}, nil
	case strings.HasPrefix(data, jumpPrefix):
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: strings.TrimPrefix(data, jumpPrefix)}, nil
	}
	return nil, fmt.Errorf("bad verdict %q", data)
}

func (k *nftKernel) apply(ctx context.Context, p plan) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := k.conn
	t := k.table
	if p.DelTable {
		c.DelTable(t)
		return c.Flush()
	}
	if p.AddTable {
		c.AddTable(t)
	}
	sets := map[string]*nftables.Set{}
	kinds := map[string]setKind{}
	for _, d := range p.AddSets {
		s := &nftables.Set{Table: t, Name: d.Name, KeyType: keyType(d.Kind)}
		switch d.Kind {
		case kindIfname:
			// Interface names are strings: host byte order, which is
			// also what lets nft(8) print them.
			s.KeyByteOrder = binaryutil.NativeEndian
		case kindIfAddr4, kindIfAddr6:
			s.Concatenation = true
		case kindVmap4, kindVmap6:
			s.IsMap = true
			s.DataType = nftables.TypeVerdict
		}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", d.Name, err)
		}
		sets[d.Name] = s
		kinds[d.Name] = d.Kind
	}
	setOf := func(name string) *nftables.Set {
		if s, ok := sets[name]; ok {
			return s
		}
		return &nftables.Set{Table: t, Name: name}
	}
	kindOfName := func(name string) setKind {
		if kd, ok := kinds[name]; ok {
			return kd
		}
		return kindFromName(name)
	}
	elemsOf := func(name string, es []elem) ([]nftables.SetElement, error) {
		kind := kindOfName(name)
		out := make([]nftables.SetElement, 0, len(es))
		for _, e := range es {
			key, err := encodeKey(kind, e.Key)
			if err != nil {
				return nil, fmt.Errorf("set %s: %w", name, err)
			}
			se := nftables.SetElement{Key: key}
			if kind.isMap() {
				if se.VerdictData, err = encodeVerdict(e.Data); err != nil {
					return nil, fmt.Errorf("set %s: %w", name, err)
				}
			}
			out = append(out, se)
		}
		return out, nil
	}
	for _, name := range sortedKeys(p.DelElems) {
		els, err := elemsOf(name, p.DelElems[name])
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(els, elemChunk) {
			if err := c.SetDeleteElements(setOf(name), chunk); err != nil {
				return fmt.Errorf("delete elements of set %s: %w", name, err)
			}
		}
	}
	for _, d := range p.AddChains {
		ch := chainObj(t, d)
		c.AddChain(ch)
		if err := k.addRules(ch, d.Spec, setOf); err != nil {
			return err
		}
	}
	for _, d := range p.Rewrite {
		ch := chainObj(t, d)
		c.FlushChain(ch)
		if err := k.addRules(ch, d.Spec, setOf); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(p.AddElems) {
		els, err := elemsOf(name, p.AddElems[name])
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(els, elemChunk) {
			if err := c.SetAddElements(setOf(name), chunk); err != nil {
				return fmt.Errorf("add elements to set %s: %w", name, err)
			}
		}
	}
	for _, name := range p.DelChains {
		ch := &nftables.Chain{Name: name, Table: t}
		c.FlushChain(ch)
		c.DelChain(ch)
	}
	for _, name := range p.DelSets {
		c.DelSet(&nftables.Set{Table: t, Name: name})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netlink batch: %w", err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// kindFromName recovers the kind of an existing set from its name.
func kindFromName(name string) setKind {
	switch {
	case name == setAll4 || strings.HasPrefix(name, "g4"):
		return kindAddr4
	case name == setAll6 || strings.HasPrefix(name, "g6"):
		return kindAddr6
	case name == setIfaces:
		return kindIfname
	case name == setOwn4:
		return kindIfAddr4
	case name == setOwn6:
		return kindIfAddr6
	case name == mapDst4:
		return kindVmap4
	case name == mapDst6:
		return kindVmap6
	}
	return 0
}

func chainObj(t *nftables.Table, d chainDef) *nftables.Chain {
	ch := &nftables.Chain{Name: d.Name, Table: t}
	accept := nftables.ChainPolicyAccept
	switch d.Spec.Kind {
	case chainKindFwd:
		ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, &accept
	case chainKindIn:
		ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, &accept
	}
	return ch
}

func (k *nftKernel) addRules(ch *nftables.Chain, spec chainSpec, setOf func(string) *nftables.Set) error {
	ud := userdata.AppendString(nil, userdata.TypeComment, spec.sig())
	for _, exprs := range renderRules(spec, setOf) {
		k.conn.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: exprs, UserData: ud})
	}
	return nil
}

// Expression helpers. Registers: 1 and 2 are the 16-byte registers; a
// concatenation of an interface name (16 bytes) and an address loads the
// name into 1 and the address into 2, which are contiguous.
func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func saddr(fam int, reg uint32) expr.Any {
	if fam == 6 {
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

func daddr(fam int, reg uint32) expr.Any {
	if fam == 6 {
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func lookup(s *nftables.Set, invert bool) expr.Any {
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}
}

var (
	accept = &expr.Verdict{Kind: expr.VerdictAccept}
	drop   = &expr.Verdict{Kind: expr.VerdictDrop}
)

func cat(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

// renderRules returns the expressions of each rule of a chain.
func renderRules(spec chainSpec, setOf func(string) *nftables.Set) [][]expr.Any {
	v4, v6 := nfproto(unix.NFPROTO_IPV4), nfproto(unix.NFPROTO_IPV6)
	switch spec.Kind {
	case chainKindSpoof:
		llMask := make([]byte, 16)
		llMask[0], llMask[1] = 0xff, 0xc0
		ll := make([]byte, 16)
		ll[0], ll[1] = 0xfe, 0x80
		spoof := func(fam int, proto []expr.Any, own string) []expr.Any {
			return cat(proto, []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				lookup(setOf(setIfaces), false),
				saddr(fam, 2),
				lookup(setOf(own), true),
				&expr.Counter{},
				drop,
			})
		}
		ret := &expr.Verdict{Kind: expr.VerdictReturn}
		return [][]expr.Any{
			// iifname @cifs iifname . ip saddr != @own4 counter drop
			spoof(4, v4, setOwn4),
			// ip6 saddr fe80::/10 return (neighbour discovery)
			cat(v6, []expr.Any{
				saddr(6, 1),
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: llMask, Xor: make([]byte, 16)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ll},
				ret,
			}),
			// ip6 saddr :: return (duplicate address detection)
			cat(v6, []expr.Any{saddr(6, 1), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 16)}, ret}),
			// iifname @cifs iifname . ip6 saddr != @own6 counter drop
			spoof(6, v6, setOwn6),
		}
	case chainKindFwd:
		return [][]expr.Any{
			// meta nfproto ipv4 ct state established,related accept: an
			// established IPv4 flow's every packet is source-checked by the
			// host veth's strict rp_filter, so only its first packet needs
			// the set lookups below.
			cat(v4, ctEstablished(), []expr.Any{accept}),
			// jump spoof
			{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainSpoof}},
			// ct state established,related accept (IPv6: after the check,
			// as IPv6 has no rp_filter)
			cat(ctEstablished(), []expr.Any{accept}),
			// ip saddr != @e4 accept (not a container: not policed)
			cat(v4, []expr.Any{saddr(4, 1), lookup(setOf(setAll4), true), accept}),
			cat(v6, []expr.Any{saddr(6, 1), lookup(setOf(setAll6), true), accept}),
			// ip daddr vmap @dst4
			cat(v4, []expr.Any{daddr(4, 1), vmap(setOf(mapDst4))}),
			cat(v6, []expr.Any{daddr(6, 1), vmap(setOf(mapDst6))}),
		}
	case chainKindIn:
		return [][]expr.Any{
			// meta nfproto ipv4 ct state established,related accept
			cat(v4, ctEstablished(), []expr.Any{accept}),
			// jump spoof
			{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainSpoof}},
		}
	case chainKindCombo4, chainKindCombo6:
		fam := 4
		if spec.Kind == chainKindCombo6 {
			fam = 6
		}
		var rules [][]expr.Any
		for _, g := range spec.Groups {
			rules = append(rules, []expr.Any{saddr(fam, 1), lookup(setOf(groupSet(fam, g)), false), accept})
		}
		return append(rules, []expr.Any{&expr.Counter{}, drop})
	}
	return nil
}

// ctEstablished matches ct state established,related.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func vmap(s *nftables.Set) expr.Any {
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, DestRegister: 0, IsDestRegSet: true}
}

func (k *nftKernel) drops(ctx context.Context) (Drops, error) {
	var d Drops
	if err := ctx.Err(); err != nil {
		return d, err
	}
	chains, err := k.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return d, fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != k.table.Name {
			continue
		}
		rules, err := k.conn.GetRules(k.table, c)
		if err != nil {
			return d, fmt.Errorf("list rules of chain %s: %w", c.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				ctr, ok := e.(*expr.Counter)
				if !ok {
					continue
				}
				if c.Name == chainSpoof {
					d.Spoofed += ctr.Packets
				} else {
					d.Policy += ctr.Packets
				}
			}
		}
	}
	return d, nil
}
