package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
	"github.com/petrel-net/petrel/proto/petrel/v1/petrelv1grpc"
)

type flags struct {
	n        int
	churn    time.Duration
	concs    string
	subjects string
	bin      string
	petreld  string
	etcdShm  bool
	gate     time.Duration
	out      string
	pdLog    string
	// inner only
	state, socket string
}

func (f *flags) bind(fs *flag.FlagSet) {
	fs.IntVar(&f.n, "n", 1000, "containers to fill per subject")
	fs.DurationVar(&f.churn, "churn", 10*time.Second, "duration of each churn run")
	fs.StringVar(&f.concs, "conc", "1,8", "churn concurrencies")
	fs.StringVar(&f.subjects, "subjects", "ptp,petrel,floor", "what to measure, in order: ptp, petrel, floor")
	fs.StringVar(&f.bin, "bin", "", "directory holding the CNI plugins ptp, host-local and petrel")
	fs.StringVar(&f.petreld, "petreld", "", "petreld binary (default: BIN/petreld)")
	fs.BoolVar(&f.etcdShm, "etcd-shm", false, "put petreld's data dir (embedded etcd) on tmpfs /dev/shm instead of disk")
	fs.DurationVar(&f.gate, "gate", 30*time.Second, "longest wait for a quiet machine before each subject")
	fs.StringVar(&f.out, "out", "", "write the results as JSON to this file")
	fs.StringVar(&f.pdLog, "petreld-log", "", "keep petreld's log, at debug level (one line per RPC with its duration), in this file")
	fs.StringVar(&f.state, "state", "", "internal: state directory")
	fs.StringVar(&f.socket, "socket", "", "internal: petreld socket")
}

func (f *flags) args() []string {
	return []string{"-n", strconv.Itoa(f.n), "-churn", f.churn.String(), "-conc", f.concs, "-subjects", f.subjects,
		"-bin", f.bin, "-gate", f.gate.String(), "-out", f.out, "-state", f.state, "-socket", f.socket}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	inner := len(args) > 0 && args[0] == "inner"
	if inner {
		args = args[1:]
	}
	var f flags
	fs := flag.NewFlagSet("cnibench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.bind(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "cnibench: needs root (it creates network namespaces)")
		return 2
	}
	if f.bin == "" {
		fmt.Fprintln(stderr, "cnibench: -bin is required")
		return 2
	}
	var err error
	if inner {
		err = runInner(ctx, f, stdout, stderr)
	} else {
		err = runOuter(ctx, f, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cnibench: %v\n", err)
		return 1
	}
	return 0
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// runOuter creates the host namespace and petreld, then measures from
// inside the namespace, then checks that nothing is left.
func runOuter(ctx context.Context, f flags, stdout, stderr io.Writer) (retErr error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	suffix := hex.EncodeToString(b)
	state, err := os.MkdirTemp("", "ptl-cnibench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	f.state = state
	dataDir := filepath.Join(state, "petreld")
	if f.etcdShm {
		dataDir = filepath.Join("/dev/shm", "ptl-cnibench-"+suffix)
		defer os.RemoveAll(dataDir)
	}
	hostNS := "ptl-cnibench-" + suffix
	if err := ipCmd("netns", "add", hostNS); err != nil {
		return err
	}
	defer func() {
		if err := ipCmd("netns", "del", hostNS); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	if err := ipCmd("-n", hostNS, "link", "set", "lo", "up"); err != nil {
		return err
	}

	petreld := f.petreld
	if petreld == "" {
		petreld = filepath.Join(f.bin, "petreld")
	}
	f.socket = filepath.Join(state, "petreld.sock")
	logPath, logLevel := filepath.Join(state, "petreld.log"), "warn"
	if f.pdLog != "" {
		logPath, logLevel = f.pdLog, "debug"
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	// petreld stays in the root mount namespace (not under `ip netns exec`,
	// which unshares one) so it sees the container namespaces the inner
	// process bind-mounts; its dataplane works in hostNS (--netns) and its
	// embedded etcd listens on 127.0.0.1.
	pd := exec.Command(petreld, "--netns", "/run/netns/"+hostNS, "--data-dir", dataDir, "--socket", f.socket,
		"--hostname", "bench", "--metrics-addr", "", "--log-level", logLevel)
	pd.Stdout, pd.Stderr = logf, logf
	if err := pd.Start(); err != nil {
		return fmt.Errorf("start petreld: %w", err)
	}
	defer func() {
		// Stop petreld by its PID.
		_ = pd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- pd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = pd.Process.Kill()
			<-done
		}
		if retErr != nil {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				fmt.Fprintf(stderr, "petreld log:\n%s\n", b)
			}
		}
	}()
	conn, err := grpc.NewClient("unix://"+f.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ipamc, dpc := petrelv1grpc.NewIPAMClient(conn), petrelv1grpc.NewDataplaneClient(conn)
	deadline := time.Now().Add(90 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := ipamc.ListPools(cctx, &petrelv1.ListPoolsRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("petreld not serving on %s: %w", f.socket, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // poll interval
		}
	}
	if _, err := ipamc.AddPool(ctx, &petrelv1.AddPoolRequest{Pool: &petrelv1.Pool{Name: "bench", Cidr: "10.248.0.0/16", BlockSize: 26}}); err != nil {
		return fmt.Errorf("add pool: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// nsenter joins only the network namespace, keeping the mount namespace
	// shared with petreld.
	in := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + hostNS, self, "inner"}, f.args()...)...)
	in.Stdout, in.Stderr = stdout, stderr
	if err := in.Run(); err != nil {
		return fmt.Errorf("measure: %w", err)
	}

	// Nothing may be left: links, routes, records, allocations.
	var leaks []string
	out, _ := exec.Command("ip", "-n", hostNS, "-o", "link", "show").CombinedOutput()
	if n := strings.Count(string(out), "ptl"); n > 0 {
		leaks = append(leaks, fmt.Sprintf("%d ptl* links", n))
	}
	out, _ = exec.Command("ip", "-n", hostNS, "-4", "route", "show", "proto", "112").CombinedOutput()
	if s := strings.TrimSpace(string(out)); s != "" {
		leaks = append(leaks, "routes: "+s)
	}
	if eps, err := dpc.ListEndpoints(ctx, &petrelv1.ListEndpointsRequest{Host: "*"}); err == nil && len(eps.GetEndpoints()) > 0 {
		leaks = append(leaks, fmt.Sprintf("%d endpoint records", len(eps.GetEndpoints())))
	}
	if al, err := ipamc.ListAllocations(ctx, &petrelv1.ListAllocationsRequest{}); err == nil && len(al.GetAllocations()) > 0 {
		leaks = append(leaks, fmt.Sprintf("%d allocations", len(al.GetAllocations())))
	}
	if len(leaks) > 0 {
		return fmt.Errorf("left behind after the run: %s", strings.Join(leaks, "; "))
	}
	fmt.Fprintln(stdout, "after the run: 0 petrel links, 0 routes, 0 endpoint records, 0 allocations")
	return nil
}

func runInner(ctx context.Context, f flags, stdout, stderr io.Writer) error {
	self, _ := os.Readlink("/proc/self/ns/net")
	root, _ := os.Readlink("/proc/1/ns/net")
	if self == root {
		return errors.New("refusing to measure in the root network namespace")
	}
	var concs []int
	for _, c := range strings.Split(f.concs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -conc %q", f.concs)
		}
		concs = append(concs, n)
	}
	nsDir := filepath.Join(f.state, "ns")
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	o := opts{n: f.n, churn: f.churn, concs: concs, gate: f.gate, nsDir: nsDir, progress: stderr}
	confs := cniConfigs(f.state, f.socket)
	var results []Result
	for _, name := range strings.Split(f.subjects, ",") {
		var s subject
		switch name {
		case "ptp":
			cs, err := newCNISubject("ptp+host-local", confs["ptp"], f.bin, filepath.Join(f.state, "cache-ptp"))
			if err != nil {
				return err
			}
			s = cs
		case "petrel":
			cs, err := newCNISubject("petrel", confs["petrel"], f.bin, filepath.Join(f.state, "cache-petrel"))
			if err != nil {
				return err
			}
			s = cs
		case "floor":
			fl, err := newFloor()
			if err != nil {
				return err
			}
			s = &floorSubject{f: fl}
		default:
			return fmt.Errorf("unknown subject %q", name)
		}
		r := measure(ctx, s, o)
		results = append(results, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	report(stdout, results)
	if f.out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(f.out, b, 0o644); err != nil {
			return err
		}
	}
	for _, r := range results {
		if r.FirstError != "" {
			return fmt.Errorf("%s: %d errors, first: %s", r.Subject, len(r.Errors), r.FirstError)
		}
	}
	return nil
}

func report(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "subject\tADD p50\tADD p99\tDEL p50\tDEL p99\tADD p50 live 0-99\tADD p50 last 100\tchurn c=1\tchurn c=8\tother load (ADD)\t")
	by := map[string]Result{}
	for _, r := range rs {
		by[r.Subject] = r
		ch := map[int]float64{}
		for _, c := range r.Churn {
			ch[c.Concurrency] = c.PairsPerSec
		}
		fmt.Fprintf(tw, "%s\t%.2f ms\t%.2f ms\t%.2f ms\t%.2f ms\t%.2f ms\t%.2f ms\t%.1f/s\t%.1f/s\t%.2f cores\t\n", r.Subject,
			r.Add.P50, r.Add.P99, r.Del.P50, r.Del.P99, r.AddP50Lo, r.AddP50Hi, ch[1], ch[8], r.AddOther)
	}
	_ = tw.Flush()
	p, okP := by["petrel"]
	b, okB := by["ptp+host-local"]
	if !okP || !okB || b.Add.P50 == 0 {
		return
	}
	churn := func(r Result, c int) float64 {
		for _, x := range r.Churn {
			if x.Concurrency == c {
				return x.PairsPerSec
			}
		}
		return 0
	}
	fmt.Fprintf(w, "\npetrel / ptp+host-local (same run, N=%d):\n", p.N)
	fmt.Fprintf(w, "  ADD p50 ratio      %.2fx  (target <= 0.5x)\n", p.Add.P50/b.Add.P50)
	fmt.Fprintf(w, "  DEL p50 ratio      %.2fx\n", p.Del.P50/b.Del.P50)
	if c := churn(b, 1); c > 0 {
		fmt.Fprintf(w, "  churn c=1 ratio    %.2fx\n", churn(p, 1)/c)
	}
	if c := churn(b, 8); c > 0 {
		fmt.Fprintf(w, "  churn c=8 ratio    %.2fx  (target >= 2x)\n", churn(p, 8)/c)
	}
	if p.AddP50Lo > 0 && b.AddP50Lo > 0 {
		fmt.Fprintf(w, "  flatness (last 100 / first 100 ADD p50): petrel %.2fx, ptp %.2fx  (target: flat, ~1x)\n",
			p.AddP50Hi/p.AddP50Lo, b.AddP50Hi/b.AddP50Lo)
	}
	if fl, ok := by["kernel floor"]; ok && fl.Add.P50 > 0 {
		fmt.Fprintf(w, "  petrel ADD p50 over the kernel floor: %.2f ms (floor %.2f ms)\n", p.Add.P50-fl.Add.P50, fl.Add.P50)
	}
}
