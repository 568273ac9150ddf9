package packaging

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/cbroglie/mustache"

	"github.com/petrel-net/petrel/framework-tests/testutil"
)

const repo = "../.."

// defaults builds the options object a DC/OS CLI would send with no options:
// every property's default, recursively.
func defaults(t *testing.T, schema map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		prop, ok := p.(map[string]any)
		if !ok {
			t.Fatalf("schema property %s is not an object", name)
		}
		if d, ok := prop["default"]; ok {
			out[name] = d
			continue
		}
		if prop["type"] == "object" {
			out[name] = defaults(t, prop)
			continue
		}
		t.Fatalf("schema property %s has no default", name)
	}
	return out
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return v
}

// merge lays the options over the defaults, as Cosmos does.
func merge(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// checkOptions validates options against the schema's types, enums and
// ranges, the way the DC/OS CLI does before rendering.
func checkOptions(t *testing.T, schema, opts map[string]any, path string) {
	t.Helper()
	props, _ := schema["properties"].(map[string]any)
	for k, v := range opts {
		p, ok := props[k].(map[string]any)
		if !ok {
			t.Errorf("option %s%s is not in config.json", path, k)
			continue
		}
		switch p["type"] {
		case "object":
			m, ok := v.(map[string]any)
			if !ok {
				t.Errorf("option %s%s: want object", path, k)
				continue
			}
			checkOptions(t, p, m, path+k+".")
		case "string":
			s, ok := v.(string)
			if !ok {
				t.Errorf("option %s%s: want string, got %T", path, k, v)
			}
			if enum, ok := p["enum"].([]any); ok {
				found := false
				for _, e := range enum {
					found = found || e == s
				}
				if !found {
					t.Errorf("option %s%s = %q: not in %v", path, k, s, enum)
				}
			}
		case "integer", "number":
			n, ok := v.(float64)
			if !ok {
				t.Errorf("option %s%s: want number, got %T", path, k, v)
				continue
			}
			if p["type"] == "integer" && n != float64(int64(n)) {
				t.Errorf("option %s%s = %v: want integer", path, k, n)
			}
			if lo, ok := p["minimum"].(float64); ok && n < lo {
				t.Errorf("option %s%s = %v: below minimum %v", path, k, n, lo)
			}
			if hi, ok := p["maximum"].(float64); ok && n > hi {
				t.Errorf("option %s%s = %v: above maximum %v", path, k, n, hi)
			}
		case "boolean":
			if _, ok := v.(bool); !ok {
				t.Errorf("option %s%s: want boolean, got %T", path, k, v)
			}
		default:
			t.Errorf("option %s%s: schema type %v unknown", path, k, p["type"])
		}
	}
}

// binaries builds petreld, petrel-dns and petrelctl once per test binary
// and returns the directory that holds them.
func binaries(t *testing.T) string {
	t.Helper()
	testutil.Binary(t, "dns/cmd/petrel-dns")
	testutil.Binary(t, "agent/cmd/petrelctl")
	return filepath.Dir(testutil.Binary(t, "agent/cmd/petreld"))
}

// flagLine matches the flag package's "  -name type" lines and the
// "[--name VALUE]" forms of a hand-written usage line.
var flagLine = regexp.MustCompile(`(?m)(?:^\s+|\[)--?([a-zA-Z0-9][a-zA-Z0-9_-]*)`)

// flagsOf lists the flags a binary's -h output documents.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, "-h")
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // -h exits non-zero with the flag package
	flags := map[string]bool{}
	for _, m := range flagLine.FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("%s -h listed no flags:\n%s", bin, out.String())
	}
	return flags
}

var usedFlag = regexp.MustCompile(`(?:^|\s)--?([a-zA-Z][a-zA-Z0-9_-]*)`)

// commandFlags returns the flags passed to the named binary in a shell
// command line.
func commandFlags(cmdline, bin string) []string {
	var flags []string
	for _, part := range strings.Split(cmdline, "&&") {
		for _, seg := range strings.Split(part, ";") {
			seg = strings.TrimSpace(seg)
			seg = strings.TrimPrefix(seg, "exec ")
			if !strings.HasPrefix(seg, "./"+bin+" ") {
				continue
			}
			for _, m := range usedFlag.FindAllStringSubmatch(seg[len(bin)+2:], -1) {
				flags = append(flags, strings.SplitN(m[1], "=", 2)[0])
			}
		}
	}
	return flags
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}

func TestDCOSPackage(t *testing.T) {
	dir := filepath.Join(repo, "deploy", "dcos")
	schema := readJSON(t, filepath.Join(dir, "config.json"))
	resource := readJSON(t, filepath.Join(dir, "resource.json"))
	pkg := readJSON(t, filepath.Join(dir, "package.json"))
	for _, k := range []string{"packagingVersion", "name", "version", "description", "maintainer"} {
		if s, _ := pkg[k].(string); s == "" {
			t.Errorf("package.json: %s is missing", k)
		}
	}
	tmpl, err := os.ReadFile(filepath.Join(dir, "marathon.json.mustache"))
	if err != nil {
		t.Fatal(err)
	}
	bin := binaries(t)
	petreldFlags := flagsOf(t, filepath.Join(bin, "petreld"))
	dnsFlags := flagsOf(t, filepath.Join(bin, "petrel-dns"))
	ctlFlags := flagsOf(t, filepath.Join(bin, "petrelctl"))

	def := defaults(t, schema)
	full := merge(def, readJSON(t, filepath.Join(dir, "example-options.json")))
	noDNS := merge(def, map[string]any{"dns": map[string]any{"enabled": false}})
	for _, tc := range []struct {
		name    string
		opts    map[string]any
		wantDNS bool
	}{
		{"defaults", def, true},
		{"full example", full, true},
		{"dns disabled", noDNS, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkOptions(t, schema, tc.opts, "")
			ctx := merge(tc.opts, map[string]any{"resource": resource})
			out, err := mustache.RenderRaw(string(tmpl), true, ctx)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			var group marathonGroup
			dec := json.NewDecoder(strings.NewReader(out))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&group); err != nil {
				t.Fatalf("rendered template is not a Marathon group: %v\n%s", err, out)
			}
			apps := map[string]marathonApp{}
			for _, a := range group.Apps {
				if err := a.validate(group.ID); err != nil {
					t.Errorf("app %s: %v", a.ID, err)
				}
				apps[a.ID[strings.LastIndex(a.ID, "/")+1:]] = a
			}
			agent, ok := apps["petreld"]
			if !ok {
				t.Fatalf("no petreld app in %v", keys(apps))
			}
			if agent.Instances != int(tc.opts["service"].(map[string]any)["agents"].(float64)) {
				t.Errorf("petreld instances = %d, want service.agents", agent.Instances)
			}
			if len(agent.Constraints) == 0 || strings.Join(agent.Constraints[0], " ") != "hostname UNIQUE" {
				t.Errorf("petreld constraints = %v, want one per agent (hostname UNIQUE)", agent.Constraints)
			}
			checkFlags(t, "petreld", agent.Cmd, petreldFlags)
			for _, hc := range agent.HealthChecks {
				if hc.Command != nil {
					checkFlags(t, "petrelctl", hc.Command.Value, ctlFlags)
				}
			}
			dnsApp, hasDNS := apps["petrel-dns"]
			if hasDNS != tc.wantDNS {
				t.Fatalf("petrel-dns app present = %v, want %v", hasDNS, tc.wantDNS)
			}
			if hasDNS {
				checkFlags(t, "petrel-dns", dnsApp.Cmd, dnsFlags)
			}
		})
	}
}

func checkFlags(t *testing.T, bin, cmdline string, known map[string]bool) {
	t.Helper()
	used := commandFlags(cmdline, bin)
	if len(used) == 0 {
		t.Errorf("%s: the command passes no flags to %s: %q", bin, bin, cmdline)
	}
	for _, f := range used {
		if !known[f] {
			t.Errorf("%s has no flag -%s (used in %q)", bin, f, cmdline)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
