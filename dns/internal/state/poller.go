package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/mesos/mesos-go/api/v1/lib/recordio"
)

// Fetcher is what the poller needs from a Client.
type Fetcher interface {
	Fetch(ctx context.Context) (*State, error)
	Leader() string
	Subscribe(ctx context.Context, hostport string) (io.ReadCloser, error)
}

var _ Fetcher = (*Client)(nil)

// Poller reads the state every Interval and whenever the SUBSCRIBE stream
// reports a task, agent or framework change.
type Poller struct {
	Fetcher  Fetcher
	Interval time.Duration
	// OnState receives every successfully fetched state, with the fetch time.
	OnState func(st *State, took time.Duration)
	// OnError receives fetch and stream errors.
	OnError func(err error)
	// Subscribe enables the SUBSCRIBE stream.
	Subscribe bool
	// OnStreamError receives SUBSCRIBE stream errors (may be nil; masters
	// without the v1 API fail here on every retry).
	OnStreamError func(err error)
	// OnEvent is told about each stream event type (for metrics), may be nil.
	OnEvent func(typ string)

	trigger chan struct{}
}

// Run polls until ctx ends.
func (p *Poller) Run(ctx context.Context) {
	p.trigger = make(chan struct{}, 1)
	leaderCh := make(chan string, 1)
	if p.Subscribe {
		go p.stream(ctx, leaderCh)
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	lastLeader := ""
	backoff := time.Duration(0)
	for {
		start := time.Now()
		st, err := p.Fetcher.Fetch(ctx)
		var retry <-chan time.Time
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.OnError(err)
			// Retry failed loads sooner than the refresh interval (1 s,
			// doubling), so a late master does not leave us unready.
			backoff = min(max(2*backoff, time.Second), p.Interval)
			retry = time.After(backoff)
		} else {
			backoff = 0
			p.OnState(st, time.Since(start))
			if l := p.Fetcher.Leader(); l != lastLeader {
				lastLeader = l
				select {
				case <-leaderCh:
				default:
				}
				leaderCh <- l
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-retry:
		case <-p.trigger:
		}
	}
}

// Trigger asks for an immediate refresh; requests coalesce.
func (p *Poller) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// stream follows the SUBSCRIBE stream of the current leader and triggers a
// refresh on every change event. Reconnects with a 1 s delay.
func (p *Poller) stream(ctx context.Context, leaderCh <-chan string) {
	leader := ""
	for {
		if leader == "" {
			select {
			case <-ctx.Done():
				return
			case leader = <-leaderCh:
			}
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := p.follow(sctx, leader); err != nil && sctx.Err() == nil && p.OnStreamError != nil {
				p.OnStreamError(err)
			}
		}()
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return
		case leader = <-leaderCh:
			cancel()
			<-done
		case <-done:
			cancel()
			select {
			case <-ctx.Done():
				return
			case leader = <-leaderCh:
			case <-time.After(time.Second):
			}
		}
	}
}

type eventHeader struct {
	Type eventType `json:"type"`
}

// eventType is the v1 master API's Event.Type. It decodes like the
// generated protobuf enum (a known name, or a number) without linking the
// whole generated Mesos API into the binary.
type eventType int32

// Event types that change what the master state holds (mesos/v1/master).
const (
	eventSubscribed       eventType = 1
	eventTaskAdded        eventType = 2
	eventTaskUpdated      eventType = 3
	eventAgentAdded       eventType = 4
	eventAgentRemoved     eventType = 5
	eventFrameworkAdded   eventType = 6
	eventFrameworkUpdated eventType = 7
	eventFrameworkRemoved eventType = 8
)

var eventTypeNames = [...]string{"UNKNOWN", "SUBSCRIBED", "TASK_ADDED", "TASK_UPDATED", "AGENT_ADDED",
	"AGENT_REMOVED", "FRAMEWORK_ADDED", "FRAMEWORK_UPDATED", "FRAMEWORK_REMOVED", "HEARTBEAT"}

func (t eventType) String() string {
	if t >= 0 && int(t) < len(eventTypeNames) {
		return eventTypeNames[t]
	}
	return strconv.Itoa(int(t))
}

func (t *eventType) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var name string
		if err := json.Unmarshal(b, &name); err != nil {
			return err
		}
		i := slices.Index(eventTypeNames[:], name)
		if i < 0 {
			return fmt.Errorf("unrecognized event type %q", name)
		}
		*t = eventType(i)
		return nil
	}
	var n int32
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("cannot unmarshal %#q into an event type", b)
	}
	*t = eventType(n)
	return nil
}

// streamIdle is how long the stream may stay silent; masters send a
// HEARTBEAT every 15 s.
const streamIdle = 60 * time.Second

func (p *Poller) follow(ctx context.Context, leader string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, err := p.Fetcher.Subscribe(ctx, leader)
	if err != nil {
		return err
	}
	defer body.Close()
	idle := time.AfterFunc(streamIdle, cancel)
	defer idle.Stop()
	r := recordio.NewReader(body, recordio.MaxMessageSize(256<<20))
	for {
		frame, err := r.ReadFrame()
		idle.Reset(streamIdle)
		if err != nil {
			return fmt.Errorf("subscribe stream %s: %w", leader, err)
		}
		var ev eventHeader
		if err := json.Unmarshal(frame, &ev); err != nil {
			return fmt.Errorf("subscribe stream %s: decode event: %w", leader, err)
		}
		if p.OnEvent != nil {
			p.OnEvent(ev.Type.String())
		}
		switch ev.Type {
		case eventSubscribed, eventTaskAdded, eventTaskUpdated, eventAgentAdded, eventAgentRemoved,
			eventFrameworkAdded, eventFrameworkUpdated, eventFrameworkRemoved:
			p.Trigger()
		}
	}
}
