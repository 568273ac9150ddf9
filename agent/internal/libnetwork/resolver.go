package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/petrel-net/petrel/agent/registry"
)

// DockerEvent is one message of the Docker events stream.
type DockerEvent struct {
	Type   string
	Action string
	Actor  struct {
		ID         string
		Attributes map[string]string
	}
}

// DockerNetwork is the part of GET /networks/{id} the resolver reads.
type DockerNetwork struct {
	ID         string
	Name       string
	Driver     string
	Labels     map[string]string
	Containers map[string]struct {
		Name       string
		EndpointID string
	}
}

// DockerContainer is the part of GET /containers/{id}/json the resolver reads.
type DockerContainer struct {
	ID     string
	Name   string
	Config struct {
		Hostname string
		Labels   map[string]string
	}
}

// DockerAPI is the Docker Engine API the resolver uses.
type DockerAPI interface {
	// Events calls fn for every network event until ctx ends or the stream
	// breaks. connected is called once the stream is open.
	Events(ctx context.Context, connected func(), fn func(DockerEvent)) error
	// Network inspects a network; a missing network is ErrDockerNotFound.
	Network(ctx context.Context, id string) (*DockerNetwork, error)
	// Container inspects a container; a missing one is ErrDockerNotFound.
	Container(ctx context.Context, id string) (*DockerContainer, error)
}

// ErrDockerNotFound is a 404 from the Docker API.
var ErrDockerNotFound = errors.New("libnetwork: docker object not found")

// labelNetgroups is the network label (--label petrel.netgroups=a,b) that adds
// netgroups to a network's endpoints.
const labelNetgroups = "petrel.netgroups"

// resolver copies names and labels from the Docker API onto Petrel records,
// always off the request path: a plugin request only drops a hint in a
// buffered channel and never waits.
type resolver struct {
	p           *Plugin
	host        string
	docker      DockerAPI
	endpointKey func(endpointID string) string
	hints       chan string
	// synced is signalled after each full sync (tests wait on it).
	synced chan struct{}
	retry  time.Duration
}

func newResolver(p *Plugin, host string) *resolver {
	r := &resolver{
		p:      p,
		host:   host,
		hints:  make(chan string, 256),
		synced: make(chan struct{}, 1),
		retry:  time.Second,
	}
	r.endpointKey = func(id string) string { return registry.EndpointKey(host, id, endpointIfname) }
	return r
}

// notify hints that a network (and maybe an endpoint) changed. It never blocks.
func (r *resolver) notify(networkID, _ string) {
	select {
	case r.hints <- networkID:
	default: // the next full sync catches up
	}
}

// apiTimeout bounds one Docker API call.
const apiTimeout = 5 * time.Second

func (r *resolver) run(ctx context.Context) {
	if r.docker == nil {
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.hints:
			}
		}
	}
	events := make(chan DockerEvent, 256)
	connected := make(chan struct{}, 1)
	go r.stream(ctx, connected, events)
	for {
		select {
		case <-ctx.Done():
			return
		case <-connected:
			// (Re)connected: Docker may have restarted, so re-check the
			// forward rules, then catch up on everything missed.
			_ = r.p.hostNet.EnsureForwarding(ctx)
			r.syncAll(ctx)
			select {
			case r.synced <- struct{}{}:
			default:
			}
		case ev := <-events:
			if ev.Type == "network" && (ev.Action == "connect" || ev.Action == "create") {
				_ = r.syncNetwork(ctx, ev.Actor.ID)
			}
		case nid := <-r.hints:
			_ = r.syncNetwork(ctx, nid)
		}
	}
}

// stream keeps the events stream open, reconnecting with backoff.
func (r *resolver) stream(ctx context.Context, connected chan<- struct{}, events chan<- DockerEvent) {
	backoff := r.retry
	for ctx.Err() == nil {
		err := r.docker.Events(ctx, func() {
			backoff = r.retry
			select {
			case connected <- struct{}{}:
			default:
			}
		}, func(ev DockerEvent) {
			select {
			case events <- ev:
			case <-ctx.Done():
			}
		})
		_ = err // the stream ends when Docker stops; retry below
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// syncAll enriches every network this host has bound.
func (r *resolver) syncAll(ctx context.Context) {
	kvs, err := r.p.store.List(ctx, registry.DockerNetworksPrefix)
	if err != nil {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(kvs)) {
		_ = r.syncNetwork(ctx, strings.TrimPrefix(k, registry.DockerNetworksPrefix))
	}
}

// syncNetwork copies a network's name and labels onto its binding and the
// container names and labels onto the records of its endpoints.
func (r *resolver) syncNetwork(ctx context.Context, networkID string) error {
	if networkID == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	n, err := r.docker.Network(cctx, networkID)
	cancel()
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", networkID, err)
	}
	if n.Driver != "" && n.Driver != DriverName {
		return nil
	}
	var netgroups []string
	for _, g := range strings.Split(n.Labels[labelNetgroups], ",") {
		if g = strings.TrimSpace(g); g != "" {
			netgroups = append(netgroups, g)
		}
	}
	var b *Binding
	err = r.p.store.Update(ctx, registry.DockerNetworksPrefix+networkID, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, nil
		}
		cur := &Binding{}
		if err := json.Unmarshal(old, cur); err != nil {
			return nil, err
		}
		b = cur
		if cur.Name == n.Name && maps.Equal(cur.Labels, n.Labels) {
			return nil, nil
		}
		cur.Name, cur.Labels = n.Name, n.Labels
		for _, g := range netgroups {
			if !slices.Contains(cur.Netgroups, g) {
				cur.Netgroups = append(cur.Netgroups, g)
			}
		}
		return json.Marshal(cur)
	})
	if err != nil {
		return fmt.Errorf("network %s: update binding: %w", networkID, err)
	}
	if b == nil {
		return nil // not a network this agent bound
	}
	r.p.mu.Lock()
	r.p.networks[networkID] = b
	r.p.mu.Unlock()
	var errs []error
	for cid, c := range n.Containers {
		if c.EndpointID == "" {
			continue
		}
		if err := r.syncEndpoint(ctx, b, cid, c.EndpointID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// MesosContainerID returns the Mesos container ID in the name the Mesos
// Docker containerizer gives its containers ("mesos-<container id>" or
// "mesos-<agent id>.<container id>"), or "".
func MesosContainerID(name string) string {
	rest, ok := strings.CutPrefix(strings.TrimPrefix(name, "/"), "mesos-")
	if !ok || rest == "" {
		return ""
	}
	if i := strings.LastIndexByte(rest, '.'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest
}

func (r *resolver) syncEndpoint(ctx context.Context, b *Binding, containerID, endpointID string) error {
	key := r.endpointKey(endpointID)
	if ep, ok, _ := r.p.lookupEndpoint(ctx, endpointID); ok {
		r.p.mu.Lock()
		if ep.recordKey != "" {
			key = ep.recordKey
		}
		r.p.mu.Unlock()
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	c, err := r.docker.Container(cctx, containerID)
	cancel()
	if err != nil {
		return fmt.Errorf("inspect container %s: %w", containerID, err)
	}
	name := strings.TrimPrefix(c.Name, "/")
	return r.p.store.Update(ctx, key, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, nil // not joined here (yet)
		}
		ep, err := registry.DecodeEndpoint(old)
		if err != nil {
			return nil, err
		}
		before, err := registry.EncodeEndpoint(ep)
		if err != nil {
			return nil, err
		}
		ep.ContainerName = name
		ep.DockerContainerId = c.ID
		if ep.DockerContainerId == "" {
			ep.DockerContainerId = containerID
		}
		ep.NetworkName = b.Name
		ep.Hostname = c.Config.Hostname
		ep.MesosContainerId = MesosContainerID(name)
		if len(c.Config.Labels) > 0 {
			ep.Labels = maps.Clone(c.Config.Labels)
		}
		for _, g := range b.Netgroups {
			if !slices.Contains(ep.Netgroups, g) {
				ep.Netgroups = append(ep.Netgroups, g)
			}
		}
		after, err := registry.EncodeEndpoint(ep)
		if err != nil || string(after) == string(before) {
			return nil, err
		}
		return after, nil
	})
}
