package state

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// ClientConfig configures how the master is reached.
type ClientConfig struct {
	Masters   []string // host:port, tried in order
	Timeout   time.Duration
	HTTPS     bool
	CAFile    string
	CertFile  string
	KeyFile   string
	Principal string // basic auth when set
	Secret    string
	// Yield is called every few dozen tasks while decoding (may be nil).
	Yield func()
	// Known tells the decoder which tasks it need not decode (may be nil;
	// see Decoder.Known).
	Known func(Raw) bool
}

// Client fetches /master/state from the leading master.
type Client struct {
	cfg  ClientConfig
	http *http.Client
	dec  *Decoder
	// leader is the host:port that served the last state.
	leader string
}

// NewClient builds a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if cfg.HTTPS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read CA %s: %w", cfg.CAFile, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificates in CA %s", cfg.CAFile)
			}
			tc.RootCAs = pool
		} else {
			tc.InsecureSkipVerify = true //nolint:gosec // mesos-dns behaviour without caCertFile
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load client cert %s: %w", cfg.CertFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		tr.TLSClientConfig = tc
	}
	dec := NewDecoder()
	dec.Known, dec.Yield = cfg.Known, cfg.Yield
	return &Client{cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}, dec: dec}, nil
}

func (c *Client) scheme() string {
	if c.cfg.HTTPS {
		return "https"
	}
	return "http"
}

// Leader returns host:port of the master that served the last state.
func (c *Client) Leader() string { return c.leader }

// Fetch returns the state of the leading master: the masters are tried in
// order, and when a master names another leader the state is re-read from
// the leader's IP with the same port. Fetch is not safe for concurrent use.
func (c *Client) Fetch(ctx context.Context) (*State, error) {
	masters := c.cfg.Masters
	if c.leader != "" {
		masters = append([]string{c.leader}, masters...)
	}
	var errs []error
	for _, m := range masters {
		st, err := c.fetchOne(ctx, m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pid, err := ParsePID(st.Leader)
		if err != nil {
			errs = append(errs, fmt.Errorf("master %s: leader: %w", m, err))
			continue
		}
		host, port, _ := net.SplitHostPort(m)
		if pid.Host != host {
			lm := net.JoinHostPort(pid.Host, port)
			lst, err := c.fetchOne(ctx, lm)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			c.leader = lm
			return lst, nil
		}
		c.leader = m
		return st, nil
	}
	return nil, fmt.Errorf("no master answered: %w", errors.Join(errs...))
}

func (c *Client) fetchOne(ctx context.Context, hostport string) (*State, error) {
	u := c.scheme() + "://" + hostport + "/master/state"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "petrel-dns")
	if c.cfg.Principal != "" {
		req.SetBasicAuth(c.cfg.Principal, c.cfg.Secret)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("state %s: status %s", u, resp.Status)
	}
	st, err := c.dec.Decode(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", u, err)
	}
	if st.Leader == "" {
		return nil, fmt.Errorf("state %s: empty leader", u)
	}
	return st, nil
}

// Subscribe opens the v1 operator API SUBSCRIBE stream on the master at
// hostport and returns its body (RecordIO frames of JSON events).
func (c *Client) Subscribe(ctx context.Context, hostport string) (io.ReadCloser, error) {
	u := c.scheme() + "://" + hostport + "/api/v1"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader([]byte(`{"type":"SUBSCRIBE"}`)))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "petrel-dns")
	if c.cfg.Principal != "" {
		req.SetBasicAuth(c.cfg.Principal, c.cfg.Secret)
	}
	// The stream is long-lived: no client timeout, only ctx.
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("subscribe %s: status %s", u, resp.Status)
	}
	return resp.Body, nil
}
