package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/petrel-net/petrel/dns/internal/config"
	"github.com/petrel-net/petrel/dns/internal/dnstest"
	"github.com/petrel-net/petrel/dns/internal/state"
	"github.com/petrel-net/petrel/dns/internal/zone"
)

func newAPI(t *testing.T) *httptest.Server {
	t.Helper()
	srv, _ := serveConfig(t, `{"masters":["127.0.0.1:15050"],"mesosCredentials":{"principal":"p","secret":"hunter2"},"SOASerial":7}`)
	return srv
}

// serveConfig serves the API over the sample state, with the config given
// as mesos-dns JSON and a fixed clock. It returns the server and its API.
func serveConfig(t *testing.T, configJSON string) (*httptest.Server, *API) {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(configJSON), "test.json")
	if err != nil {
		t.Fatal(err)
	}
	z := zone.New(zone.Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: cfg.Sources(), Masters: cfg.Masters,
		Now: func() time.Time { return time.Unix(1500000000, 0) }})
	st, err := state.Decode(strings.NewReader(dnstest.SampleState))
	if err != nil {
		t.Fatal(err)
	}
	z.UpdateState(st)
	api := &API{Config: cfg, Zone: z, Version: "test"}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv, api
}

func TestAPI(t *testing.T) {
	srv := newAPI(t)
	tests := []struct {
		path     string
		status   int
		want     string // exact body (trailing newline trimmed) unless contains is set
		contains []string
		absent   []string
	}{
		{path: "/v1/version", status: 200, want: `{"Service":"Mesos-DNS","URL":"https://github.com/petrel-net/petrel","Version":"test"}`},
		{path: "/v1/hosts/web.marathon.mesos", status: 200,
			want: `[{"host":"web.marathon.mesos.","ip":"9.0.1.5"},{"host":"web.marathon.mesos.","ip":"fd01:b::1:8000:5"}]`},
		{path: "/v1/hosts/WEB.marathon.mesos.", status: 200,
			want: `[{"host":"web.marathon.mesos.","ip":"9.0.1.5"},{"host":"web.marathon.mesos.","ip":"fd01:b::1:8000:5"}]`},
		{path: "/v1/hosts/nope.mesos", status: 200, want: `[{"host":"","ip":""}]`},
		{path: "/v1/hosts/web.marathon.mesos/ports", status: 501, want: "To be implemented..."},
		{path: "/v1/services/_https._web._tcp.marathon.mesos", status: 200,
			want: `[{"service":"_https._web._tcp.marathon.mesos","host":"web-tusms-s0.marathon.mesos.","ip":"9.0.1.5","port":"8443"},` +
				`{"service":"_https._web._tcp.marathon.mesos","host":"web-tusms-s0.marathon.mesos.","ip":"fd01:b::1:8000:5","port":"8443"}]`},
		{path: "/v1/services/_nope._tcp.mesos", status: 200, want: `[{"service":"","host":"","ip":"","port":""}]`},
		{path: "/v1/config", status: 200,
			contains: []string{`"Masters":["127.0.0.1:15050"]`, `"HttpPort":8123`, `"MesosCredentials":{"Principal":"p","Secret":"\u003credacted\u003e"}`, `"IPSources":["netinfo","mesos","host"]`},
			absent:   []string{"hunter2"}},
		{path: "/v1/enumerate", status: 200,
			contains: []string{`{"frameworks":[{"name":"marathon","tasks":[{"name":"web","id":"web.11111111-aaaa-11e6-a088-c20493233aa5","records":[{"name":"web.marathon.mesos.","host":"9.0.1.5","rtype":"A"}`,
				`{"name":"_http._web._tcp.marathon.mesos.","host":"web-tusms-s0.marathon.mesos.:8080","rtype":"SRV"}`,
				`{"name":"broken","tasks":[]}`}},
		{path: "/v1/axfr", status: 200,
			contains: []string{`"Domain":"mesos"`, `"Mname":"ns1.mesos."`, `"Rname":"root.ns1.mesos."`, `"TTL":60`, `"RefreshSeconds":60`,
				`"_leader._tcp.mesos.":["leader.mesos.:15050"]`, `"leader.mesos.":["127.0.0.1"]`, `"Serial":1500000001`}},
		{path: "/nothing", status: 404, want: "404: Page Not Found"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := strings.TrimSpace(string(b))
			if resp.StatusCode != tc.status {
				t.Errorf("got status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.want != "" && body != tc.want {
				t.Errorf("got body\n%s\nwant\n%s", body, tc.want)
			}
			for _, c := range tc.contains {
				if !strings.Contains(body, c) {
					t.Errorf("body lacks %s\n%s", c, body)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(body, a) {
					t.Errorf("body contains %s", a)
				}
			}
		})
	}
}

// TestAXFRMatchesEncodingJSON checks that the streamed /v1/axfr is byte for
// byte what encoding/json makes of the record maps.
func TestAXFRMatchesEncodingJSON(t *testing.T) {
	srv, api := serveConfig(t, `{"masters":["127.0.0.1:15050"],"SOARname":"a<b&c.mesos."}`)
	cfg, z := api.Config, api.Zone.(*zone.Zone)
	resp, err := http.Get(srv.URL + "/v1/axfr")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	_ = json.NewEncoder(&want).Encode(map[string]any{
		"TTL": cfg.TTL, "Serial": z.Serial(), "RefreshSeconds": cfg.RefreshSeconds, "Mname": cfg.SOAMname,
		"Rname": cfg.SOARname, "Domain": cfg.Domain, "Records": z.AXFR(),
	})
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("got\n%s\nwant\n%s", got, want.Bytes())
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("got content type %q", resp.Header.Get("Content-Type"))
	}
}
