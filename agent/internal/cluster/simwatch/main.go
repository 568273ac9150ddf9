// Command simwatch is a benchmark helper: "watch" runs simulated agents
// (each with its own etcd client, the real cluster watch loop and the real
// routes reconciler over a fake kernel) and "load" writes the records of
// simulated hosts. The multi-host benchmarks run it; it is not shipped.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-net/petrel/agent/internal/cluster"
	"github.com/petrel-net/petrel/agent/internal/routes"
	"github.com/petrel-net/petrel/agent/registry"
)

// The simulated agents take the real agent's path: incremental passes.
var _ cluster.IncrementalReconciler = (*routes.Reconciler)(nil)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: simwatch watch|load [flags]")
		return 2
	}
	fs := flag.NewFlagSet("simwatch "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("etcd-endpoints", "", "comma-separated etcd client URLs")
	count := fs.Int("count", 100, "watch: number of simulated agents")
	hosts := fs.Int("hosts", 1000, "load: number of simulated hosts")
	borrowed := fs.Int("borrowed", 2000, "load: number of borrowed addresses")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	newClient := func() (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	}
	var err error
	switch args[0] {
	case "watch":
		err = watch(ctx, newClient, *count, stdin, stdout)
	case "load":
		err = load(ctx, newClient, *hosts, *borrowed, stdout)
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(stderr, "simwatch:", err)
		return 1
	}
	return 0
}

// watch runs n simulated agents until ctx ends or stdin closes. It prints
// "ready" once all of them have published an applied revision.
func watch(ctx context.Context, newClient func() (*clientv3.Client, error), n int, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, stdin); cancel() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	var names []string
	for i := range n {
		name := fmt.Sprintf("sim%03d", i)
		names = append(names, name)
		h := routes.SimHost(name, fmt.Sprintf("10.99.%d.%d", 1+i/250, i%250+1), "10.99.0.0/16")
		r, err := routes.NewFake(routes.NewFakeOps(), routes.Config{Host: h})
		if err != nil {
			return err
		}
		cli, err := newClient()
		if err != nil {
			return err
		}
		defer cli.Close()
		c, err := cluster.New(cli, h, cluster.WithReconciler(r), cluster.WithLeaseTTL(30*time.Second))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	cli, err := newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, registry.AppliedPrefix+"sim", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == int64(n) {
			fmt.Fprintln(stdout, "ready")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	<-ctx.Done()
	return nil
}

// load writes the records of the simulated cluster and prints the revision.
func load(ctx context.Context, newClient func() (*clientv3.Client, error), hosts, borrowed int, stdout io.Writer) error {
	cli, err := newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	s, _ := routes.SimulatedCluster(hosts, borrowed)
	var ops []clientv3.Op
	var rev int64
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("write records: %w", err)
		}
		rev = resp.Header.Revision
		ops = ops[:0]
		return nil
	}
	put := func(k string, v []byte) error {
		ops = append(ops, clientv3.OpPut(k, string(v)))
		if len(ops) == 100 {
			return flush()
		}
		return nil
	}
	for n, h := range s.Hosts {
		if n == "self" {
			continue
		}
		v, err := registry.EncodeHost(h)
		if err != nil {
			return err
		}
		if err := put(registry.HostKey(n), v); err != nil {
			return err
		}
	}
	for _, b := range s.Blocks {
		v, _ := registry.EncodeJSON(b)
		if err := put(registry.BlockKey(b.Pool, b.CIDR), v); err != nil {
			return err
		}
	}
	for _, a := range s.Allocations {
		v, _ := registry.EncodeJSON(a)
		if err := put(registry.IPKey(a.Pool, a.IP), v); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, rev)
	return nil
}
