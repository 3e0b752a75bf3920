package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/internal/beneath"
)

// bundleSpec is a bundle's config.json with only the parts nsiso reads
// decoded. Everything else is written back byte for byte, so fields newer
// than the runtime-spec version nsiso was built with survive the rewrite.
type bundleSpec struct {
	path  string
	mode  os.FileMode
	raw   map[string]json.RawMessage
	linux map[string]json.RawMessage
	// Spec holds annotations, root, mounts and linux.namespaces only.
	Spec specs.Spec
}

func readBundleSpec(bundle string) (*bundleSpec, error) {
	b := &bundleSpec{path: filepath.Join(bundle, "config.json")}
	st, err := os.Stat(b.path)
	if err != nil {
		return nil, err
	}
	b.mode = st.Mode().Perm()
	data, err := beneath.ReadFile(bundle, "config.json", maxSpecSize)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &b.raw); err != nil {
		return nil, fmt.Errorf("%s: %w", b.path, err)
	}
	if err := unmarshalField(b.raw, "annotations", &b.Spec.Annotations); err != nil {
		return nil, err
	}
	if err := unmarshalField(b.raw, "root", &b.Spec.Root); err != nil {
		return nil, err
	}
	if err := unmarshalField(b.raw, "mounts", &b.Spec.Mounts); err != nil {
		return nil, err
	}
	if err := unmarshalField(b.raw, "linux", &b.linux); err != nil {
		return nil, err
	}
	if b.linux != nil {
		b.Spec.Linux = &specs.Linux{}
		if err := unmarshalField(b.linux, "namespaces", &b.Spec.Linux.Namespaces); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func unmarshalField(m map[string]json.RawMessage, key string, v any) error {
	raw, ok := m[key]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("config.json %s: %w", key, err)
	}
	return nil
}

// write stores the rewritten mounts and namespaces. It writes a temporary
// file and renames it over config.json, so runc never reads half a spec.
// There is no fsync, as containerd writes the bundle without one: the
// bundle lives in containerd's state directory, which does not outlive a
// reboot (a tmpfs on a node), and an fsync on a disk costs more than the
// rest of the rewrite together.
func (b *bundleSpec) write() error {
	var err error
	if b.raw["mounts"], err = json.Marshal(b.Spec.Mounts); err != nil {
		return err
	}
	if b.Spec.Linux != nil {
		if b.linux == nil {
			b.linux = map[string]json.RawMessage{}
		}
		if b.linux["namespaces"], err = json.Marshal(b.Spec.Linux.Namespaces); err != nil {
			return err
		}
		if b.raw["linux"], err = json.Marshal(b.linux); err != nil {
			return err
		}
	}
	data, err := json.Marshal(b.raw)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(b.path), ".config.json.nsiso-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(b.mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), b.path)
}
