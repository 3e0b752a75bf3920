package nodeinstall

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// RuntimeType is the containerd runtime nsiso's handlers name (the shim's
// shim.RuntimeName; a test keeps the two equal).
const RuntimeType = "io.containerd.nsiso.v1"

// CRI runtime plugin IDs by config version: version 2 keeps the runtime
// handlers under the CRI gRPC plugin, version 3 (containerd 2.0) moved them
// to a plugin of their own, and version 4 (containerd 2.3) kept that.
const (
	criPluginV2 = "io.containerd.grpc.v1.cri"
	criPluginV3 = "io.containerd.cri.v1.runtime"
)

// criPlugin is the plugin ID holding runtime handlers in a config file of
// the given version.
func criPlugin(version int64) string {
	if version >= 3 {
		return criPluginV3
	}
	return criPluginV2
}

// dropInVersion is the layout the drop-in is written in, whatever the main
// config's version: version 3, which every containerd 2.x loads (2.0 and
// 2.1 refuse 4), and which keeps its handlers wherever it comes in the
// import order. A version 2 drop-in does not: containerd 2.0 and 2.2 lose
// its runtime handlers when a version 3 file was loaded before it (found
// by the compatibility matrix, docs/compatibility.md).
const dropInVersion = 3

// configFile is one file of containerd's config as containerd would load
// it.
type configFile struct {
	Path    string // as the host sees it
	Data    []byte
	Version int64
	Imports []string // as written
	tree    map[string]any
}

// parseConfigFile decodes a containerd config file. containerd decodes
// strictly first and only warns about unknown keys, so a plain decode is
// what decides whether containerd can load the file.
func parseConfigFile(hostPath string, data []byte) (*configFile, error) {
	tree := map[string]any{}
	if err := toml.Unmarshal(data, &tree); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s does not parse as TOML (row %d, column %d): %w", hostPath, row, col, err)
		}
		return nil, fmt.Errorf("%s does not parse as TOML: %w", hostPath, err)
	}
	f := &configFile{Path: hostPath, Data: data, tree: tree}
	if v, ok := tree["version"]; ok {
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("%s: version = %v is not an integer", hostPath, v)
		}
		f.Version = n
	}
	if v, ok := tree["imports"]; ok {
		list, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%s: imports is not an array of strings", hostPath)
		}
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s: imports holds %v, not a path", hostPath, e)
			}
			f.Imports = append(f.Imports, s)
		}
	}
	return f, nil
}

// handlerTable returns the runtime handler table name in this file, if the
// file defines it under either CRI plugin: containerd migrates a version 2
// file's tables to the new plugin and reads the new plugin's tables in any
// file, so both end up merged with the drop-in's.
func (f *configFile) handlerTable(name string) (map[string]any, bool) {
	for _, p := range []string{criPlugin(f.Version), criPluginV3, criPluginV2} {
		if t, ok := dig(f.tree, "plugins", p, "containerd", "runtimes", name); ok {
			if m, ok := t.(map[string]any); ok {
				return m, true
			}
		}
	}
	return nil, false
}

// dig walks nested TOML tables.
func dig(tree map[string]any, keys ...string) (any, bool) {
	var cur any = tree
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// hostFS reads and lists files of the host under its root, resolved as the
// host resolves them (hostRoot).
type hostFS struct {
	root *hostRoot
	// overlay holds files about to be written (host path -> content); they
	// are read and globbed as if they were there already.
	overlay map[string][]byte
}

func (h hostFS) read(hostPath string) ([]byte, error) {
	if data, ok := h.overlay[hostPath]; ok {
		return data, nil
	}
	return h.root.readFile(hostPath, maxConfigSize)
}

// glob matches a host pattern like containerd's loader does (filepath.Glob,
// sorted), including files of the overlay.
func (h hostFS) glob(pattern string) ([]string, error) {
	matches, err := h.root.glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("import %q: %w", pattern, err)
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range matches {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for p := range h.overlay {
		if ok, _ := path.Match(pattern, p); ok && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

// resolveImport turns one import entry into host paths the way containerd's
// resolveImports does: relative to the importing file's directory, globbed
// when it holds a '*'.
func (h hostFS) resolveImport(parent, imp string) ([]string, error) {
	p := filepath.Clean(imp)
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(parent), p)
	}
	if strings.Contains(p, "*") {
		return h.glob(p)
	}
	return []string{p}, nil
}

// configGraph is every file containerd loads for a main config, in the
// order it loads them (breadth first, each file once).
type configGraph struct {
	Main  *configFile
	Files []*configFile
	// Resolved maps a file's path to the host paths each of its imports
	// came to, in order.
	Resolved map[string][][]string
}

// loadGraph reads the config graph of the main config at mainPath. A main
// config that does not exist yields nil: containerd then runs on its
// built-in defaults and reads no drop-in at all.
func loadGraph(h hostFS, mainPath string) (*configGraph, error) {
	g := &configGraph{Resolved: map[string][][]string{}}
	pending := []string{mainPath}
	loaded := map[string]bool{}
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		data, err := h.read(p)
		if err != nil {
			if p == mainPath && errors.Is(err, os.ErrNotExist) {
				return nil, nil
			}
			// containerd fails to start on a missing import, so does this.
			return nil, fmt.Errorf("read containerd config: %w", err)
		}
		f, err := parseConfigFile(p, data)
		if err != nil {
			return nil, err
		}
		loaded[p] = true
		if p == mainPath {
			g.Main = f
		}
		g.Files = append(g.Files, f)
		for _, imp := range f.Imports {
			paths, err := h.resolveImport(p, imp)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			g.Resolved[p] = append(g.Resolved[p], paths)
			pending = append(pending, paths...)
		}
	}
	return g, nil
}

// dropInDirFor returns the drop-in path to use when one of the main
// config's imports is a glob that would pick up a file named name in its
// directory; ok is false when none does.
func dropInDirFor(main *configFile, name string) (string, bool) {
	for _, imp := range main.Imports {
		p := filepath.Clean(imp)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(main.Path), p)
		}
		dir, pat := filepath.Split(p)
		if strings.Contains(dir, "*") || !strings.Contains(pat, "*") {
			continue
		}
		if ok, _ := path.Match(pat, name); ok {
			return filepath.Join(dir, name), true
		}
	}
	return "", false
}
