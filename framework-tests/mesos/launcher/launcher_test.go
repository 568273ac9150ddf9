package launcher

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readApp(t *testing.T, name string) *App {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "marathon", name))
	if err != nil {
		t.Fatal(err)
	}
	app, err := ParseApp(data)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func TestIPAddressForm(t *testing.T) {
	app := readApp(t, "web-ipaddress.json")
	three, web := "3A", "web"
	want := []NetworkInfo{{
		IPAddresses: []IPAddress{{}},
		Groups:      []string{"frontend", "public"},
		Labels:      &Labels{Labels: []Label{{Key: "rack", Value: &three}, {Key: "tier", Value: &web}}},
	}}
	if diff := cmp.Diff(want, app.NetworkInfos()); diff != "" {
		t.Errorf("NetworkInfos (-want +got):\n%s", diff)
	}
	if got := app.DiscoveryPorts(); len(got) != 1 || got[0].Number != 80 || got[0].Name != "http" {
		t.Errorf("got discovery ports %v, want http/80", got)
	}
}

func TestNetworksFormAndMesosConfig(t *testing.T) {
	app := readApp(t, "web-networks.json")
	infos := app.NetworkInfos()
	if len(infos) != 1 {
		t.Fatalf("got %d NetworkInfos, want 1", len(infos))
	}
	c := &CNI{Config: []byte(`{"type":"petrel","name":"petrel","cniVersion":"0.2.0"}`)}
	got, err := c.MesosConfig(&infos[0])
	if err != nil {
		t.Fatal(err)
	}
	// Compact, keys sorted, network_info under the single key
	// "org.apache.mesos": what Mesos >= 1.4 writes to network.conf.
	want := `{"args":{"org.apache.mesos":{"network_info":{"ip_addresses":[{"protocol":"IPv4"}],"labels":{"labels":[{"key":"rack","value":"3A"},{"key":"tier","value":"web"}]},"name":"petrel","port_mappings":[{"container_port":80,"host_port":31000,"protocol":"tcp"}]}}},"cniVersion":"0.2.0","name":"petrel","type":"petrel"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	c.Config = []byte(`{"name":"n","type":"petrel","args":{"org.apache.mesos":{}}}`)
	if _, err := c.MesosConfig(&infos[0]); err == nil {
		t.Error("a config that sets args[\"org.apache.mesos\"] was accepted; Mesos rejects it")
	}
}
