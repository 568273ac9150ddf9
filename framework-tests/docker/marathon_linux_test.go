package docker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-net/petrel/framework-tests/mesos/launcher"
)

// TestMarathonDockerApp launches deploy/marathon/docker-user-network.json the
// way Marathon and Mesos's Docker containerizer do: a USER network named in
// the app, one `docker run --net <name> --name mesos-<agent>.<container>` per
// instance. The example must keep working as it stands; only the image is
// swapped for the test's busybox, since nothing can be pulled here.
func TestMarathonDockerApp(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "marathon", "docker-user-network.json"))
	if err != nil {
		t.Fatal(err)
	}
	app, err := launcher.ParseApp(data)
	if err != nil {
		t.Fatal(err)
	}
	d, err := app.Docker()
	if err != nil {
		t.Fatal(err)
	}
	if app.Instances < 2 {
		t.Fatalf("example has %d instances; want at least 2 to check they reach each other", app.Instances)
	}
	e := newEnv(t)
	if out, err := docker("network", "inspect", d.Network); err == nil {
		t.Fatalf("a Docker network %q already exists on this machine; the example's network name is taken: %s", d.Network, out)
	}
	mustDocker(t, "network", "create", "-d", "petrel", "--ipam-driver", "petrel", "--subnet", e.pool.String(), d.Network)
	t.Cleanup(func() { _, _ = docker("network", "rm", d.Network) })

	agentID := "ptl" + randHex(4) + "-S0"
	var names, ids, ips []string
	for range app.Instances {
		cid := "ptl" + randHex(4) + "-aaaa-bbbb-cccc-dddddddddddd"
		args := append(d.RunArgs(agentID, cid, e.image), "sh", "-c", app.Cmd)
		name := "mesos-" + agentID + "." + cid
		t.Cleanup(func() { _, _ = docker("rm", "-f", name) })
		mustDocker(t, args...)
		names, ids = append(names, name), append(ids, cid)
		ips = append(ips, ip(t, name, d.Network))
	}
	for i, a := range names {
		for j := range names {
			if i != j {
				if err := ping(a, ips[j]); err != nil {
					t.Error(err)
				}
			}
		}
	}
	// Each task's endpoint is linked to its Mesos container ID and carries
	// the app's labels, so DNS names it like its task.
	for i, name := range names {
		waitFor(t, "Mesos container ID on "+name, func() error {
			rec := e.endpointRecord(t, name, d.Network)
			if rec["mesos_container_id"] != ids[i] || rec["network_name"] != d.Network {
				return fmt.Errorf("record %v", rec)
			}
			for k, v := range app.Labels {
				if l, _ := rec["labels"].(map[string]any); l[k] != v {
					return fmt.Errorf("label %s: record %v", k, rec["labels"])
				}
			}
			return nil
		})
	}
	mustDocker(t, append([]string{"rm", "-f"}, names...)...)
	e.waitGone(t)
}
