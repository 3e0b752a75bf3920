package testenv

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// CRIPlugins are the plugin IDs disabled when Options.EnableCRI is false.
// These are the CRI plugins of containerd 2.0 to 2.4 plus NRI, whose only
// consumer is CRI and which would otherwise create /var/run/nri/nri.sock.
// containerd ignores IDs in disabled_plugins that it does not have.
var CRIPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.images",
	"io.containerd.cri.v1.runtime",
	"io.containerd.podsandbox.controller.v1.podsandbox",
	"io.containerd.nri.v1.nri",
}

// configParams are the inputs of renderConfig.
type configParams struct {
	Dir           string
	Address       string
	TTRPCAddress  string
	ShimSocketDir string
	Snapshotter   string
	EnableCRI     bool
	ExtraConfig   string
}

// renderConfig returns a version 3 config.toml. Version 3 is the layout
// containerd 2.0 introduced; 2.0 to 2.2 read it natively and later
// releases (2.4 is at version 4) migrate it in memory, logging a notice,
// so one file serves every 2.x daemon.
//
// Every path a plugin would otherwise take from its compiled-in default
// under /run, /var/lib or /opt is pointed into Dir.
func renderConfig(p configParams) (string, error) {
	plugins := map[string]any{
		// Default /opt/containerd, created at start-up.
		"io.containerd.internal.v1.opt": map[string]any{
			"path": filepath.Join(p.Dir, "opt"),
		},
		// Default /opt/containerd/image-verifier/bin.
		"io.containerd.image-verifier.v1.bindir": map[string]any{
			"bin_dir": filepath.Join(p.Dir, "image-verifier", "bin"),
		},
		// Default /run/containerd/s. containerd 2.2 and older does not
		// know the key and only logs that it ignores it.
		"io.containerd.shim.v1.manager": map[string]any{
			"socket_dir": p.ShimSocketDir,
		},
	}
	cfg := map[string]any{
		"version": int64(3),
		"root":    filepath.Join(p.Dir, "root"),
		"state":   filepath.Join(p.Dir, "state"),
		"temp":    filepath.Join(p.Dir, "tmp"),
		"grpc": map[string]any{
			"address": p.Address,
		},
		"ttrpc": map[string]any{
			"address": p.TTRPCAddress,
		},
		// An empty address keeps the debug socket closed.
		"debug": map[string]any{
			"address": "",
		},
		"metrics": map[string]any{
			"address": "",
		},
		"plugins": plugins,
	}
	if p.EnableCRI {
		plugins["io.containerd.nri.v1.nri"] = map[string]any{
			"socket_path":        filepath.Join(p.Dir, "nri", "nri.sock"),
			"plugin_path":        filepath.Join(p.Dir, "nri", "plugins"),
			"plugin_config_path": filepath.Join(p.Dir, "nri", "conf.d"),
		}
		if p.Snapshotter != "" {
			plugins["io.containerd.cri.v1.images"] = map[string]any{
				"snapshotter": p.Snapshotter,
			}
		}
	} else {
		disabled := make([]any, len(CRIPlugins))
		for i, id := range CRIPlugins {
			disabled[i] = id
		}
		cfg["disabled_plugins"] = disabled
	}

	if p.ExtraConfig != "" {
		var extra map[string]any
		if err := toml.Unmarshal([]byte(p.ExtraConfig), &extra); err != nil {
			return "", fmt.Errorf("parse ExtraConfig: %w", err)
		}
		mergeTOML(cfg, extra)
	}

	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(true)
	if err := enc.Encode(cfg); err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	return buf.String(), nil
}

// mergeTOML merges src into dst: tables are merged recursively, any other
// value in src replaces the one in dst.
func mergeTOML(dst, src map[string]any) {
	for k, v := range src {
		sv, sok := v.(map[string]any)
		dv, dok := dst[k].(map[string]any)
		if sok && dok {
			mergeTOML(dv, sv)
			continue
		}
		dst[k] = v
	}
}

// importsConfig is a config that only imports files, in order.
func importsConfig(files []string) string {
	var b strings.Builder
	b.WriteString("version = 3\nimports = [")
	for i, f := range files {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(f))
	}
	b.WriteString("]\n")
	return b.String()
}
