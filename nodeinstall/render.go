package nodeinstall

import (
	"fmt"
	"strings"
)

// renderDropIn returns the containerd config file that defines the CRI
// runtime handlers, in config layout version (2 or 3). runtimePath is set
// only when the shim is not where containerd looks for it by name.
func renderDropIn(version int64, handlers []string, configPath, runtimePath string) []byte {
	plugin := criPlugin(version)
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `nsiso install`; `nsiso uninstall` removes it. Changes are\n")
	fmt.Fprintf(&b, "# overwritten by the next install: nsiso's policy lives in %s.\n", configPath)
	fmt.Fprintf(&b, "version = %d\n", version)
	for _, h := range handlers {
		table := fmt.Sprintf("plugins.%s.containerd.runtimes.%s", tomlString(plugin), tomlKey(h))
		fmt.Fprintf(&b, "\n[%s]\n", table)
		fmt.Fprintf(&b, "  runtime_type = %s\n", tomlString(RuntimeType))
		if runtimePath != "" {
			fmt.Fprintf(&b, "  runtime_path = %s\n", tomlString(runtimePath))
		}
		fmt.Fprintf(&b, "  pod_annotations = [\"nsiso/*\"]\n")
		fmt.Fprintf(&b, "  container_annotations = [\"nsiso/*\"]\n")
		fmt.Fprintf(&b, "  [%s.options]\n", table)
		fmt.Fprintf(&b, "    ConfigPath = %s\n", tomlString(configPath))
	}
	return []byte(b.String())
}

// tomlKey quotes a key unless it is a bare key.
func tomlKey(k string) string {
	bare := k != ""
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			bare = false
		}
	}
	if bare {
		return k
	}
	return tomlString(k)
}

// renderMainConfig is the config.toml written when the node has none:
// containerd's built-in defaults, which read no drop-in directory, plus the
// one import of the drop-in.
func renderMainConfig(dropIn string) []byte {
	return []byte("# Written by `nsiso install` because there was no containerd config;\n" +
		"# `nsiso uninstall` removes it. Everything not set here is containerd's default.\n" +
		"version = 3\n" +
		"imports = [" + tomlString(dropIn) + "]\n")
}

// nsisoDefaults is nsiso.toml as install writes it when absent: the
// documented defaults (docs/config.md, examples/nsiso.toml), with the sizes that
// have no default left commented out.
const nsisoDefaults = `# nsiso's policy for this node (written by ` + "`nsiso install`" + ` only because the
# file was absent; it is never overwritten, and uninstall removes it only when
# it is unchanged). Every key is optional; these are the defaults. See
# https://github.com/nsiso/nsiso#configuration-nsisotoml

# Refuse any container whose final spec shares the host's IPC namespace or
# binds the host's /dev/shm (CIS Docker Benchmark 5.16), and the same for the
# host's PID namespace (5.15).
disallow_sharing_host_ipc_namespace = true
disallow_sharing_host_pid_namespace = true

# Size of a container's own /dev/shm, and of a pod's, when it does not ask
# with nsiso/shm-size. Unset: the client's size (containerd: 64Mi).
# default_container_shm_size = "256Mi"

# The largest /dev/shm a container or pod may ask for. Unset: no cap.
# max_container_shm_size = "8Gi"
`

// nsisoSystemdCgroup follows the defaults when containerd's default
// runtime uses the systemd cgroup driver (see usesSystemdCgroup).
const nsisoSystemdCgroup = `
# containerd's default runtime uses runc's systemd cgroup driver on this
# node, so kubelet gives containers systemd cgroup paths; nsiso's runc uses
# the same driver.
systemd_cgroup = true
`
