package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// DefaultDockerSocket is the Docker Engine API socket.
const DefaultDockerSocket = "/var/run/docker.sock"

// dockerClient speaks the Docker Engine API over its unix socket with plain
// net/http.
type dockerClient struct {
	c *http.Client
}

var _ DockerAPI = (*dockerClient)(nil)

// NewDockerClient returns a Docker Engine API client for the socket path.
func NewDockerClient(socket string) DockerAPI {
	if socket == "" {
		socket = DefaultDockerSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4,
	}
	return &dockerClient{c: &http.Client{Transport: tr}}
}

func (d *dockerClient) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return fmt.Errorf("docker GET %s: %w", path, err)
	}
	resp, err := d.c.Do(req)
	if err != nil {
		return fmt.Errorf("docker GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("docker GET %s: %w", path, ErrDockerNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("docker GET %s: status %d: %s", path, resp.StatusCode, msg)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("docker GET %s: decode: %w", path, err)
	}
	return nil
}

func (d *dockerClient) Network(ctx context.Context, id string) (*DockerNetwork, error) {
	n := &DockerNetwork{}
	if err := d.get(ctx, "/networks/"+url.PathEscape(id), n); err != nil {
		return nil, err
	}
	return n, nil
}

func (d *dockerClient) Container(ctx context.Context, id string) (*DockerContainer, error) {
	c := &DockerContainer{}
	if err := d.get(ctx, "/containers/"+url.PathEscape(id)+"/json", c); err != nil {
		return nil, err
	}
	return c, nil
}

func (d *dockerClient) Events(ctx context.Context, connected func(), fn func(DockerEvent)) error {
	q := url.Values{"filters": {`{"type":["network"]}`}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/events?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("docker events: %w", err)
	}
	resp, err := d.c.Do(req)
	if err != nil {
		return fmt.Errorf("docker events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("docker events: status %d", resp.StatusCode)
	}
	connected()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev DockerEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("docker events: %w", err)
		}
		fn(ev)
	}
}
