package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

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
// security setting never goes unnoticed. The toml tags are the keys, in
// exactly this letter case.
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
// the line and the key. source names the document in errors.
func ParseConfig(source string, data []byte) (*Config, error) {
	var (
		c   *Config
		err error
	)
	if len(data) > maxConfigSize {
		// ConfigBody comes in runtime options, unbounded by LoadConfig.
		err = fmt.Errorf("%d bytes, more than the %d allowed", len(data), maxConfigSize)
	} else if c, err = decodeConfig(bytes.TrimPrefix(data, utf8BOM)); err == nil {
		err = c.validate()
	}
	if err != nil {
		return nil, fmt.Errorf("nsiso config %s: %w", specmod.Truncate(source), err)
	}
	return c, nil
}

// decodeConfig decodes a document with go-toml, after checkKeys has held
// it to what Config takes: go-toml alone would match keys in any letter
// case and give some errors no line.
func decodeConfig(data []byte) (*Config, error) {
	if err := goTOML(func() error { return checkKeys(data) }); err != nil {
		return nil, err
	}
	c := &Config{}
	err := goTOML(func() error {
		d := toml.NewDecoder(bytes.NewReader(data))
		d.DisallowUnknownFields()
		return d.Decode(c)
	})
	var de *toml.DecodeError
	switch {
	case errors.As(err, &de):
		line, col := de.Position()
		return nil, fmt.Errorf("line %d, column %d: %s", line, col, oneLine(strings.TrimPrefix(de.Error(), "toml: ")))
	case err != nil:
		return nil, errors.New(oneLine(err.Error()))
	}
	return c, nil
}

// goTOML runs f, which calls go-toml, and turns a panic into an error:
// v2.2.4 panicked on some documents (`"\b"=""`, a date for a boolean), and
// the shim must never die of a config a client sends.
func goTOML(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("not TOML that nsiso reads (the TOML library failed: %s)", oneLine(fmt.Sprint(r)))
		}
	}()
	return f()
}

// checkKeys parses the document with go-toml's parser and holds every
// expression to a key of Config, written exactly as its tag, at the top
// level, set once, with a value of the key's type. A syntax error names
// its line and column.
func checkKeys(data []byte) error {
	var p unstable.Parser
	p.Reset(data)
	seen := map[string]int{}
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.KeyValue && e.Kind != unstable.Table && e.Kind != unstable.ArrayTable {
			continue
		}
		var parts []string
		var last unstable.Range
		line := 0
		for it := e.Key(); it.Next(); {
			k := it.Node()
			parts = append(parts, string(k.Data))
			last = k.Raw
			if line == 0 {
				line = p.Shape(k.Raw).Start.Line
			}
		}
		key := strings.Join(parts, ".")
		want, boolean, ok := keyType(key)
		if !ok || e.Kind != unstable.KeyValue {
			return fmt.Errorf("line %d: unknown key %q (known: %s)", line, specmod.Truncate(key), knownKeys)
		}
		if first, dup := seen[key]; dup {
			return fmt.Errorf("line %d: key %q is set twice (first on line %d)", line, key, first)
		}
		seen[key] = line
		if kind := e.Value().Kind; boolean && kind != unstable.Bool || !boolean && kind != unstable.String {
			return fmt.Errorf("line %d: %s = %s: want %s", line, key, oneLine(valueText(data, last)), want)
		}
	}
	var pe *unstable.ParserError
	if err := p.Error(); errors.As(err, &pe) && pe.Highlight != nil {
		at := p.Shape(p.Range(pe.Highlight)).Start
		return fmt.Errorf("line %d, column %d: %s (in %q)", at.Line, at.Column, oneLine(pe.Message), specmod.Truncate(lineText(data, at.Offset)))
	} else if err != nil {
		return errors.New(oneLine(err.Error()))
	}
	return nil
}

// oneLine is s cut, and escaped when it holds a control character (a
// go-toml message may quote a newline of the document as it is).
func oneLine(s string) string {
	s = specmod.Truncate(s)
	if strings.ContainsFunc(s, unicode.IsControl) {
		q := strconv.Quote(s)
		return q[1 : len(q)-1]
	}
	return s
}

// valueText is the value of a key as written: the rest of the key's line
// after the "=".
func valueText(data []byte, key unstable.Range) string {
	rest := data[key.Offset+key.Length:]
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		rest = rest[:i]
	}
	_, v, _ := bytes.Cut(rest, []byte("="))
	return string(bytes.TrimSpace(v))
}

// lineText is the line of data holding offset, without its blanks.
func lineText(data []byte, offset int) string {
	start := bytes.LastIndexByte(data[:offset], '\n') + 1
	end := len(data)
	if i := bytes.IndexByte(data[offset:], '\n'); i >= 0 {
		end = offset + i
	}
	return string(bytes.TrimSpace(data[start:end]))
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
