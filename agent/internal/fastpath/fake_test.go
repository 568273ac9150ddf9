package fastpath

import (
	"context"
	"errors"
	"maps"
)

// fakeKernel keeps the map, the interfaces and the attachments in memory
// and counts the calls that change the kernel.
type fakeKernel struct {
	ifs      map[string]int
	m        map[Key]Kind
	attached map[int]int // ifindex -> times attached
	writes   int         // puts and dels
	lookups  int         // link calls
	fail     error
	// newLinks feeds subscribe; closing it ends the subscription.
	newLinks chan string
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{ifs: map[string]int{}, m: map[Key]Kind{}, attached: map[int]int{}}
}

func (k *fakeKernel) links(context.Context) (map[string]int, error) {
	return maps.Clone(k.ifs), k.fail
}

func (k *fakeKernel) link(_ context.Context, name string) (int, error) {
	k.lookups++
	return k.ifs[name], k.fail
}

func (k *fakeKernel) entries(context.Context) (map[Key]Kind, error) { return maps.Clone(k.m), k.fail }

func (k *fakeKernel) put(_ context.Context, key Key, v Kind) error {
	if k.fail != nil {
		return k.fail
	}
	k.writes++
	k.m[key] = v
	return nil
}

func (k *fakeKernel) del(_ context.Context, key Key) error {
	if k.fail != nil {
		return k.fail
	}
	k.writes++
	delete(k.m, key)
	return nil
}

func (k *fakeKernel) attach(_ context.Context, ifindex int) error {
	if k.fail != nil {
		return k.fail
	}
	k.attached[ifindex]++
	return nil
}

func (k *fakeKernel) subscribe(context.Context) (<-chan string, error) {
	if k.newLinks == nil {
		return nil, errors.New("no subscription in this test")
	}
	return k.newLinks, nil
}

func (k *fakeKernel) counters(context.Context) (Counters, error) { return Counters{}, k.fail }
func (k *fakeKernel) close() error                               { return nil }
