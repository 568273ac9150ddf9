package policy

import (
	"context"
	"fmt"
	"maps"
	"strings"
)

// fakeKernel keeps Petrel's table in memory and applies plans with the
// kernel's ordering rules: a batch is atomic, objects must exist before they
// are used, and nothing still referenced can be deleted.
type fakeKernel struct {
	st      state
	applies int
	reads   int
	gen     uint32
	failErr error
	last    plan // the last plan applied
}

func (f *fakeKernel) generation(context.Context) (uint32, error) { return f.gen, nil }

// tamper changes the table behind the policy's back, as another program
// would (bumping the generation).
func (f *fakeKernel) tamper(fn func(*state)) {
	fn(&f.st)
	f.gen++
}

var _ kernel = (*fakeKernel)(nil)

func newFakeKernel() *fakeKernel { return &fakeKernel{st: newState()} }

func (f *fakeKernel) read(context.Context) (state, error) {
	f.reads++
	return cloneState(f.st), nil
}

func (f *fakeKernel) drops(context.Context) (Drops, error) { return Drops{}, nil }

func (f *fakeKernel) close() error { return nil }

func cloneState(s state) state {
	c := newState()
	c.Table = s.Table
	maps.Copy(c.Sets, s.Sets)
	for k, v := range s.Elems {
		c.Elems[k] = maps.Clone(v)
	}
	maps.Copy(c.Chains, s.Chains)
	maps.Copy(c.specs, s.specs)
	return c
}

func (f *fakeKernel) apply(_ context.Context, p plan) error {
	if f.failErr != nil {
		return f.failErr
	}
	f.applies++
	f.gen++
	f.last = p
	s := cloneState(f.st)
	if p.DelTable {
		f.st = newState()
		return nil
	}
	if p.AddTable {
		s.Table = true
	}
	if !s.Table {
		return fmt.Errorf("fake: no table")
	}
	for _, d := range p.AddSets {
		if _, ok := s.Sets[d.Name]; ok {
			return fmt.Errorf("fake: set %s exists", d.Name)
		}
		s.addSet(d.Name, d.Kind)
	}
	for name, es := range p.DelElems {
		for _, e := range es {
			if _, ok := s.Elems[name][e.Key]; !ok {
				return fmt.Errorf("fake: delete missing element %s from %s", e.Key, name)
			}
			delete(s.Elems[name], e.Key)
		}
	}
	addChain := func(d chainDef) error {
		for _, g := range d.Spec.Groups {
			fam := 4
			if d.Spec.Kind == chainKindCombo6 {
				fam = 6
			}
			if _, ok := s.Sets[groupSet(fam, g)]; !ok {
				return fmt.Errorf("fake: chain %s uses missing set %s", d.Name, groupSet(fam, g))
			}
		}
		s.addChain(d.Name, d.Spec)
		return nil
	}
	for _, d := range p.AddChains {
		if _, ok := s.Chains[d.Name]; ok {
			return fmt.Errorf("fake: chain %s exists", d.Name)
		}
		if err := addChain(d); err != nil {
			return err
		}
	}
	for _, d := range p.Rewrite {
		if _, ok := s.Chains[d.Name]; !ok {
			return fmt.Errorf("fake: rewrite missing chain %s", d.Name)
		}
		if err := addChain(d); err != nil {
			return err
		}
	}
	for name, es := range p.AddElems {
		if _, ok := s.Sets[name]; !ok {
			return fmt.Errorf("fake: add elements to missing set %s", name)
		}
		for _, e := range es {
			if c, ok := strings.CutPrefix(e.Data, jumpPrefix); ok {
				if _, ok := s.Chains[c]; !ok {
					return fmt.Errorf("fake: element %s jumps to missing chain %s", e.Key, c)
				}
			}
			s.Elems[name][e.Key] = e.Data
		}
	}
	for _, name := range p.DelChains {
		if _, ok := s.Chains[name]; !ok {
			return fmt.Errorf("fake: delete missing chain %s", name)
		}
		for set, es := range s.Elems {
			for k, v := range es {
				if v == jumpPrefix+name {
					return fmt.Errorf("fake: chain %s still used by %s[%s]", name, set, k)
				}
			}
		}
		delete(s.Chains, name)
		delete(s.specs, name)
	}
	for _, name := range p.DelSets {
		if _, ok := s.Sets[name]; !ok {
			return fmt.Errorf("fake: delete missing set %s", name)
		}
		for c, spec := range s.specs {
			fam := 4
			if spec.Kind == chainKindCombo6 {
				fam = 6
			}
			for _, g := range spec.Groups {
				if groupSet(fam, g) == name {
					return fmt.Errorf("fake: set %s still used by chain %s", name, c)
				}
			}
		}
		delete(s.Sets, name)
		delete(s.Elems, name)
	}
	f.st = s
	return nil
}
