package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// subject is one thing measured: a CNI network (through libcni) or the
// kernel floor.
type subject interface {
	name() string
	add(ctx context.Context, id, nsPath string, i int) error
	del(ctx context.Context, id, nsPath string) error
}

type cniSubject struct {
	label string
	cni   *libcni.CNIConfig
	list  *libcni.NetworkConfigList
}

func (s *cniSubject) name() string { return s.label }

func (s *cniSubject) add(ctx context.Context, id, nsPath string, _ int) error {
	_, err := s.cni.AddNetworkList(ctx, s.list, &libcni.RuntimeConf{ContainerID: id, NetNS: nsPath, IfName: "eth0"})
	return err
}

func (s *cniSubject) del(ctx context.Context, id, nsPath string) error {
	return s.cni.DelNetworkList(ctx, s.list, &libcni.RuntimeConf{ContainerID: id, NetNS: nsPath, IfName: "eth0"})
}

type floorSubject struct {
	f  *floor
	mu sync.Mutex
	ip map[string]int
}

func (s *floorSubject) name() string { return "kernel floor" }

func floorHostName(id string) string { return "ptf" + fmt.Sprintf("%012x", fnv(id)) }

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h & 0xffffffffffff
}

func (s *floorSubject) add(_ context.Context, id, nsPath string, i int) error {
	ip := netip.AddrFrom4([4]byte{10, 247, byte(i >> 8), byte(i)})
	return s.f.add(nsPath, floorHostName(id), ip)
}

func (s *floorSubject) del(_ context.Context, id, _ string) error { return s.f.del(floorHostName(id)) }

// Churn is one churn measurement: ADD+DEL pairs into reused namespaces.
type Churn struct {
	Concurrency int
	Live        int
	Seconds     float64
	Pairs       int
	Errors      int
	PairsPerSec float64
	OtherCores  float64
	Add, Del    Stats
}

// Result is everything measured for one subject.
type Result struct {
	Subject    string
	N          int
	Gate       string
	Add        Stats
	AddP50Lo   float64 // live 0-99
	AddP50Hi   float64 // live N-100..N-1
	AddOther   float64
	Del        Stats
	DelOther   float64
	Churn      []Churn
	Errors     []string
	FirstError string
}

type opts struct {
	n        int
	churn    time.Duration
	concs    []int
	gate     time.Duration
	nsDir    string
	progress io.Writer
}

// measure fills o.n containers one by one (ADD latency), runs churn at each
// concurrency with o.n live, then drains them (DEL latency).
func measure(ctx context.Context, s subject, o opts) Result {
	r := Result{Subject: s.name(), N: o.n}
	logf := func(f string, a ...any) { fmt.Fprintf(o.progress, "[%s] "+f+"\n", append([]any{s.name()}, a...)...) }
	fail := func(f string, a ...any) {
		msg := fmt.Sprintf(f, a...)
		if r.FirstError == "" {
			r.FirstError = msg
		}
		if len(r.Errors) < 20 {
			r.Errors = append(r.Errors, msg)
		}
	}
	tag := fmt.Sprintf("%x", fnv(s.name()+time.Now().String()))[:6]
	paths := make([]string, o.n)
	for i := range paths {
		p, err := newNetns(o.nsDir, fmt.Sprintf("%s-%d", tag, i))
		if err != nil {
			fail("netns: %v", err)
			return r
		}
		paths[i] = p
	}
	defer func() {
		for _, p := range paths {
			if p != "" {
				_ = delNetns(p)
			}
		}
	}()
	r.Gate = quietGate(o.gate)
	logf("fill %d: %s", o.n, r.Gate)
	adds := make([]time.Duration, 0, o.n)
	added := make([]bool, o.n)
	c0, t0 := readCPU(), time.Now()
	for i := range o.n {
		if ctx.Err() != nil {
			break
		}
		t := time.Now()
		if err := s.add(ctx, fmt.Sprintf("%s-c%d", tag, i), paths[i], i+2); err != nil {
			fail("ADD %d: %v", i, err)
			continue
		}
		adds = append(adds, time.Since(t))
		added[i] = true
	}
	r.AddOther = otherCores(c0, readCPU(), time.Since(t0))
	r.Add = summarize(adds)
	if len(adds) >= 100 {
		r.AddP50Lo = summarize(adds[:100]).P50
		r.AddP50Hi = summarize(adds[len(adds)-100:]).P50
	}
	logf("ADD %v (p50 live 0-99 %.2fms, last 100 %.2fms; other load %.2f cores)", r.Add, r.AddP50Lo, r.AddP50Hi, r.AddOther)

	for _, c := range o.concs {
		if ctx.Err() != nil {
			break
		}
		ch := churn(ctx, s, o, tag, c, len(adds))
		r.Churn = append(r.Churn, ch)
		logf("churn c=%d live=%d: %.1f pairs/s (%d pairs, %d errors; ADD p50 %.2fms, DEL p50 %.2fms; other load %.2f cores)",
			c, ch.Live, ch.PairsPerSec, ch.Pairs, ch.Errors, ch.Add.P50, ch.Del.P50, ch.OtherCores)
	}

	dels := make([]time.Duration, 0, o.n)
	c0, t0 = readCPU(), time.Now()
	for i := o.n - 1; i >= 0; i-- {
		if !added[i] {
			continue
		}
		t := time.Now()
		if err := s.del(context.WithoutCancel(ctx), fmt.Sprintf("%s-c%d", tag, i), paths[i]); err != nil {
			fail("DEL %d: %v", i, err)
			continue
		}
		dels = append(dels, time.Since(t))
	}
	r.DelOther = otherCores(c0, readCPU(), time.Since(t0))
	r.Del = summarize(dels)
	logf("DEL %v (other load %.2f cores)", r.Del, r.DelOther)
	return r
}

func churn(ctx context.Context, s subject, o opts, tag string, conc, live int) Churn {
	res := Churn{Concurrency: conc, Live: live}
	pool := make([]string, conc)
	for w := range pool {
		p, err := newNetns(o.nsDir, fmt.Sprintf("%s-w%d-%d", tag, conc, w))
		if err != nil {
			res.Errors++
			return res
		}
		pool[w] = p
	}
	defer func() {
		for _, p := range pool {
			_ = delNetns(p)
		}
	}()
	var (
		mu         sync.Mutex
		adds, dels []time.Duration
		wg         sync.WaitGroup
	)
	c0, t0 := readCPU(), time.Now()
	deadline := t0.Add(o.churn)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var la, ld []time.Duration
			errs := 0
			for k := 0; time.Now().Before(deadline) && ctx.Err() == nil; k++ {
				id := fmt.Sprintf("%s-w%d-%d-%d", tag, conc, w, k)
				t := time.Now()
				if err := s.add(ctx, id, pool[w], 60000+w); err != nil {
					errs++
					_ = s.del(context.WithoutCancel(ctx), id, pool[w])
					continue
				}
				t1 := time.Now()
				if err := s.del(context.WithoutCancel(ctx), id, pool[w]); err != nil {
					errs++
					continue
				}
				la = append(la, t1.Sub(t))
				ld = append(ld, time.Since(t1))
			}
			mu.Lock()
			adds = append(adds, la...)
			dels = append(dels, ld...)
			res.Errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	res.Seconds = el.Seconds()
	res.Pairs = len(adds)
	res.PairsPerSec = float64(len(adds)) / el.Seconds()
	res.OtherCores = otherCores(c0, readCPU(), el)
	res.Add, res.Del = summarize(adds), summarize(dels)
	return res
}

// cniConfigs are the network configurations compared.
func cniConfigs(state, socket string) map[string][]byte {
	hl := filepath.Join(state, "host-local")
	return map[string][]byte{
		"ptp": []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"pb-ptp","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,`+
			`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.249.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`, hl)),
		"petrel": []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"pb-petrel","plugins":[{"type":"petrel","socket":%q,"pool":"bench"}]}`, socket)),
	}
}

func newCNISubject(label string, conf []byte, binDir, cacheDir string) (*cniSubject, error) {
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("%s config: %w", label, err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	return &cniSubject{label: label, cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, nil), list: list}, nil
}
