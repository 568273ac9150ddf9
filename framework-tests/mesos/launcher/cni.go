package launcher

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types020 "github.com/containernetworking/cni/pkg/types/020"
)

// CNI runs the network/cni isolator's calls through libcni.
type CNI struct {
	// PluginDirs is --network_cni_plugins_dir (also CNI_PATH).
	PluginDirs []string
	// CacheDir is libcni's result cache (a temp dir in tests).
	CacheDir string
	// Config is the network config file as found in --network_cni_config_dir.
	Config []byte
}

// MesosConfig returns the stdin Mesos gives the plugin: the config file with
// args["org.apache.mesos"] = {"network_info": ni}, re-serialised compact with
// sorted keys.
// A nil ni leaves args alone (GC and STATUS carry no container).
func (c *CNI) MesosConfig(ni *NetworkInfo) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(c.Config, &m); err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	args, _ := m["args"].(map[string]any)
	if args == nil {
		args = map[string]any{}
	}
	if _, ok := args["org.apache.mesos"]; ok {
		return nil, fmt.Errorf("'org.apache.mesos' in 'args' should not be set in CNI network configuration file. It is reserved by Mesos")
	}
	if ni == nil {
		return json.Marshal(m)
	}
	raw, err := json.Marshal(ni)
	if err != nil {
		return nil, err
	}
	var niObj any
	_ = json.Unmarshal(raw, &niObj)
	args["org.apache.mesos"] = map[string]any{"network_info": niObj}
	m["args"] = args
	return json.Marshal(m) // map keys come out sorted, like stout's JSON::Object
}

func (c *CNI) list(ni *NetworkInfo) (*libcni.NetworkConfigList, error) {
	conf, err := c.MesosConfig(ni)
	if err != nil {
		return nil, err
	}
	pc, err := libcni.ConfFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("parse network config: %w", err)
	}
	return libcni.ConfListFromConf(pc)
}

func (c *CNI) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(c.PluginDirs, c.CacheDir, nil)
}

// Attach is the isolator's ADD for one network: CNI_IFNAME ifname, CNI_NETNS
// the bind-mounted namespace. It returns the result as the 0.2.0 form Mesos
// parses.
func (c *CNI) Attach(ctx context.Context, containerID, netns, ifname string, ni NetworkInfo) (*types020.Result, error) {
	l, err := c.list(&ni)
	if err != nil {
		return nil, err
	}
	res, err := c.cni().AddNetworkList(ctx, l, &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifname})
	if err != nil {
		return nil, err
	}
	return types020.GetResult(res)
}

// Detach is the isolator's DEL; netns may be "" (after a reboot).
func (c *CNI) Detach(ctx context.Context, containerID, netns, ifname string, ni NetworkInfo) error {
	l, err := c.list(&ni)
	if err != nil {
		return err
	}
	return c.cni().DelNetworkList(ctx, l, &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifname})
}

// Check runs CHECK (configs of version 0.4.0 and later).
func (c *CNI) Check(ctx context.Context, containerID, netns, ifname string, ni NetworkInfo) error {
	l, err := c.list(&ni)
	if err != nil {
		return err
	}
	return c.cni().CheckNetworkList(ctx, l, &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifname})
}

// GC runs GC with the given valid attachments (configs of version 1.1.0).
func (c *CNI) GC(ctx context.Context, valid []types.GCAttachment) error {
	l, err := c.list(nil)
	if err != nil {
		return err
	}
	return c.cni().GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: valid})
}

// Status runs STATUS (configs of version 1.1.0).
func (c *CNI) Status(ctx context.Context) error {
	l, err := c.list(nil)
	if err != nil {
		return err
	}
	return c.cni().GetStatusNetworkList(ctx, l)
}
