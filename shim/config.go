package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"

	"github.com/nsiso/nsiso/internal/beneath"
	"github.com/nsiso/nsiso/specmod"
)

// DefaultConfigPath is read when containerd hands the shim no options.
const DefaultConfigPath = "/etc/containerd/nsiso.toml"

// ConfigPathEnv overrides DefaultConfigPath. containerd passes its own
// environment to shims, so this lets one containerd daemon (a test's, say)
// use its own policy file without touching /etc.
const ConfigPathEnv = "NSISO_CONFIG"

// maxConfigSize bounds the config file: a path handed over in runtime
// options must not make the shim read /dev/zero into memory.
const maxConfigSize = 1 << 20

// Config is the operator's nsiso.toml. Keys are snake_case, like the rest of
// containerd's config, and unknown keys are an error so that a typo in a
// security setting never goes unnoticed. The toml tags name the keys as a
// TOML decoder would map them; the tests hold ParseConfig to one.
type Config struct {
	// BinaryName, Root and SystemdCgroup are passed to runc as runc.v2's
	// options of the same names would be; nil means runc.v2's default.
	BinaryName    *string `toml:"binary_name"`
	Root          *string `toml:"root"`
	SystemdCgroup bool    `toml:"systemd_cgroup"`

	// The node rules; nil means the default, which is true (CIS Docker
	// Benchmark: the host's IPC and PID namespaces are not shared).
	DisallowSharingHostIPCNamespace *bool `toml:"disallow_sharing_host_ipc_namespace"`
	DisallowSharingHostPIDNamespace *bool `toml:"disallow_sharing_host_pid_namespace"`

	// DefaultContainerShmSize sizes a container's own /dev/shm when it does
	// not ask; MaxContainerShmSize caps every /dev/shm a container owns.
	DefaultContainerShmSize string `toml:"default_container_shm_size"`
	MaxContainerShmSize     string `toml:"max_container_shm_size"`
	// MaxContainerSysvShmSize caps the System V shared memory of every IPC
	// namespace a container or pod owns; unset means MaxContainerShmSize.
	MaxContainerSysvShmSize string `toml:"max_container_sysv_shm_size"`

	// ConfigPath and TypeUrl may appear in the options table containerd's
	// CRI plugin hands over whole; they describe the options, not policy.
	ConfigPath string `toml:"ConfigPath"`
	TypeURL    string `toml:"TypeUrl"`

	// policy is the validated policy; see Policy.
	policy specmod.Policy
}

// keyType names what a key holds, for messages about a value of the wrong
// type, and tells whether it is a boolean; ok is false for a key Config
// does not have.
func keyType(key string) (want string, boolean, ok bool) {
	switch key {
	case "binary_name", "TypeUrl":
		return "a quoted string", false, true
	case "root":
		return "a quoted absolute path", false, true
	case "ConfigPath":
		return "a quoted path", false, true
	case "default_container_shm_size":
		return "a quoted size such as \"256Mi\"", false, true
	case "max_container_shm_size", "max_container_sysv_shm_size":
		return "a quoted size such as \"8Gi\"", false, true
	case "systemd_cgroup", "disallow_sharing_host_ipc_namespace", "disallow_sharing_host_pid_namespace":
		return "true or false", true, true
	}
	return "", false, false
}

// knownKeys are the keys an operator writes, for messages about others.
const knownKeys = "binary_name, default_container_shm_size, disallow_sharing_host_ipc_namespace, " +
	"disallow_sharing_host_pid_namespace, max_container_shm_size, max_container_sysv_shm_size, root, systemd_cgroup"

// utf8BOM is what some editors put before a UTF-8 file's first line.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseConfig reads and validates an nsiso.toml document, strictly: an
// unknown key, a table, or a value of the wrong type is an error that names
// the line and the key. where names the source in errors.
func ParseConfig(where string, data []byte) (*Config, error) {
	c, err := decodeConfig(bytes.TrimPrefix(data, utf8BOM))
	if err == nil {
		err = c.validate()
	}
	if err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", specmod.Truncate(where), err)
	}
	return c, nil
}

func decodeConfig(data []byte) (*Config, error) {
	entries, err := parseFlatTOML(data)
	if err != nil {
		return nil, err
	}
	var c Config
	for _, e := range entries {
		want, boolean, ok := keyType(e.key)
		if !ok || e.kind == tomlTable {
			return nil, fmt.Errorf("line %d: unknown key %q (known: %s)", e.line, specmod.Truncate(e.key), knownKeys)
		}
		if boolean && e.kind != tomlBool || !boolean && e.kind != tomlString {
			return nil, fmt.Errorf("line %d: %s = %s: want %s", e.line, e.key, specmod.Truncate(e.raw), want)
		}
		switch e.key {
		case "binary_name":
			c.BinaryName = &e.str
		case "root":
			c.Root = &e.str
		case "systemd_cgroup":
			c.SystemdCgroup = e.b
		case "disallow_sharing_host_ipc_namespace":
			c.DisallowSharingHostIPCNamespace = &e.b
		case "disallow_sharing_host_pid_namespace":
			c.DisallowSharingHostPIDNamespace = &e.b
		case "default_container_shm_size":
			c.DefaultContainerShmSize = e.str
		case "max_container_shm_size":
			c.MaxContainerShmSize = e.str
		case "max_container_sysv_shm_size":
			c.MaxContainerSysvShmSize = e.str
		case "ConfigPath":
			c.ConfigPath = e.str
		case "TypeUrl":
			c.TypeURL = e.str
		}
	}
	return &c, nil
}

// validate checks the config once, one rule per function as runc's config
// validation does, and keeps the policy it yields.
func (c *Config) validate() error {
	for _, check := range []func(*Config) error{validBinaryName, validRoot, validSizes} {
		if err := check(c); err != nil {
			return err
		}
	}
	return nil
}

func validBinaryName(c *Config) error {
	if c.BinaryName != nil && strings.TrimSpace(*c.BinaryName) == "" {
		return errors.New(`binary_name = "": name the runtime binary, or leave the key out for runc`)
	}
	return nil
}

// validRoot insists on an absolute runc root: parents are looked up in it,
// and a relative one would silently resolve against the shim's directory.
func validRoot(c *Config) error {
	if c.Root != nil && !filepath.IsAbs(*c.Root) {
		return fmt.Errorf("root = %q: must be an absolute path (runc's state root, e.g. \"/run/containerd/runc\")", specmod.Truncate(*c.Root))
	}
	return nil
}

func validSizes(c *Config) error {
	p := specmod.Policy{
		DisallowHostIPC: c.DisallowSharingHostIPCNamespace == nil || *c.DisallowSharingHostIPCNamespace,
		DisallowHostPID: c.DisallowSharingHostPIDNamespace == nil || *c.DisallowSharingHostPIDNamespace,
	}
	var err error
	if c.DefaultContainerShmSize != "" {
		if p.DefaultShmSize, err = specmod.ParseSize(c.DefaultContainerShmSize); err != nil {
			return fmt.Errorf("%s = %q: %w", specmod.RuleDefaultShmSize, specmod.Truncate(c.DefaultContainerShmSize), err)
		}
	}
	if c.MaxContainerShmSize != "" {
		if p.MaxShmSize, err = specmod.ParseSize(c.MaxContainerShmSize); err != nil {
			return fmt.Errorf("%s = %q: %w", specmod.RuleMaxShmSize, specmod.Truncate(c.MaxContainerShmSize), err)
		}
	}
	if c.MaxContainerSysvShmSize != "" {
		if p.MaxSysvShmSize, err = specmod.ParseSize(c.MaxContainerSysvShmSize); err != nil {
			return fmt.Errorf("%s = %q: %w", specmod.RuleMaxSysvShmSize, specmod.Truncate(c.MaxContainerSysvShmSize), err)
		}
	}
	// kernel.shmall counts pages of the kernel the shim runs on, which
	// runs its containers.
	p.PageSize = int64(os.Getpagesize())
	if p.MaxShmSize > 0 && p.DefaultShmSize > p.MaxShmSize {
		return fmt.Errorf("%s %q is over %s %q", specmod.RuleDefaultShmSize, specmod.Truncate(c.DefaultContainerShmSize), specmod.RuleMaxShmSize, specmod.Truncate(c.MaxContainerShmSize))
	}
	c.policy = p
	return nil
}

// LoadConfig reads the config file at path, which must be a regular file
// (a FIFO would hang every Create) of at most 1 MiB.
func LoadConfig(path string) (*Config, error) {
	data, err := beneath.ReadRegular(path, maxConfigSize)
	if err != nil {
		// The path may come from a client's runtime options: name it once,
		// cut, rather than through the error, which repeats it whole.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err)
		} else {
			err = withoutPath{strings.TrimPrefix(err.Error(), path+": "), err}
		}
		return nil, fmt.Errorf("nsiso config %q: %w", specmod.Truncate(path), err)
	}
	c, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	if c.ConfigPath != "" {
		// Only containerd's runtime options may point at a config file;
		// one file naming another would be followed by nobody.
		return nil, fmt.Errorf("nsiso config %s: ConfigPath = %q: belongs in containerd's runtime options, not in nsiso.toml", specmod.Truncate(path), specmod.Truncate(c.ConfigPath))
	}
	return c, nil
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
		return ParseConfig("(built-in defaults)", nil)
	}
	return c, err
}

// Policy is the engine's rules, as validated when the config was parsed.
func (c *Config) Policy() specmod.Policy { return c.policy }

// RuncOptions are the options runc.v2's task service needs; it type-asserts
// them, so nsiso's own options are always translated.
func (c *Config) RuncOptions() *options.Options {
	o := &options.Options{SystemdCgroup: c.SystemdCgroup}
	if c.BinaryName != nil {
		o.BinaryName = *c.BinaryName
	}
	if c.Root != nil {
		o.Root = *c.Root
	}
	return o
}

// withoutPath is an error whose message no longer repeats the path it was
// about, which the message around it names, cut.
type withoutPath struct {
	msg string
	err error
}

func (e withoutPath) Error() string { return e.msg }
func (e withoutPath) Unwrap() error { return e.err }
