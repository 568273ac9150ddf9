package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/petrel-net/petrel/agent/internal/policy"
)

// PolicyConfig configures netgroup isolation (helper "policy").
type PolicyConfig struct {
	// Enabled turns enforcement on (default). Off, petreld leaves any
	// existing "inet petrel" table alone.
	Enabled bool `json:"enabled"`
	// Default is what a container without netgroups admits: "open" (every
	// container reaches it) or "closed" (no container does).
	Default string `json:"default,omitempty"`
	// RemoveOnShutdown deletes the table when petreld stops (also done
	// when docker.remove_on_shutdown is set). By default the rules stay, so
	// isolation holds across an agent restart.
	RemoveOnShutdown bool `json:"remove_on_shutdown,omitempty"`
}

func (c *PolicyConfig) flags(fs *flag.FlagSet) {
	fs.BoolVar(&c.Enabled, "policy", c.Enabled, "enforce netgroup isolation and anti-spoofing with nftables")
	fs.StringVar(&c.Default, "policy-default", c.Default, "what a container without netgroups admits: open or closed")
	fs.BoolVar(&c.RemoveOnShutdown, "policy-cleanup-on-exit", c.RemoveOnShutdown, "delete the nftables table inet petrel when petreld stops")
}

func (c *PolicyConfig) validate() error {
	if _, ok := policy.ParseDefault(c.Default); !ok {
		return fmt.Errorf("policy: default %q is not open or closed", c.Default)
	}
	return nil
}

// startPolicy builds the policy reconciler in the host namespace and hands
// it to the cluster watch loop, which runs it after every batch of registry
// changes before publishing the applied revision.
func (d *Daemon) startPolicy(_ context.Context) error {
	pc := d.cfg.Policy
	if !pc.Enabled {
		return nil
	}
	def, _ := policy.ParseDefault(pc.Default)
	p, err := policy.New(d.cfg.Hostname, policy.WithNetNS(d.cfg.Dataplane.NetNS), policy.WithDefault(def))
	if err != nil {
		return fmt.Errorf("policy in netns %q: %w", d.cfg.Dataplane.NetNS, err)
	}
	remove := pc.RemoveOnShutdown || d.cfg.Docker.RemoveOnShutdown
	d.onClose("policy", func() error {
		var err error
		if remove {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = p.Remove(ctx)
			cancel()
		}
		return errors.Join(err, p.Close())
	})
	d.reconcilers = append(d.reconcilers, p)
	d.log.Info("policy ready", "component", "policy", "table", "inet "+policy.TableName, "default", def.String())
	return nil
}
