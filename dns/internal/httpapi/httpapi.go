// Package httpapi serves the mesos-dns HTTP API: /v1/version, /v1/config,
// /v1/hosts/{host}, /v1/hosts/{host}/ports, /v1/services/{service},
// /v1/enumerate and /v1/axfr, with the same JSON shapes.
package httpapi

import (
	"bufio"
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
	if rrs := a.Zone.Index().Lookup(name).AppendRRs(nil); len(rrs) > 0 {
		for _, t := range []uint16{zone.TypeA, zone.TypeAAAA} {
			for _, rr := range rrs {
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
	for _, rr := range idx.Lookup(normalize(raw)).AppendRRs(nil) {
		if rr.Type != zone.TypeSRV {
			continue
		}
		trrs := idx.Lookup(rr.Target).AppendRRs(nil)
		for _, t := range []uint16{zone.TypeA, zone.TypeAAAA} {
			for _, arr := range trrs {
				if arr.Type == t {
					out = append(out, serviceAnswer{Service: raw, Host: rr.Target, IP: arr.IP.String(), Port: strconv.Itoa(int(rr.Port))})
					break
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

// axfr writes every record like mesos-dns's /v1/axfr, byte for byte what
// encoding/json makes of {"Domain", "Mname", "Records": {"As", "AAAAs",
// "SRVs"}, "RefreshSeconds", "Rname", "Serial", "TTL"} with sorted names, but
// streamed from the index rather than built as maps: a zone of 10k tasks
// has 130k names, and the maps cost tens of MB for every call.
func (a *API) axfr(w http.ResponseWriter, _ *http.Request) {
	c := a.Config
	nodes := a.Zone.Index().Sorted()
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 32<<10)
	var b []byte // the current name's entry
	b = append(b, `{"Domain":`...)
	b = appendJSON(b, c.Domain)
	b = append(b, `,"Mname":`...)
	b = appendJSON(b, c.SOAMname)
	b = append(b, `,"Records":{`...)
	var rrs []zone.RR
	for i, typ := range []uint16{zone.TypeA, zone.TypeAAAA, zone.TypeSRV} {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `"`+[]string{"As", "AAAAs", "SRVs"}[i]+`":{`...)
		first := true
		for _, nn := range nodes {
			rrs = nn.Node.AppendRRs(rrs[:0])
			n := 0
			for _, rr := range rrs {
				if rr.Type != typ {
					continue
				}
				if n == 0 {
					if !first {
						b = append(b, ',')
					}
					first = false
					b = appendJSON(b, nn.Name)
					b = append(b, ":["...)
				} else {
					b = append(b, ',')
				}
				n++
				b = append(b, '"')
				if typ == zone.TypeSRV {
					b = append(b, rr.Target...) // a valid name: nothing to escape
					b = append(b, ':')
					b = strconv.AppendUint(b, uint64(rr.Port), 10)
				} else {
					b = rr.IP.AppendTo(b)
				}
				b = append(b, '"')
			}
			if n > 0 {
				b = append(b, ']')
			}
			if len(b) >= 16<<10 {
				if _, err := bw.Write(b); err != nil {
					return
				}
				b = b[:0]
			}
		}
		b = append(b, '}')
	}
	b = append(b, `},"RefreshSeconds":`...)
	b = strconv.AppendInt(b, int64(c.RefreshSeconds), 10)
	b = append(b, `,"Rname":`...)
	b = appendJSON(b, c.SOARname)
	b = append(b, `,"Serial":`...)
	b = strconv.AppendUint(b, uint64(a.Zone.Serial()), 10)
	b = append(b, `,"TTL":`...)
	b = strconv.AppendInt(b, int64(c.TTL), 10)
	b = append(b, "}\n"...)
	if _, err := bw.Write(b); err == nil {
		_ = bw.Flush()
	}
}

// appendJSON appends s as a JSON string, escaped as encoding/json does.
func appendJSON(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7F || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
