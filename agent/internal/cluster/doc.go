// Package cluster keeps an agent in step with the rest of the cluster. It
// publishes the agent's host record under a lease, runs the one watch loop over
// the registry (hosts, blocks, addresses, endpoints, applied revisions),
// maintains a registry.Snapshot incrementally and hands it to every registered
// Reconciler (routes, policy) after each batch of events.
//
// # Passes
//
// The loop drains whatever the watch has queued, folds it into the
// snapshot, then runs one pass. An IncrementalReconciler (routes) gets the
// registry keys changed since its previous call, relevant or not, so that it
// recomputes only what they touch and keeps its own index exact; a plain
// Reconciler (policy) runs only when something relevant changed. After a
// (re)list, on every resync tick and after a reconciler failed, the pass is
// a full Reconcile instead.
//
// # Convergence
//
// After all reconcilers succeed, the agent publishes the etcd revision it has
// fully applied under registry.AppliedKey. The value is the agent's watch
// position W: every event up to W is in the kernel. To avoid a write storm
// (each applied write is itself a new revision that every agent sees), an
// agent publishes once per pass and only after a relevant change: one that
// alters what a reconciler reads, namely a host record, a block's owner
// (not its counters), an address that needs its own route (held by another
// host than its block's), or an endpoint. Identical rewrites (a host record
// under a new lease), the addresses every attach allocates in its own host's
// block, and applied/ writes are not relevant, so an attach costs one applied
// write per agent, for its endpoint. A reconciler that comes to read more
// of a record must widen applyPut's rule with it.
//
// A host has therefore converged to revision R when its applied revision is
// at least M(R), the last relevant revision at or below R: between M(R) and R
// nothing any reconciler looks at changed. WaitConverged evaluates exactly
// that, after the asking agent's own watch has reached R (it requests a watch
// progress notification when idle, so it learns the header revision even
// when no key changes). Lag is reported the same way: zero for a host that
// has applied every relevant change, else the current revision minus its
// applied revision.
//
// # Cost
//
// The main watch covers every registry key except applied/ (which sorts
// first under the prefix): after each change every agent writes its applied
// key once, and following those writes everywhere would deliver N² events
// per change. Applied revisions are read once by Status (and so by every
// metrics scrape), and watched only while WaitConverged asks: that watch
// stops after two idle minutes. The snapshot carries per-map change revisions so that the routes
// reconciler skips the endpoint-only changes every attach makes.
//
// A host's record and applied key live under one lease (TTL 30s by default, so an agent restart or upgrade withdraws nothing).
// The lease is kept alive and re-granted after an etcd outage; it is never
// revoked on shutdown, so a quick restart withdraws nothing. When a host dies
// its record expires and every agent drops its routes; RemoveHost does the
// same at once and frees the host's empty blocks.
package cluster
