package nodeinstall

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Exit codes of the commands.
const (
	ExitOK    = 0
	ExitError = 1 // refused or failed; the reason is on stderr
	ExitUsage = 2
)

// handlerName is what a RuntimeClass handler may be: a DNS label.
var handlerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// labelKey is a Kubernetes label key: an optional DNS prefix and a name.
var labelKey = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

type handlerList []string

func (l *handlerList) String() string { return strings.Join(*l, ",") }
func (l *handlerList) Set(v string) error {
	if !handlerName.MatchString(v) {
		return fmt.Errorf("%q is not a runtime handler name (a DNS label: a-z, 0-9, '-')", v)
	}
	for _, h := range *l {
		if h == v {
			return nil
		}
	}
	*l = append(*l, v)
	return nil
}

const installUsage = `Usage: nsiso install [flags]

Puts containerd-shim-nsiso-v1 in <root><bin-dir>, writes <root>/etc/containerd/nsiso.toml
with the documented defaults if it is absent, and registers the CRI runtime
handler(s) in a drop-in that containerd's config imports (adding the import
to the config when it has no drop-in directory). The result is checked with
the node's own "containerd config dump" before anything is written. Running
it again changes nothing; "nsiso uninstall" takes it all back.

Flags:
`

const uninstallUsage = `Usage: nsiso uninstall [flags]

Removes what "nsiso install" added (by its record, <root>/var/lib/nsiso/install.json)
and restores every file it edited byte for byte. Refuses while nsiso shims
serve containerd, unless --force.

Flags:
`

// ParseFlags parses the flags of install (uninstall=false) or uninstall.
// Manifests that run the installer are checked against this parser.
func ParseFlags(uninstall bool, args []string, stderr io.Writer) (Options, error) {
	name, usage := "install", installUsage
	if uninstall {
		name, usage = "uninstall", uninstallUsage
	}
	fs := flag.NewFlagSet("nsiso "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	o := Options{Stdout: os.Stdout}
	var handlers handlerList
	fs.StringVar(&o.Root, "root", "/", "the host's root directory: every path below is resolved inside it, as the host resolves it")
	fs.BoolVar(&o.Restart, "restart", false, "restart containerd and wait until its CRI reports (install) or no longer reports (uninstall) the handlers")
	fs.StringVar(&o.RestartCommand, "restart-command", "", "restart containerd with this sh command instead of its systemd unit")
	fs.StringVar(&o.Unit, "systemd-unit", DefaultUnit, "containerd's systemd unit")
	fs.StringVar(&o.Address, "address", DefaultAddress, "containerd's socket, as the host sees it (for the CRI check after --restart)")
	fs.DurationVar(&o.Timeout, "timeout", DefaultTimeout, "how long to wait for containerd's CRI after --restart")
	fs.StringVar(&o.KubeNode, "kube-node", "", "from a pod: label this Kubernetes node (install: after the handler is up; uninstall: first)")
	fs.StringVar(&o.NodeLabel, "node-label", DefaultNodeLabel, "the node label key=value a RuntimeClass selects on")
	if uninstall {
		fs.BoolVar(&o.Force, "force", false, "uninstall even while nsiso shims run, and remove files changed since install")
	} else {
		fs.StringVar(&o.Config, "config", DefaultConfig, "containerd's config, as the host sees it (absent: containerd's defaults)")
		fs.Var(&handlers, "handler", "a CRI runtime handler name to register; repeat for several (default "+DefaultHandler+")")
		fs.StringVar(&o.Shim, "shim", "", "the shim binary to install (default: "+ShimName+" next to this nsiso)")
		fs.StringVar(&o.BinDir, "bin-dir", DefaultBinDir, "where the shim goes, as the host sees it; elsewhere than "+DefaultBinDir+" the handlers name it with runtime_path")
		fs.StringVar(&o.Policy, "nsiso-config", DefaultPolicy, "nsiso.toml, as the host sees it: written if absent, named by the handlers' ConfigPath")
		fs.StringVar(&o.Containerd, "containerd", "", "the containerd binary that checks the result (default: the host's, run inside --root; else containerd's config loader)")
	}
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return Options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(handlers) == 0 {
		handlers = handlerList{DefaultHandler}
	}
	o.Handlers = handlers
	var err error
	if o.Root, err = filepath.Abs(o.Root); err != nil {
		return Options{}, err
	}
	for _, p := range []struct{ flag, val string }{{"config", o.Config}, {"bin-dir", o.BinDir}, {"nsiso-config", o.Policy}, {"address", o.Address}} {
		if !uninstall || p.flag == "address" {
			if !filepath.IsAbs(p.val) {
				return Options{}, fmt.Errorf("--%s %q: a path as the host sees it must be absolute", p.flag, p.val)
			}
		}
	}
	if k, _, ok := strings.Cut(o.NodeLabel, "="); !ok || !labelKey.MatchString(k) {
		return Options{}, fmt.Errorf("--node-label %q: want key=value", o.NodeLabel)
	}
	if !uninstall && o.Shim == "" {
		exe, err := os.Executable()
		if err != nil {
			return Options{}, fmt.Errorf("find the shim next to nsiso: %w", err)
		}
		o.Shim = filepath.Join(filepath.Dir(exe), ShimName)
	}
	return o, nil
}

// Main runs `nsiso install` (uninstall=false) or `nsiso uninstall` and
// returns the exit code.
func Main(ctx context.Context, uninstall bool, args []string, stdout, stderr io.Writer) int {
	name := "install"
	if uninstall {
		name = "uninstall"
	}
	o, err := ParseFlags(uninstall, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsiso %s: %v\n", name, err)
		return ExitUsage
	}
	o.Stdout = stdout
	if uninstall {
		err = Uninstall(ctx, o)
	} else {
		err = Install(ctx, o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsiso %s: %v\n", name, err)
		return ExitError
	}
	return ExitOK
}
