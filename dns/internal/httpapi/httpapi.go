// Package httpapi serves the mesos-dns HTTP API: /v1/version, /v1/config,
// /v1/hosts/{host}, /v1/hosts/{host}/ports, /v1/services/{service},
// /v1/enumerate and /v1/axfr, with the same JSON shapes.
package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/petrel-net/petrel/dns/internal/config"
	"github.com/petrel-net/petrel/dns/internal/zone"
)

// Zone is what the API reads.
type Zone interface {
	Index() *zone.Index
	Serial() uint32
	Enumerate() []zone.EnumFramework
	AXFR() zone.Records
}

// API serves the HTTP endpoints.
type API struct {
	Config  *config.Config
	Zone    Zone
	Version string
}

// Handler returns the API's handler.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", a.version)
	mux.HandleFunc("GET /v1/config", a.config)
	mux.HandleFunc("GET /v1/hosts/{host}", a.hosts)
	mux.HandleFunc("GET /v1/hosts/{host}/ports", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = w.Write([]byte("To be implemented..."))
	})
	mux.HandleFunc("GET /v1/services/{service}", a.services)
	if a.Config.EnumerationOn {
		mux.HandleFunc("GET /v1/enumerate", a.enumerate)
		mux.HandleFunc("GET /v1/axfr", a.axfr)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("404: Page Not Found"))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (a *API) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]string{
		"Service": "Mesos-DNS",
		"URL":     "https://github.com/petrel-net/petrel",
		"Version": a.Version,
	})
}

// config prints the configuration with secrets replaced (mesos-dns prints
// MesosCredentials.Secret in clear).
func (a *API) config(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, a.Config.Redacted())
}

// normalize lower-cases, removes ".*" and appends the trailing dot.
func normalize(s string) string {
	s = strings.ReplaceAll(strings.ToLower(s), ".*", "")
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

type hostAnswer struct {
	Host string `json:"host"`
	IP   string `json:"ip"`
}

func (a *API) hosts(w http.ResponseWriter, r *http.Request) {
	name := normalize(r.PathValue("host"))
	var out []hostAnswer
	if n := a.Zone.Index().Lookup(name); n != nil {
		for _, t := range []uint16{zone.TypeA, zone.TypeAAAA} {
			for _, rr := range n.RRs {
				if rr.Type == t {
					out = append(out, hostAnswer{Host: name, IP: rr.IP.String()})
				}
			}
		}
	}
	if len(out) == 0 {
		out = []hostAnswer{{}}
	}
	writeJSON(w, out)
}

type serviceAnswer struct {
	Service string `json:"service"`
	Host    string `json:"host"`
	IP      string `json:"ip"`
	Port    string `json:"port"`
}

func (a *API) services(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("service")
	idx := a.Zone.Index()
	var out []serviceAnswer
	if n := idx.Lookup(normalize(raw)); n != nil {
		for _, rr := range n.RRs {
			if rr.Type != zone.TypeSRV {
				continue
			}
			tn := idx.Lookup(rr.Target)
			if tn == nil {
				continue
			}
			for _, t := range []uint16{zone.TypeA, zone.TypeAAAA} {
				for _, arr := range tn.RRs {
					if arr.Type == t {
						out = append(out, serviceAnswer{Service: raw, Host: rr.Target, IP: arr.IP.String(), Port: strconv.Itoa(int(rr.Port))})
						break
					}
				}
			}
		}
	}
	if len(out) == 0 {
		out = []serviceAnswer{{}}
	}
	writeJSON(w, out)
}

func (a *API) enumerate(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"frameworks": a.Zone.Enumerate()})
}

func (a *API) axfr(w http.ResponseWriter, _ *http.Request) {
	c := a.Config
	writeJSON(w, map[string]any{
		"TTL":            c.TTL,
		"Serial":         a.Zone.Serial(),
		"RefreshSeconds": c.RefreshSeconds,
		"Mname":          c.SOAMname,
		"Rname":          c.SOARname,
		"Domain":         c.Domain,
		"Records":        a.Zone.AXFR(),
	})
}
