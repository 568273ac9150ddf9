package launcher

import (
	"fmt"
	"sort"
)

// DockerApp is the part of a Marathon DOCKER app that Mesos's Docker
// containerizer turns into `docker run` arguments.
type DockerApp struct {
	Image  string
	Labels map[string]string
	// Network is the user network of the app's container-mode network.
	Network string
}

// Docker returns the Docker form of a Marathon app with a container-mode
// (USER) network, or an error naming what is missing.
func (a *App) Docker() (*DockerApp, error) {
	if a.Container == nil || a.Container.Type != "DOCKER" || a.Container.Docker == nil {
		return nil, fmt.Errorf("marathon app %s: not a DOCKER container", a.ID)
	}
	d := &DockerApp{Image: a.Container.Docker.Image, Labels: a.Labels}
	for _, n := range a.Networks {
		if n.Mode == "container" {
			if n.Name == "" {
				return nil, fmt.Errorf("marathon app %s: container network without a name", a.ID)
			}
			d.Network = n.Name
			break
		}
	}
	if d.Network == "" {
		return nil, fmt.Errorf("marathon app %s: no container-mode (USER) network", a.ID)
	}
	return d, nil
}

// RunArgs returns the `docker run` arguments the Docker containerizer uses
// for one task (reference §3.9): the container is named
// mesos-<agent id>.<container id>, joins the NetworkInfo's network with
// --net, and carries the app's labels. image replaces the app's image (tests
// cannot pull); the command follows the image.
func (d *DockerApp) RunArgs(agentID, containerID, image string) []string {
	args := []string{"run", "-d", "--name", "mesos-" + agentID + "." + containerID, "--net", d.Network}
	keys := make([]string, 0, len(d.Labels))
	for k := range d.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--label", k+"="+d.Labels[k])
	}
	return append(args, image)
}
