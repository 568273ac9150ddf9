package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-net/petrel/agent/registry"
)

// Defaults of the options.
const (
	DefaultOpTimeout    = 5 * time.Second
	DefaultMaxRetries   = 100
	DefaultPoolCacheTTL = 5 * time.Second
)

// IPAM allocates addresses for one host. It is safe for concurrent use; the
// writes of one IPAM are serialised so that they never conflict with each
// other, and conflicts with other hosts are resolved by etcd compares.
type IPAM struct {
	kv         clientv3.KV
	host       string
	now        func() time.Time
	opTimeout  time.Duration
	maxRetries int
	poolTTL    time.Duration

	// sem is a mutex that honours ctx. It guards everything below and
	// serialises this host's block writes.
	sem   chan struct{}
	qmu   sync.Mutex // guards queue only
	queue []*allocCall
	hmu   sync.Mutex // guards handles only
	// handles remembers what the handles this IPAM allocated hold, as of a
	// revision, so that releasing one needs no read (the release compares
	// that the handle gained nothing since). Released handles are dropped.
	handles   map[string]handleState
	pools     map[string]*poolState
	poolsRead time.Time
}

// poolState is the cached view of one pool.
type poolState struct {
	pool   Pool
	geo    geometry
	rev    int64 // ModRevision of the pool record
	loaded bool  // blocks holds every block record of the pool
	blocks map[netip.Prefix]*blockState
}

// blockState is the cached view of one block record.
type blockState struct {
	rec    registry.Block
	rev    int64 // ModRevision of the block record
	used   map[netip.Addr]bool
	cursor uint64 // next offset to try, so freed addresses are not reused at once
}

// Option configures an IPAM.
type Option func(*IPAM)

// WithClock sets the clock used for record timestamps and cache ages.
func WithClock(now func() time.Time) Option { return func(i *IPAM) { i.now = now } }

// WithMaxRetries bounds the attempts of one call after failed compares.
func WithMaxRetries(n int) Option { return func(i *IPAM) { i.maxRetries = max(n, 1) } }

// WithOpTimeout sets the deadline of each etcd call (default 5s). A call
// that misses it fails with ErrUnavailable.
func WithOpTimeout(d time.Duration) Option { return func(i *IPAM) { i.opTimeout = d } }

// WithPoolCacheTTL sets how long the list of pools is cached before it is
// read again (a miss always reads it again).
func WithPoolCacheTTL(d time.Duration) Option { return func(i *IPAM) { i.poolTTL = d } }

// New returns the IPAM of host over an etcd client.
func New(client *clientv3.Client, host string, opts ...Option) (*IPAM, error) {
	if client == nil {
		return nil, errors.New("ipam: nil etcd client")
	}
	return newWithKV(client.KV, host, opts...)
}

func newWithKV(kv clientv3.KV, host string, opts ...Option) (*IPAM, error) {
	if err := checkSegment("host", host); err != nil {
		return nil, err
	}
	i := &IPAM{
		kv:         kv,
		host:       host,
		now:        time.Now,
		opTimeout:  DefaultOpTimeout,
		maxRetries: DefaultMaxRetries,
		poolTTL:    DefaultPoolCacheTTL,
		sem:        make(chan struct{}, 1),
		pools:      map[string]*poolState{},
		handles:    map[string]handleState{},
	}
	for _, o := range opts {
		o(i)
	}
	return i, nil
}

// Host returns the host name the IPAM allocates for.
func (i *IPAM) Host() string { return i.host }

func (i *IPAM) lock(ctx context.Context) error {
	select {
	case i.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ipam: waiting for the host's allocation lock: %w", ctx.Err())
	}
}

func (i *IPAM) unlock() { <-i.sem }

// get reads with the per-operation deadline.
func (i *IPAM) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, i.opTimeout)
	defer cancel()
	r, err := i.kv.Get(ctx, key, opts...)
	if err != nil {
		return nil, fmt.Errorf("ipam: read %s: %w", key, etcdErr(err))
	}
	return r, nil
}

// txn commits one transaction with the per-operation deadline.
func (i *IPAM) txn(ctx context.Context, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, i.opTimeout)
	defer cancel()
	r, err := i.kv.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return nil, fmt.Errorf("ipam: transaction: %w", etcdErr(err))
	}
	return r, nil
}

// poolBlocksPrefix is the prefix of every block record of a pool.
func poolBlocksPrefix(pool string) string { return registry.BlockKey(pool, "") }

// poolIPsPrefix is the prefix of every allocation of a pool.
func poolIPsPrefix(pool string) string { return registry.IPKey(pool, "") }

func ipKey(pool string, ip netip.Addr) string { return registry.IPKey(pool, ip.String()) }

func blockKey(pool string, b netip.Prefix) string { return registry.BlockKey(pool, b.String()) }

func handleKey(handle string, ip netip.Addr) string { return registry.HandleKey(handle, ip.String()) }

// handleState is what a handle held at revision rev.
type handleState struct {
	have []held
	rev  int64
}

func (i *IPAM) rememberHandle(handle string, st handleState) {
	i.hmu.Lock()
	i.handles[handle] = st
	i.hmu.Unlock()
}

// takeHandle returns and forgets what a handle held.
func (i *IPAM) takeHandle(handle string) (handleState, bool) {
	i.hmu.Lock()
	defer i.hmu.Unlock()
	st, ok := i.handles[handle]
	delete(i.handles, handle)
	return st, ok
}

func (i *IPAM) forgetHandle(handle string) {
	i.hmu.Lock()
	delete(i.handles, handle)
	i.hmu.Unlock()
}
