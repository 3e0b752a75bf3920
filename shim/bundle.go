package shim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/internal/beneath"
)

// bundleSpec is a bundle's config.json with only the parts nsiso reads
// decoded. Everything else is written back byte for byte, so fields newer
// than the runtime-spec version nsiso was built with survive the rewrite.
type bundleSpec struct {
	path string
	// data is config.json as read; it is decoded again, as a whole, only
	// when the rewrite changed something and the file must be written.
	data []byte
	// Spec holds annotations, root, mounts, linux.namespaces and
	// linux.sysctl only.
	Spec specs.Spec
	// What the rewrite may change, as read, to tell whether it did.
	mounts     []specs.Mount
	namespaces []specs.LinuxNamespace
	sysctl     map[string]string
	hadLinux   bool
}

// specHead is the part of config.json nsiso decodes. It is decoded with
// encoding/json into a struct, as runc decodes the whole file, so nsiso
// reads the same values runc will (keys match as runc matches them).
type specHead struct {
	Annotations map[string]string `json:"annotations"`
	Root        *specs.Root       `json:"root"`
	Mounts      []specs.Mount     `json:"mounts"`
	Linux       *struct {
		Namespaces []specs.LinuxNamespace `json:"namespaces"`
		Sysctl     map[string]string      `json:"sysctl"`
	} `json:"linux"`
}

func readBundleSpec(bundle string) (*bundleSpec, error) {
	b := &bundleSpec{path: filepath.Join(bundle, "config.json")}
	var err error
	if b.data, err = beneath.ReadFile(bundle, "config.json", maxSpecSize); err != nil {
		return nil, err
	}
	var h specHead
	if err := json.Unmarshal(b.data, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", b.path, err)
	}
	b.Spec.Annotations, b.Spec.Root, b.Spec.Mounts = h.Annotations, h.Root, h.Mounts
	if h.Linux != nil {
		b.Spec.Linux = &specs.Linux{Namespaces: h.Linux.Namespaces, Sysctl: h.Linux.Sysctl}
	}
	b.snapshot()
	return b, nil
}

// snapshot keeps a copy of the mounts, namespaces and sysctls as read.
func (b *bundleSpec) snapshot() {
	b.mounts = make([]specs.Mount, len(b.Spec.Mounts))
	for i, m := range b.Spec.Mounts {
		m.Options = slices.Clone(m.Options)
		m.UIDMappings = slices.Clone(m.UIDMappings)
		m.GIDMappings = slices.Clone(m.GIDMappings)
		b.mounts[i] = m
	}
	b.hadLinux = b.Spec.Linux != nil
	if b.hadLinux {
		b.namespaces = slices.Clone(b.Spec.Linux.Namespaces)
		b.sysctl = maps.Clone(b.Spec.Linux.Sysctl)
	}
}

// changed tells whether the mounts, namespaces or sysctls differ from those
// read.
func (b *bundleSpec) changed() bool {
	if (b.Spec.Linux != nil) != b.hadLinux || len(b.Spec.Mounts) != len(b.mounts) {
		return true
	}
	if b.Spec.Linux != nil && (!slices.Equal(b.Spec.Linux.Namespaces, b.namespaces) || b.sysctlChanged()) {
		return true
	}
	if len(b.mounts) == 0 {
		return false
	}
	return !reflect.DeepEqual(b.Spec.Mounts, b.mounts)
}

// writeIfChanged stores the rewritten mounts and namespaces, unless the
// rewrite left them as they were, and reports whether it wrote.
// In place, no rename or fsync: nothing reads config.json until runc gets the bundle (docs/performance.md).
func (b *bundleSpec) writeIfChanged() (bool, error) {
	if !b.changed() {
		return false, nil
	}
	return true, b.write()
}

// sysctlChanged tells whether linux.sysctl differs from the one read.
func (b *bundleSpec) sysctlChanged() bool {
	return b.Spec.Linux != nil && ((b.Spec.Linux.Sysctl == nil) != (b.sysctl == nil) || !maps.Equal(b.Spec.Linux.Sysctl, b.sysctl))
}

func (b *bundleSpec) write() error {
	raw, err := ownedObject(b.data, "mounts", "linux")
	if err != nil {
		return fmt.Errorf("%s: %w", b.path, err)
	}
	if raw["mounts"], err = json.Marshal(b.Spec.Mounts); err != nil {
		return err
	}
	if b.Spec.Linux != nil {
		// linux.sysctl is written only when the rewrite changed it, so a
		// spec nsiso leaves it alone in keeps it byte for byte.
		owned := []string{"namespaces"}
		sysctl := b.sysctlChanged()
		if sysctl {
			owned = append(owned, "sysctl")
		}
		linux := map[string]json.RawMessage{}
		if l, ok := raw["linux"]; ok && string(l) != "null" {
			if linux, err = ownedObject(l, owned...); err != nil {
				return fmt.Errorf("%s linux: %w", b.path, err)
			}
		}
		if linux["namespaces"], err = json.Marshal(b.Spec.Linux.Namespaces); err != nil {
			return err
		}
		if sysctl {
			if linux["sysctl"], err = json.Marshal(b.Spec.Linux.Sysctl); err != nil {
				return err
			}
		}
		if raw["linux"], err = json.Marshal(linux); err != nil {
			return err
		}
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	// Over the old content, then cut off what is left of it: truncating
	// to zero first would make ext4 flush the file at close.
	f, err := os.OpenFile(b.path, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ownedObject decodes a JSON object whose keys named owned nsiso rewrites.
// runc decodes config.json with encoding/json, which matches keys
// regardless of case and merges every match into the same field, so a key
// nsiso rewrites must appear once in whatever case, or what runc reads
// would be a mix of nsiso's value and another: more than one is refused,
// and a single one is renamed to its lower-case form, which nsiso writes.
// (What nsiso read is what runc would have read: the same decoding.) The
// object is read in one pass, keys in order with their duplicates, which
// a decoded map cannot tell.
func ownedObject(data []byte, owned ...string) (map[string]json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object (%v)", err)
	}
	m := map[string]json.RawMessage{}
	var keys []string
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("a key of the object is not a string")
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
		keys = append(keys, k)
		m[k] = v
	}
	for _, name := range owned {
		var found []string
		for _, k := range keys {
			if strings.EqualFold(k, name) {
				found = append(found, k)
			}
		}
		switch {
		case len(found) > 1:
			return nil, fmt.Errorf("keys %q all mean %q to runc, which would merge them; refused", found, name)
		case len(found) == 1 && found[0] != name:
			m[name] = m[found[0]]
			delete(m, found[0])
		}
	}
	return m, nil
}
