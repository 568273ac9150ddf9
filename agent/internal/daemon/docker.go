package daemon

import (
	"context"
	"fmt"

	"github.com/petrel-net/petrel/agent/internal/libnetwork"
)

// startDocker serves the Docker NetworkDriver and IpamDriver named petrel
// when --docker-plugin is set. It returns once the root namespace is safe
// (unreachable routes for the pools, forward rules) and the socket serves.
func (d *Daemon) startDocker(ctx context.Context) error {
	dc := d.cfg.Docker
	if !dc.Plugin {
		return nil
	}
	log := d.log.With("component", "docker")
	opts := []libnetwork.Option{libnetwork.WithLogger(log)}
	if dc.EngineSocket != "-" {
		opts = append(opts, libnetwork.WithDocker(libnetwork.NewDockerClient(dc.EngineSocket)))
	}
	p := libnetwork.New(libnetwork.Config{SocketDir: dc.PluginDir, RemoveOnShutdown: dc.RemoveOnShutdown},
		d.cfg.Hostname, d.ipam, d.dp, libnetwork.NewEtcdStore(d.etcd), opts...)
	ready := make(chan struct{})
	failed := make(chan error, 1)
	d.goBG("docker plugin", func(ctx context.Context) error {
		err := p.Run(ctx, func() { close(ready) })
		failed <- err
		return err
	})
	select {
	case <-ready:
		log.Info("docker plugin ready", "socket", p.SocketPath())
		return nil
	case err := <-failed:
		return fmt.Errorf("docker plugin: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}
