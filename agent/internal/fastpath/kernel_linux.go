package fastpath

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Filter identity on every interface: Petrel's filter is the one at this
// priority and handle on the ingress hook, named FilterName.
const (
	// FilterName is the name tc shows for Petrel's filter.
	FilterName   = "petrel_fastpath"
	filterPrio   = 1
	filterHandle = 0x7e17
	// MaxEntries bounds the map: container veths, their addresses and the
	// other hosts' underlay addresses.
	MaxEntries = 65536
)

// New loads the program and its maps and returns the fast path of host,
// acting on the interfaces of the network namespace at netnsPath (empty: the
// caller's) with underlay as the underlay device. Close releases the handles.
func New(host, netnsPath, underlay string) (*FastPath, error) {
	k, err := newBPFKernel(netnsPath)
	if err != nil {
		return nil, err
	}
	return newWithDeps(host, underlay, k), nil
}

type bpfKernel struct {
	nsPath string
	h      *netlink.Handle
	ifs    *ebpf.Map
	stats  *ebpf.Map
	prog   *ebpf.Program
}

func handleAt(path string) (*netlink.Handle, error) {
	if path == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("fastpath: open netns %s: %w", path, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

func newBPFKernel(netnsPath string) (_ *bpfKernel, err error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	k := &bpfKernel{nsPath: netnsPath}
	defer func() {
		if err != nil {
			_ = k.close()
		}
	}()
	k.ifs, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "petrel_fp_ifs", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: MaxEntries,
		Flags: unix.BPF_F_NO_PREALLOC,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: create map: %w", ErrUnsupported, err)
	}
	k.stats, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "petrel_fp_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: create counters: %w", ErrUnsupported, err)
	}
	k.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "petrel_fastpath",
		Type:         ebpf.SchedCLS,
		Instructions: program(k.ifs.FD(), k.stats.FD()),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("%w: load program: %w", ErrUnsupported, err)
	}
	k.h, err = handleAt(netnsPath)
	if err != nil {
		return nil, err
	}
	return k, nil
}

func (k *bpfKernel) close() error {
	if k.h != nil {
		k.h.Close()
	}
	var errs []error
	if k.prog != nil {
		errs = append(errs, k.prog.Close())
	}
	if k.ifs != nil {
		errs = append(errs, k.ifs.Close())
	}
	if k.stats != nil {
		errs = append(errs, k.stats.Close())
	}
	return errors.Join(errs...)
}

func (k *bpfKernel) links(context.Context) (map[string]int, error) {
	ls, err := k.h.LinkList()
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(ls))
	for _, l := range ls {
		out[l.Attrs().Name] = l.Attrs().Index
	}
	return out, nil
}

func (k *bpfKernel) link(_ context.Context, name string) (int, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return 0, nil
		}
		return 0, err
	}
	return l.Attrs().Index, nil
}

func (k *bpfKernel) entries(context.Context) (map[Key]Kind, error) {
	out := map[Key]Kind{}
	var key Key
	var v Kind
	it := k.ifs.Iterate()
	for it.Next(&key, &v) {
		out[key] = v
	}
	return out, it.Err()
}

func (k *bpfKernel) put(_ context.Context, key Key, v Kind) error { return k.ifs.Put(key, v) }

func (k *bpfKernel) del(_ context.Context, key Key) error {
	if err := k.ifs.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

func (k *bpfKernel) attach(_ context.Context, ifindex int) error {
	return attachAt(k.h, ifindex, k.prog.FD())
}

// attachAt adds a clsact qdisc to the interface unless it has one, then
// puts the program on its ingress with direct action, replacing an older
// Petrel filter at the same place.
func attachAt(h *netlink.Handle, ifindex, fd int) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: filterHandle,
			Protocol: unix.ETH_P_ALL, Priority: filterPrio,
		},
		Fd: fd, Name: FilterName, DirectAction: true,
	}
	if err := h.FilterReplace(f); err != nil {
		return fmt.Errorf("replace filter: %w", err)
	}
	return nil
}

func (k *bpfKernel) counters(context.Context) (Counters, error) {
	var c Counters
	for i, dst := range map[uint32]*uint64{uint32(KindContainer): &c.ToContainer, uint32(KindUnderlay): &c.ToUnderlay} {
		var per []uint64
		if err := k.stats.Lookup(i, &per); err != nil {
			return c, err
		}
		for _, n := range per {
			*dst += n
		}
	}
	return c, nil
}

func (k *bpfKernel) subscribe(ctx context.Context) (<-chan string, error) {
	opts := netlink.LinkSubscribeOptions{}
	if k.nsPath != "" {
		ns, err := netns.GetFromPath(k.nsPath)
		if err != nil {
			return nil, fmt.Errorf("fastpath: open netns %s: %w", k.nsPath, err)
		}
		defer ns.Close()
		opts.Namespace = &ns
	}
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
		return nil, fmt.Errorf("fastpath: subscribe to links: %w", err)
	}
	names := make(chan string, 256)
	go func() {
		defer close(names)
		defer func() {
			close(done) // closes the socket
			for range updates {
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return // the subscription failed (say, ENOBUFS)
				}
				if u.Header.Type != unix.RTM_NEWLINK {
					continue
				}
				select {
				case names <- u.Attrs().Name:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return names, nil
}

// Remove takes Petrel's filter off every interface of the namespace at
// netnsPath, for an agent started without the fast path after one that had
// it (the filters would otherwise go on forwarding with a map nobody
// updates). It leaves the clsact qdiscs, which other tools may share. It
// reports how many filters it removed.
func Remove(netnsPath string) (int, error) {
	h, err := handleAt(netnsPath)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("fastpath: list links: %w", err)
	}
	n := 0
	var errs []error
	for _, l := range ls {
		fs, err := h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		if err != nil {
			// No clsact qdisc: nothing of ours.
			continue
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !strings.HasPrefix(bf.Name, FilterName) || bf.Priority != filterPrio {
				continue
			}
			if err := h.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("fastpath: remove filter on %s: %w", l.Attrs().Name, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}
