package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/internal/cluster"
	"github.com/petrel-net/petrel/agent/internal/policy"
	petrelv1 "github.com/petrel-net/petrel/proto/petrel/v1"
)

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("policyagent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	etcd := fs.String("etcd", "", "etcd client URL")
	host := fs.String("host", "", "this host's name in the registry")
	addr := fs.String("address", "", "this host's underlay address")
	netns := fs.String("netns", "", "host network namespace path")
	def := fs.String("policy-default", "open", "what a group-less container admits: open or closed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	d, ok := policy.ParseDefault(*def)
	if !ok || *etcd == "" || *host == "" {
		fmt.Fprintln(stderr, "policyagent: need -etcd, -host and -policy-default open|closed")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "policyagent", "host", *host)
	pol, err := policy.New(*host, policy.WithNetNS(*netns), policy.WithDefault(d))
	if err != nil {
		log.Error("policy", "err", err)
		return 1
	}
	defer pol.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Error("etcd", "err", err)
		return 1
	}
	defer cli.Close()
	c, err := cluster.New(cli, &petrelv1.Host{Name: *host, Address: *addr},
		cluster.WithReconciler(pol), cluster.WithLeaseTTL(5*time.Second),
		cluster.WithErrorHandler(func(what string, err error) { log.Warn(what, "err", err) }))
	if err != nil {
		log.Error("cluster", "err", err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return 1
	}
	return 0
}
