package docker

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
)

// http1 posts raw bodies to a plugin socket.
type http1 struct{ path string }

func (h *http1) post(path, body string) (int, []byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", h.path)
	}}}
	resp, err := c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.1+json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
