package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

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

// maxConfigSize bounds the config file: a path handed over in runtime
// options must not make the shim read /dev/zero into memory.
const maxConfigSize = 1 << 20

// Config is the operator's nsiso.toml. Keys are snake_case, like the rest of
// containerd's config, and unknown keys are an error so that a typo in a
// security setting never goes unnoticed.
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

	// ConfigPath and TypeUrl may appear in the options table containerd's
	// CRI plugin hands over whole; they describe the options, not policy.
	ConfigPath string `toml:"ConfigPath"`
	TypeURL    string `toml:"TypeUrl"`

	// policy is the validated policy; see Policy.
	policy specmod.Policy
}

// keyTypes names what each key holds, for messages about a value of the
// wrong type; it lists every key Config decodes.
var keyTypes = map[string]string{
	"binary_name": "a quoted string", "root": "a quoted absolute path", "systemd_cgroup": "true or false",
	"disallow_sharing_host_ipc_namespace": "true or false", "disallow_sharing_host_pid_namespace": "true or false",
	"default_container_shm_size": "a quoted size such as \"256Mi\"", "max_container_shm_size": "a quoted size such as \"8Gi\"",
	"ConfigPath": "a quoted path", "TypeUrl": "a quoted string",
}

// utf8BOM is what some editors put before a UTF-8 file's first line.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseConfig reads and validates an nsiso.toml document. It is decoded
// once, strictly, as containerd decodes its own config; where names the
// source in errors, which name the line and the key.
func ParseConfig(where string, data []byte) (*Config, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	var c Config
	d := toml.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", where, describeTOMLError(data, err))
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", where, err)
	}
	return &c, nil
}

// describeTOMLError turns go-toml's errors, which speak of Go struct
// fields, into ones that name the line, the key and what it should hold.
func describeTOMLError(data []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		row, _ := e.Position()
		return fmt.Errorf("line %d: unknown key %q (known: %s)", row, strings.Join(e.Key(), "."), knownKeys())
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		key, value := lineKeyValue(data, row)
		if want, ok := keyTypes[key]; ok {
			return fmt.Errorf("line %d: %s = %s: want %s", row, key, specmod.Truncate(value), want)
		}
		return fmt.Errorf("line %d, column %d: %s (in %q)", row, col, strings.TrimPrefix(de.Error(), "toml: "), specmod.Truncate(lineText(data, row)))
	}
	// go-toml reports some type mismatches (an array or a table for a
	// scalar) without a position: find the key whose value is of the
	// wrong kind.
	var doc map[string]any
	if toml.Unmarshal(data, &doc) == nil {
		for _, k := range sortedKeys(doc) {
			if want, ok := keyTypes[k]; ok && !kindFits(k, doc[k]) {
				row := keyLine(data, k)
				_, value := lineKeyValue(data, row)
				return fmt.Errorf("line %d: %s = %s: want %s", row, k, specmod.Truncate(value), want)
			}
		}
	}
	return err
}

func kindFits(key string, v any) bool {
	switch keyTypes[key] {
	case "true or false":
		_, ok := v.(bool)
		return ok
	default:
		_, ok := v.(string)
		return ok
	}
}

func knownKeys() string {
	var ks []string
	for k := range keyTypes {
		if k != "ConfigPath" && k != "TypeUrl" {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func lineText(data []byte, row int) string {
	lines := strings.Split(string(data), "\n")
	if row < 1 || row > len(lines) {
		return ""
	}
	return strings.TrimSpace(lines[row-1])
}

// lineKeyValue splits line row into a key and its value as written.
func lineKeyValue(data []byte, row int) (string, string) {
	k, v, _ := strings.Cut(lineText(data, row), "=")
	return strings.Trim(strings.TrimSpace(k), `"`), strings.TrimSpace(v)
}

// keyLine is the line on which key is set, or 0.
func keyLine(data []byte, key string) int {
	for i, l := range strings.Split(string(data), "\n") {
		if k, _, ok := strings.Cut(l, "="); ok && strings.Trim(strings.TrimSpace(k), `"`) == key {
			return i + 1
		}
	}
	return 0
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
			return fmt.Errorf("%s: %w", specmod.RuleDefaultShmSize, err)
		}
	}
	if c.MaxContainerShmSize != "" {
		if p.MaxShmSize, err = specmod.ParseSize(c.MaxContainerShmSize); err != nil {
			return fmt.Errorf("%s: %w", specmod.RuleMaxShmSize, err)
		}
	}
	if p.MaxShmSize > 0 && p.DefaultShmSize > p.MaxShmSize {
		return fmt.Errorf("%s %q is over %s %q", specmod.RuleDefaultShmSize, c.DefaultContainerShmSize, specmod.RuleMaxShmSize, c.MaxContainerShmSize)
	}
	c.policy = p
	return nil
}

// LoadConfig reads the config file at path, which must be a regular file
// (a FIFO would hang every Create) of at most 1 MiB.
func LoadConfig(path string) (*Config, error) {
	data, err := beneath.ReadRegular(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("nsiso config: %w", err)
	}
	c, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	if c.ConfigPath != "" {
		// Only containerd's runtime options may point at a config file;
		// one file naming another would be followed by nobody.
		return nil, fmt.Errorf("nsiso config %s: ConfigPath = %q: belongs in containerd's runtime options, not in nsiso.toml", path, specmod.Truncate(c.ConfigPath))
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
