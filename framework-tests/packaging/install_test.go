package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// installTree runs `make install` into a throwaway DESTDIR and returns it.
func installTree(t *testing.T) string {
	t.Helper()
	dest := t.TempDir()
	cmd := exec.Command("make", "-s", "install", "DESTDIR="+dest, "PREFIX=/usr/local")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return dest
}

// envFile reads KEY=VALUE lines, skipping comments.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=VALUE", path, line)
		}
		env[k] = v
	}
	return env
}

func mustExist(t *testing.T, dest, path, why string) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dest, path))
	if err != nil {
		t.Errorf("%s: %s is not installed by make install: %v", why, path, err)
		return
	}
	if strings.Contains(path, "/bin/") && fi.Mode()&0o111 == 0 {
		t.Errorf("%s: %s is not executable", why, path)
	}
}

func TestMesosConfigsMatchInstall(t *testing.T) {
	dest := installTree(t)
	mesos := filepath.Join(repo, "deploy", "mesos")

	// net-modules: both commands and the modules file itself.
	mod := readJSON(t, filepath.Join(mesos, "modules.json"))
	var commands []string
	for _, lib := range mod["libraries"].([]any) {
		for _, m := range lib.(map[string]any)["modules"].([]any) {
			params, _ := m.(map[string]any)["parameters"].([]any)
			for _, p := range params {
				kv := p.(map[string]any)
				switch kv["key"] {
				case "ipam_command", "isolator_command":
					commands = append(commands, kv["key"].(string))
					mustExist(t, dest, kv["value"].(string), "modules.json "+kv["key"].(string))
					if filepath.Base(kv["value"].(string)) != "petrel-netmodules" {
						t.Errorf("modules.json %s = %s, want our shim petrel-netmodules", kv["key"], kv["value"])
					}
				}
			}
		}
	}
	if strings.Join(commands, ",") != "ipam_command,isolator_command" {
		t.Errorf("modules.json names %v, want ipam_command and isolator_command", commands)
	}
	nm := envFile(t, filepath.Join(mesos, "netmodules-agent.env"))
	mustExist(t, dest, strings.TrimPrefix(nm["MESOS_MODULES"], "file://"), "netmodules-agent.env MESOS_MODULES")
	if !strings.Contains(nm["MESOS_HOOKS"], "com_mesosphere_mesos_NetworkHook") {
		t.Errorf("netmodules-agent.env MESOS_HOOKS = %q, want the NetworkHook", nm["MESOS_HOOKS"])
	}
	if got := nm["PETREL_SOCKET"]; got != "/run/petrel/petreld.sock" {
		t.Errorf("netmodules-agent.env PETREL_SOCKET = %q, want petreld's default socket", got)
	}

	// network/cni: the plugin named by the config's type sits in the plugins
	// dir, and the config in the config dir.
	cni := envFile(t, filepath.Join(mesos, "cni-agent.env"))
	conf := readJSON(t, filepath.Join(repo, "deploy", "cni", "petrel.conf"))
	typ, _ := conf["type"].(string)
	mustExist(t, dest, filepath.Join(cni["MESOS_NETWORK_CNI_PLUGINS_DIR"], typ), "cni-agent.env plugins dir + petrel.conf type")
	mustExist(t, dest, filepath.Join(cni["MESOS_NETWORK_CNI_CONFIG_DIR"], "petrel.conf"), "cni-agent.env config dir")
	if !strings.Contains(cni["MESOS_ISOLATION"], "network/cni") {
		t.Errorf("cni-agent.env MESOS_ISOLATION = %q, want network/cni", cni["MESOS_ISOLATION"])
	}
	if conf["cniVersion"] != "0.2.0" {
		t.Errorf("petrel.conf cniVersion = %v, want 0.2.0, the version Mesos reads", conf["cniVersion"])
	}

	// systemd units: ExecStart binaries are installed and their flags real.
	bin := binaries(t)
	known := map[string]map[string]bool{
		"petreld":    flagsOf(t, filepath.Join(bin, "petreld")),
		"petrel-dns": flagsOf(t, filepath.Join(bin, "petrel-dns")),
	}
	execStart := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`)
	for _, unit := range []string{"petreld.service", "petrel-dns.service"} {
		path := filepath.Join("/etc/systemd/system", unit)
		mustExist(t, dest, path, "systemd unit")
		b, err := os.ReadFile(filepath.Join(dest, path))
		if err != nil {
			continue
		}
		m := execStart.FindStringSubmatch(string(b))
		if m == nil {
			t.Errorf("%s has no ExecStart", unit)
			continue
		}
		mustExist(t, dest, m[1], unit+" ExecStart")
		name := filepath.Base(m[1])
		for _, f := range usedFlag.FindAllStringSubmatch(m[2], -1) {
			if f := strings.SplitN(f[1], "=", 2)[0]; !known[name][f] {
				t.Errorf("%s: %s has no flag -%s", unit, name, f)
			}
		}
	}
	caps := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`)
	for unit, want := range map[string]string{"petreld.service": "CAP_NET_ADMIN", "petrel-dns.service": "CAP_NET_BIND_SERVICE"} {
		b, err := os.ReadFile(filepath.Join(repo, "deploy", "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		m := caps.FindStringSubmatch(string(b))
		if m == nil || !strings.Contains(m[1], want) {
			t.Errorf("%s: CapabilityBoundingSet = %v, want %s in it", unit, m, want)
		}
		if unit == "petrel-dns.service" && strings.TrimSpace(m[1]) != want {
			t.Errorf("%s: CapabilityBoundingSet = %q, want only %s", unit, m[1], want)
		}
	}
}

func TestBinariesPrintVersion(t *testing.T) {
	dest := installTree(t)
	for _, name := range []string{"petreld", "petrelctl", "petrel-dns", "petrel-netmodules"} {
		out, err := exec.Command(filepath.Join(dest, "usr/local/bin", name), "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), name) {
			t.Errorf("%s --version = %q, %v; want its name and version", name, out, err)
		}
	}
	out, err := exec.Command(filepath.Join(dest, "opt/cni/bin/petrel"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "petrel") {
		t.Errorf("petrel (CNI) --version = %q, %v", out, err)
	}
}
