package shim

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/pelletier/go-toml/v2"

	"github.com/nsiso/nsiso/internal/beneath"
	"github.com/nsiso/nsiso/specmod"
)

// DefaultConfigPath is read when containerd hands the shim no options.
const DefaultConfigPath = "/etc/containerd/nsiso.toml"

// ConfigPathEnv overrides DefaultConfigPath. containerd passes its own
// environment to shims, so this lets one containerd daemon (a test's, say)
// use its own policy file without touching /etc.
const ConfigPathEnv = "NSISO_CONFIG"

// Config is the operator's nsiso.toml. Keys are snake_case, like the rest of
// containerd's config, and unknown keys are an error so that a typo in a
// security setting never goes unnoticed.
type Config struct {
	// BinaryName, Root and SystemdCgroup are passed to runc as
	// runc.v2's options of the same names would be.
	BinaryName    string `toml:"binary_name"`
	Root          string `toml:"root"`
	SystemdCgroup bool   `toml:"systemd_cgroup"`

	// The node rules; nil means the default, which is true (CIS Docker
	// Benchmark: the host's IPC and PID namespaces are not shared).
	DisallowSharingHostIPCNamespace *bool `toml:"disallow_sharing_host_ipc_namespace"`
	DisallowSharingHostPIDNamespace *bool `toml:"disallow_sharing_host_pid_namespace"`

	// DefaultContainerShmSize sizes a container's own /dev/shm when it does
	// not ask; MaxContainerShmSize caps what it may ask for.
	DefaultContainerShmSize string `toml:"default_container_shm_size"`
	MaxContainerShmSize     string `toml:"max_container_shm_size"`

	// ConfigPath and TypeUrl may appear in the options table containerd's
	// CRI plugin hands over whole; they describe the options, not policy.
	ConfigPath string `toml:"ConfigPath"`
	TypeURL    string `toml:"TypeUrl"`
}

// ParseConfig reads an nsiso.toml document. Where names the source in
// errors, which name the line and the key.
func ParseConfig(where string, data []byte) (*Config, error) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			return nil, fmt.Errorf("nsiso config %s: line %d: %w", where, row, err)
		}
		return nil, fmt.Errorf("nsiso config %s: %w", where, err)
	}
	if err := checkKeys(doc); err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", where, err)
	}
	var c Config
	if err := toml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", where, err)
	}
	if _, err := c.Policy(); err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", where, err)
	}
	return &c, nil
}

// checkKeys rejects unknown keys and values of the wrong kind with the key's
// name, which the TOML decoder's own errors give only as a Go field.
func checkKeys(doc map[string]any) error {
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t := reflect.TypeOf(Config{})
	for _, k := range keys {
		f, ok := fieldByTag(t, k)
		if !ok {
			return fmt.Errorf("unknown key %q", k)
		}
		kind := f.Type.Kind()
		if kind == reflect.Pointer {
			kind = f.Type.Elem().Kind()
		}
		if got := reflect.ValueOf(doc[k]).Kind(); got != kind {
			return fmt.Errorf("key %q: want a %s, got %#v", k, kindName(kind), doc[k])
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("toml") == tag {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func kindName(k reflect.Kind) string {
	if k == reflect.Bool {
		return "boolean (true or false)"
	}
	return "quoted string"
}

// maxConfigSize bounds the config file: a path handed over in runtime
// options must not make the shim read /dev/zero into memory.
const maxConfigSize = 1 << 20

// LoadConfig reads the config file at path, which must be a regular file
// (a FIFO would hang every Create) of at most 1 MiB.
func LoadConfig(path string) (*Config, error) {
	data, err := beneath.ReadRegular(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("nsiso config: %w", err)
	}
	return ParseConfig(path, data)
}

// LoadDefaultConfig reads $NSISO_CONFIG or /etc/containerd/nsiso.toml, and
// falls back to the built-in defaults when the file does not exist.
func LoadDefaultConfig() (*Config, error) {
	path := os.Getenv(ConfigPathEnv)
	explicit := path != ""
	if !explicit {
		path = DefaultConfigPath
	}
	c, err := LoadConfig(path)
	if err != nil && !explicit && errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	return c, err
}

// Policy turns the config into the engine's rules.
func (c *Config) Policy() (specmod.Policy, error) {
	p := specmod.Policy{
		DisallowHostIPC: c.DisallowSharingHostIPCNamespace == nil || *c.DisallowSharingHostIPCNamespace,
		DisallowHostPID: c.DisallowSharingHostPIDNamespace == nil || *c.DisallowSharingHostPIDNamespace,
	}
	var err error
	if c.DefaultContainerShmSize != "" {
		if p.DefaultShmSize, err = specmod.ParseSize(c.DefaultContainerShmSize); err != nil {
			return p, fmt.Errorf("default_container_shm_size: %w", err)
		}
	}
	if c.MaxContainerShmSize != "" {
		if p.MaxShmSize, err = specmod.ParseSize(c.MaxContainerShmSize); err != nil {
			return p, fmt.Errorf("max_container_shm_size: %w", err)
		}
	}
	if p.MaxShmSize > 0 && p.DefaultShmSize > p.MaxShmSize {
		return p, fmt.Errorf("default_container_shm_size %q is over max_container_shm_size %q", c.DefaultContainerShmSize, c.MaxContainerShmSize)
	}
	return p, nil
}

// RuncOptions are the options runc.v2's task service needs; it type-asserts
// them, so nsiso's own options are always translated.
func (c *Config) RuncOptions() *options.Options {
	return &options.Options{BinaryName: c.BinaryName, Root: c.Root, SystemdCgroup: c.SystemdCgroup}
}
