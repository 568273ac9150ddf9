package config

import (
	"slices"
	"strings"
	"testing"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(`{"masters":["10.0.0.1:5050"],"RefreshSeconds":5,"httpport":9000,"SOARname":"admin@example.mesos","domain":"Example.MESOS"}`), "c.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.RefreshSeconds != 5 || c.HttpPort != 9000 || c.TTL != 60 || c.Port != 53 || !c.ExternalOn || !c.SetTruncateBit {
		t.Errorf("got %+v", c)
	}
	if c.Domain != "example.mesos" || c.SOARname != "admin.example.mesos." || c.SOAMname != "ns1.mesos." {
		t.Errorf("got domain %q rname %q mname %q", c.Domain, c.SOARname, c.SOAMname)
	}
	// Unlike mesos-dns (a public resolver), no upstream unless configured.
	if got := c.Resolvers; len(got) != 0 {
		t.Errorf("got resolvers %q, want none by default", got)
	}
	if got := c.Sources(); !slices.Equal(got, []string{"petrel", "netinfo", "mesos", "host"}) {
		t.Errorf("got sources %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no masters", `{}`, `"masters" is required`},
		{"zk only", `{"zk":"zk://10.0.0.1:2181/mesos"}`, "zk master detection is not supported"},
		{"dup masters", `{"masters":["10.9.9.9:5050","10.9.9.9:5050"]}`, "duplicate master"},
		{"bad domain", `{"masters":["10.9.9.9:5050"],"domain":"a..b"}`, "invalid domain"},
		{"bad source", `{"masters":["10.9.9.9:5050"],"IPSources":["rkt"]}`, "invalid IPSources"},
		{"empty sources", `{"masters":["10.9.9.9:5050"],"IPSources":[]}`, "must not be empty"},
		{"bad resolver", `{"masters":["10.9.9.9:5050"],"resolvers":["dns.google"]}`, "invalid resolver"},
		{"zone overlaps", `{"masters":["10.9.9.9:5050"],"zoneResolvers":{"x.mesos":["10.9.9.9"]}}`, "overlaps"},
		{"both off", `{"masters":["10.9.9.9:5050"],"dnson":false,"httpon":false}`, "must be enabled"},
		{"not json", `{`, "unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in), "c.json")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	c := Default()
	c.MesosCredentials = Credentials{Principal: "p", Secret: "s"}
	if r := c.Redacted(); r.MesosCredentials.Secret == "s" || c.MesosCredentials.Secret != "s" {
		t.Errorf("got redacted %q, original %q", r.MesosCredentials.Secret, c.MesosCredentials.Secret)
	}
}

// FuzzParse checks that any input is either rejected or yields a usable config.
func FuzzParse(f *testing.F) {
	f.Add(`{"masters":["10.0.0.1:5050"]}`)
	f.Add(`{"masters":["[::1]:5050"],"resolvers":["::1"],"zoneResolvers":{"a.b":["1.2.3.4:53"]}}`)
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(strings.NewReader(in), "f.json")
		if err != nil {
			return
		}
		if len(c.Masters) == 0 || len(c.Sources()) == 0 || !strings.HasSuffix(c.SOAMname, ".") {
			t.Fatalf("accepted an unusable config: %+v", c)
		}
	})
}

func TestParseWithOverrides(t *testing.T) {
	c, err := ParseWith(nil, "", func(c *Config) {
		c.Masters = []string{"127.0.0.1:5050"}
		c.Domain = "Example.Mesos"
		c.Resolvers = []string{"127.0.0.53"}
		c.Port = 15353
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Domain != "example.mesos" || c.Port != 15353 || c.RefreshSeconds != 60 {
		t.Errorf("got domain %q port %d refresh %d", c.Domain, c.Port, c.RefreshSeconds)
	}
	if got := c.Resolvers; !slices.Equal(got, []string{"127.0.0.53:53"}) {
		t.Errorf("got resolvers %q", got)
	}
	if _, err := ParseWith(nil, "", nil); err == nil || !strings.Contains(err.Error(), "masters") {
		t.Errorf("no file and no masters: got %v, want the masters error", err)
	}
}
