package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/petrel-net/petrel/agent/registry"
)

// TableName is the name of Petrel's table (family inet).
const TableName = "petrel"

// ErrUnsupported is returned by New on systems without nftables.
var ErrUnsupported = errors.New("policy: nftables is not supported on this system")

// kernel reads and writes Petrel's table. The real one speaks nftables over
// netlink (nft_linux.go); fakeKernel (fake_test.go) keeps a state in memory.
type kernel interface {
	// read returns the table's current content; Table is false when the
	// table does not exist.
	read(ctx context.Context) (state, error)
	// apply executes a plan in one atomic batch.
	apply(ctx context.Context, p plan) error
	// generation returns the namespace's ruleset generation: unchanged
	// means no batch was committed since it was last read.
	generation(ctx context.Context) (uint32, error)
	// drops sums the packet counters of the table's drop rules.
	drops(ctx context.Context) (Drops, error)
	close() error
}

// Drops counts the packets Petrel's rules dropped.
type Drops struct {
	// Policy counts packets dropped because no group admitted them.
	Policy uint64
	// Spoofed counts packets dropped by anti-spoofing.
	Spoofed uint64
}

// Stats describes the last reconcile.
type Stats struct {
	// Changed reports whether the last reconcile changed the kernel.
	Changed bool
	// Sets, Elements and Rules count the objects of the desired table.
	Sets, Elements, Rules int
}

// Policy reconciles one host's netgroup rules with the registry.
type Policy struct {
	host string
	def  Default
	k    kernel

	mu    sync.Mutex
	stats Stats
	// cache is the table as of generation cacheGen, when cacheOK. It
	// spares reading every set back when nothing else changed the
	// namespace's ruleset since our last batch.
	cache    state
	cacheGen uint32
	cacheOK  bool
	// model is the desired table of the last successful reconcile with its
	// per-endpoint index (nil: rebuild it from the snapshot next time).
	model *model
}

// Option configures New.
type Option func(*options)

type options struct {
	netns string
	def   Default
	table string
}

// WithNetNS makes the policy act inside the network namespace at path (for
// example /run/netns/x or /proc/<pid>/ns/net) instead of the caller's.
func WithNetNS(path string) Option { return func(o *options) { o.netns = path } }

// WithDefault sets what a group-less container admits (DefaultOpen if unset).
func WithDefault(d Default) Option { return func(o *options) { o.def = d } }

// New returns the policy of host, whose name matches Endpoint.host in the
// registry. Close releases the netlink handle.
func New(host string, opts ...Option) (*Policy, error) {
	o := options{table: TableName}
	for _, opt := range opts {
		opt(&o)
	}
	k, err := newNFTKernel(o.netns, o.table)
	if err != nil {
		return nil, err
	}
	return newWithDeps(host, o.def, k), nil
}

func newWithDeps(host string, def Default, k kernel) *Policy {
	return &Policy{host: host, def: def, k: k}
}

// readLocked returns the kernel's table: the cached copy when the ruleset
// generation has not moved since our last batch, else a full read-back.
func (p *Policy) readLocked(ctx context.Context) (state, error) {
	gen, err := p.k.generation(ctx)
	if err == nil && p.cacheOK && gen == p.cacheGen {
		return p.cache, nil
	}
	p.cacheOK = false
	actual, err := p.k.read(ctx)
	if err != nil {
		return actual, err
	}
	if gen2, err := p.k.generation(ctx); err == nil && gen2 == gen {
		p.cache, p.cacheGen, p.cacheOK = actual, gen, true
	}
	return actual, nil
}

// Remove deletes Petrel's table (every rule, set and map), for an operator
// who turns policy off or a test that must leave the namespace as it found
// it. Containers are then unfiltered.
func (p *Policy) Remove(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cacheOK = false
	p.model = nil
	st, err := p.k.read(ctx)
	if err != nil {
		return fmt.Errorf("policy: read table %s: %w", TableName, err)
	}
	if !st.Table {
		return nil
	}
	if err := p.k.apply(ctx, plan{DelTable: true}); err != nil {
		return fmt.Errorf("policy: delete table %s: %w", TableName, err)
	}
	return nil
}

// Close releases the policy's kernel handle. The table stays in place.
func (p *Policy) Close() error { return p.k.close() }

// Drops reads the drop counters from the kernel.
func (p *Policy) Drops(ctx context.Context) (Drops, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, err := p.k.drops(ctx)
	if err != nil {
		return d, fmt.Errorf("policy: read counters: %w", err)
	}
	return d, nil
}

// Stats returns figures about the last reconcile.
func (p *Policy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Reconcile makes the kernel's table match the snapshot: it computes the
// desired table from every endpoint, diffs it against the kernel's (read
// back unless the ruleset generation shows it unchanged since our last
// batch) and applies the difference in one batch. It is safe to call
// repeatedly; an unchanged snapshot changes nothing.
func (p *Policy) Reconcile(ctx context.Context, s *registry.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reconcileLocked(ctx, s)
}

// ReconcileChanged is Reconcile for a snapshot that differs from the one of
// the previous call only in the endpoints under the registry keys in changed
// (puts and deletes; keys of other kinds are ignored). It updates the last
// desired table for just those endpoints and applies the difference, so its
// cost follows the change, not the number of endpoints. It does what
// Reconcile does when there is no previous table (first call, after an
// error) or when the ruleset generation moved since our last batch (someone
// else changed the namespace's rules). The cluster watch loop calls it after
// each batch of changes, and Reconcile after every (re)list and resync tick.
func (p *Policy) ReconcileChanged(ctx context.Context, s *registry.Snapshot, changed []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.model == nil || !p.cacheOK {
		return p.reconcileLocked(ctx, s)
	}
	if !slices.ContainsFunc(changed, func(k string) bool { return strings.HasPrefix(k, registry.EndpointsPrefix) }) {
		p.stats.Changed = false
		return nil
	}
	if gen, err := p.k.generation(ctx); err != nil || gen != p.cacheGen {
		return p.reconcileLocked(ctx, s)
	}
	pl := p.model.update(s, changed)
	st := statsOf(p.model.want)
	if pl.empty() {
		p.stats = st
		return nil
	}
	p.cacheOK = false
	if err := p.k.apply(ctx, pl); err != nil {
		p.model = nil
		return fmt.Errorf("policy: apply to table %s: %w", TableName, err)
	}
	st.Changed = true
	p.stats = st
	if gen, err := p.k.generation(ctx); err == nil {
		p.cache, p.cacheGen, p.cacheOK = p.model.want, gen, true
	}
	return nil
}

func statsOf(want state) Stats {
	st := Stats{Sets: len(want.Sets), Rules: ruleCount(want)}
	for _, e := range want.Elems {
		st.Elements += len(e)
	}
	return st
}

func (p *Policy) reconcileLocked(ctx context.Context, s *registry.Snapshot) error {
	p.model = nil
	want := desired(s, p.host, p.def)
	st := statsOf(want)
	// A second round only happens after a table of an unknown shape was
	// deleted (see diff).
	for range 2 {
		actual, err := p.readLocked(ctx)
		if err != nil {
			return fmt.Errorf("policy: read table %s: %w", TableName, err)
		}
		pl := diff(want, actual)
		if pl.empty() {
			p.stats = st
			p.model = newModel(s, p.host, p.def, want)
			return nil
		}
		p.cacheOK = false
		if err := p.k.apply(ctx, pl); err != nil {
			return fmt.Errorf("policy: apply to table %s: %w", TableName, err)
		}
		st.Changed = true
		if !pl.DelTable {
			p.stats = st
			p.model = newModel(s, p.host, p.def, want)
			// The kernel now holds want. Remember it with the generation
			// our batch produced; a later change by anyone else bumps it.
			if gen, err := p.k.generation(ctx); err == nil {
				p.cache, p.cacheGen, p.cacheOK = want, gen, true
			}
			return nil
		}
	}
	return fmt.Errorf("policy: table %s did not converge", TableName)
}
