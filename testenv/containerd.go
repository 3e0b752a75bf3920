package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Snapshotter names accepted in Options.Snapshotter.
const (
	SnapshotterOverlayfs = "overlayfs"
	SnapshotterNative    = "native"
)

const (
	defaultStartTimeout = 30 * time.Second
	stopGracePeriod     = 10 * time.Second
	// maxUnixPathLen is sun_path (108) minus the terminating NUL.
	maxUnixPathLen = 107
	// maxShimSocketDirLen is containerd's own limit for socket_dir: the
	// shim socket is <dir>/<64 hex digits> and must fit in sun_path.
	maxShimSocketDirLen = 42
)

// Options configures StartContainerd.
type Options struct {
	// Binary is the containerd executable (required).
	Binary string
	// Dir holds everything the daemon writes: root, state, sockets, the
	// config and by default the log. It is created if missing and removed
	// by Stop. Empty means a fresh directory under os.TempDir(). Keep it
	// short: the sockets inside must fit in a unix socket path.
	Dir string
	// PathPrepend lists directories put first on the daemon's PATH, which
	// the shims inherit; this is how containerd finds
	// containerd-shim-runc-v2 and containerd-shim-nsiso-v1, and how those
	// find runc.
	PathPrepend []string
	// Env are extra KEY=VALUE variables for the daemon (and so the shims);
	// they replace inherited variables of the same name.
	Env []string
	// EnableCRI keeps the CRI plugins. They are disabled by default because
	// they slow start-up and nothing but kubelet-style tests need them.
	EnableCRI bool
	// ExtraConfig is TOML merged over the generated config: tables merge
	// key by key, any other value replaces the generated one. It must use
	// the config layout of the generated file (version 3).
	ExtraConfig string
	// ConfigImports are config files of any version for the daemon to load
	// the way it loads a node's config and its drop-ins. The daemon's
	// config then only imports them and, last, the generated settings, so
	// that this daemon's own paths win over the paths in those files.
	// Their own imports are loaded after all of that, as containerd loads
	// imports breadth first.
	ConfigImports []string
	// LogPath receives the daemon's output. Empty means <Dir>/containerd.log,
	// which Stop deletes with Dir; set it outside Dir to keep the log.
	LogPath string
	// LogLevel is passed as --log-level; empty means "info". At "debug"
	// containerd also starts shims in debug mode.
	LogLevel string
	// Snapshotter is the snapshotter to use. Empty means overlayfs when an
	// overlay mount works in Dir, else native.
	Snapshotter string
	// Ctr is the ctr executable used by Containerd.Ctr; empty means the
	// ctr next to Binary.
	Ctr string
	// StartTimeout bounds the wait for the daemon to serve; zero means 30s.
	StartTimeout time.Duration
}

// Containerd is a private containerd daemon started by StartContainerd.
type Containerd struct {
	dir          string
	address      string
	ttrpcAddress string
	configPath   string
	logPath      string
	fifoDir      string
	shimSockDir  string // only set when it lives outside dir
	snapshotter  string
	version      string
	ctr          string

	proc         *Process
	args         []string // the daemon's command line, for Restart
	env          []string
	startTimeout time.Duration
	client       *client.Client
	serving      bool // answered once; otherwise Stop skips the API clean-up

	namespaces []string // seen at Stop, for cgroup cleanup

	stopOnce sync.Once
	stopErr  error
}

// StartContainerd writes a config for a daemon confined to opts.Dir, starts
// containerd with it and waits until it serves requests. The daemon uses
// no path of a system containerd (/run/containerd, /var/lib/containerd,
// /opt/containerd, the NRI socket), so it can run next to one. The one
// exception is containerd without the socket_dir option (2.2 and older)
// and shims built with its shim library, which always put shim sockets in
// /run/containerd/s; those are
// named by a hash that includes this daemon's socket path, so they cannot
// collide, and Stop removes any a killed shim leaves behind.
//
// On error everything started or created is cleaned up again.
func StartContainerd(ctx context.Context, opts Options) (_ *Containerd, retErr error) {
	if opts.Binary == "" {
		return nil, errors.New("start containerd: Options.Binary is empty")
	}
	binary, version, err := containerdBinary(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	dir, err := daemonDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	c := newContainerd(dir, binary, version, opts)
	defer func() {
		if retErr != nil {
			_ = c.Stop()
		}
	}()
	shimSockDir, err := c.makeDirs()
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	c.snapshotter = opts.Snapshotter
	if c.snapshotter == "" {
		c.snapshotter = SnapshotterNative
		if err := probeOverlay(dir); err == nil {
			c.snapshotter = SnapshotterOverlayfs
		}
	}
	if err := c.writeConfig(opts, shimSockDir); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if err := c.launch(ctx); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	c.serving = true
	return c, nil
}

// containerdBinary resolves the daemon's executable and checks that it is
// containerd 2.x.
func containerdBinary(path string) (binary, version string, err error) {
	if binary, err = filepath.Abs(path); err != nil {
		return "", "", err
	}
	if version, err = ContainerdVersion(binary); err != nil {
		return "", "", err
	}
	if major, _, _ := majorMinor(version); major < 2 {
		return "", "", fmt.Errorf("%s is containerd %s; only 2.x is supported", binary, version)
	}
	return binary, version, nil
}

// daemonDir creates the daemon's directory (a fresh one when dir is
// empty) and returns its real path: mount points in /proc/self/mountinfo
// are real paths, and cleanup matches on them.
func daemonDir(dir string) (string, error) {
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "nsiso-ctd-")
	} else {
		err = os.MkdirAll(dir, 0o711)
	}
	if err != nil {
		return "", fmt.Errorf("create dir: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(dir)
}

// newContainerd lays out the daemon's paths in dir and its command line.
func newContainerd(dir, binary, version string, opts Options) *Containerd {
	c := &Containerd{
		dir:          dir,
		address:      filepath.Join(dir, "containerd.sock"),
		ttrpcAddress: filepath.Join(dir, "containerd.sock.ttrpc"),
		configPath:   filepath.Join(dir, "config.toml"),
		logPath:      opts.LogPath,
		fifoDir:      filepath.Join(dir, "fifo"),
		version:      version,
		ctr:          opts.Ctr,
		startTimeout: opts.StartTimeout,
	}
	if c.logPath == "" {
		c.logPath = filepath.Join(dir, "containerd.log")
	}
	if c.ctr == "" {
		c.ctr = filepath.Join(filepath.Dir(binary), "ctr")
	}
	if c.startTimeout == 0 {
		c.startTimeout = defaultStartTimeout
	}
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "info"
	}
	c.args = []string{binary, "--config", c.configPath, "--log-level", logLevel}
	c.env = daemonEnv(os.Environ(), opts.PathPrepend, opts.Env)
	return c
}

// makeDirs checks that the sockets fit in a unix socket path and creates
// the shim socket and FIFO directories; it returns the shim socket
// directory, which is outside dir when dir's is too long for containerd.
func (c *Containerd) makeDirs() (string, error) {
	if len(c.ttrpcAddress) > maxUnixPathLen {
		return "", fmt.Errorf("socket path %s is longer than %d bytes; use a shorter Dir", c.ttrpcAddress, maxUnixPathLen)
	}
	shimSockDir := filepath.Join(c.dir, "s")
	if len(shimSockDir) > maxShimSocketDirLen {
		var err error
		if shimSockDir, err = os.MkdirTemp("/tmp", "nsiso-s-"); err != nil {
			return "", fmt.Errorf("shim socket dir: %w", err)
		}
		c.shimSockDir = shimSockDir
	}
	if err := os.MkdirAll(shimSockDir, 0o700); err != nil {
		return "", fmt.Errorf("shim socket dir: %w", err)
	}
	if err := os.MkdirAll(c.fifoDir, 0o700); err != nil {
		return "", fmt.Errorf("fifo dir: %w", err)
	}
	return shimSockDir, nil
}

// writeConfig writes the daemon's config: the generated one, or, with
// ConfigImports, one that imports those files and the generated one last.
func (c *Containerd) writeConfig(opts Options, shimSockDir string) error {
	cfg, err := renderConfig(configParams{
		Dir:           c.dir,
		Address:       c.address,
		TTRPCAddress:  c.ttrpcAddress,
		ShimSocketDir: shimSockDir,
		Snapshotter:   c.snapshotter,
		EnableCRI:     opts.EnableCRI,
		ExtraConfig:   opts.ExtraConfig,
	})
	if err != nil {
		return err
	}
	if len(opts.ConfigImports) > 0 {
		generated := filepath.Join(c.dir, "generated.toml")
		if err := os.WriteFile(generated, []byte(cfg), 0o600); err != nil {
			return fmt.Errorf("write config: %w", err)
		}
		cfg = importsConfig(append(append([]string{}, opts.ConfigImports...), generated))
	}
	if err := os.WriteFile(c.configPath, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// launch starts the daemon process and waits until it serves.
func (c *Containerd) launch(ctx context.Context) error {
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(c.args[0], c.args[1:]...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	proc, err := StartProcess(cmd)
	if err != nil {
		return err
	}
	c.proc = proc
	if err := c.waitServing(ctx, c.startTimeout); err != nil {
		return fmt.Errorf("%w\n%s", err, c.logTail())
	}
	return nil
}

// Restart stops the daemon with SIGTERM, as a service manager would, and
// starts it again with the same command line, so it rereads its config
// (and the files that config imports). Running tasks are left alone: their
// shims outlive the daemon and the new daemon reconnects to them. After
// Kill it only starts the daemon again.
func (c *Containerd) Restart(ctx context.Context) error {
	if c.proc == nil {
		return errors.New("restart containerd: not running")
	}
	c.proc.Stop(stopGracePeriod)
	if err := c.launch(ctx); err != nil {
		return fmt.Errorf("restart containerd: %w", err)
	}
	return nil
}

// Kill SIGKILLs the daemon, as the OOM killer would, and waits for it to
// exit; whatever it was doing is cut off mid-way and its shims are left
// running. Restart starts it again.
func (c *Containerd) Kill() error {
	if c.proc == nil || c.hasExited() {
		return errors.New("kill containerd: not running")
	}
	c.proc.Kill()
	return nil
}

// waitServing polls the socket until the daemon answers, it exits, or the
// timeout passes.
func (c *Containerd) waitServing(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-c.proc.Exited():
			return fmt.Errorf("containerd exited during start-up: %v", c.proc.WaitErr())
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return fmt.Errorf("containerd did not serve on %s within %s: %w", c.address, timeout, lastErr)
		case <-tick.C:
		}
		if _, err := os.Stat(c.address); err != nil {
			lastErr = err
			continue
		}
		if c.client == nil {
			cl, err := client.New(c.address, client.WithTimeout(2*time.Second))
			if err != nil {
				lastErr = err
				continue
			}
			c.client = cl
		}
		attemptCtx, attemptCancel := context.WithTimeout(ctx, 2*time.Second)
		serving, err := c.client.IsServing(attemptCtx)
		if err == nil && serving {
			_, err = c.client.Version(attemptCtx)
		}
		attemptCancel()
		if err == nil && serving {
			return nil
		}
		lastErr = err
	}
}

// logTail returns the last lines of the daemon log for error messages.
func (c *Containerd) logTail() string {
	const maxBytes, maxLines = 8192, 40
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(no containerd log: %v)", err)
	}
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return "containerd log tail (" + c.logPath + "):\n" + strings.Join(lines, "\n")
}

// daemonEnv returns base with PATH prefixed by prepend and extra applied
// on top. NOTIFY_SOCKET is dropped so a daemon started from a systemd unit
// does not talk to systemd on the test's behalf.
func daemonEnv(base, prepend, extra []string) []string {
	vars := map[string]string{}
	var order []string
	set := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range base {
		set(kv)
	}
	delete(vars, "NOTIFY_SOCKET")
	path := vars["PATH"]
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	if len(prepend) > 0 {
		path = strings.Join(prepend, string(os.PathListSeparator)) + string(os.PathListSeparator) + path
	}
	set("PATH=" + path)
	for _, kv := range extra {
		set(kv)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		if v, ok := vars[k]; ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// probeOverlay checks that an overlay mount works on the file system
// holding dir. The overlayfs plugin loads whenever the module exists, so
// only a real mount tells whether snapshots will mount (it fails on
// overlay-on-overlay, some tmpfs setups and in user namespaces).
func probeOverlay(dir string) error {
	base, err := os.MkdirTemp(dir, "overlay-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			return err
		}
	}
	merged := filepath.Join(base, "merged")
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"))
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		return fmt.Errorf("overlay mount: %w", err)
	}
	return unix.Unmount(merged, unix.MNT_DETACH)
}

// Address returns the daemon's gRPC socket path.
func (c *Containerd) Address() string { return c.address }

// TTRPCAddress returns the daemon's ttrpc socket path.
func (c *Containerd) TTRPCAddress() string { return c.ttrpcAddress }

// Dir returns the directory that holds all of the daemon's files.
func (c *Containerd) Dir() string { return c.dir }

// ConfigPath returns the path of the generated config.toml.
func (c *Containerd) ConfigPath() string { return c.configPath }

// LogPath returns the path of the daemon log.
func (c *Containerd) LogPath() string { return c.logPath }

// FIFODir returns a directory for task stdio FIFOs inside Dir. Pass it via
// cio.WithFIFODir (or ctr's --fifo-dir): the default is /run/containerd/fifo.
func (c *Containerd) FIFODir() string { return c.fifoDir }

// Snapshotter returns the snapshotter in use ("overlayfs" or "native").
func (c *Containerd) Snapshotter() string { return c.snapshotter }

// Version returns the daemon version, as ContainerdVersion reports it.
func (c *Containerd) Version() string { return c.version }

// PID returns the daemon's process id.
func (c *Containerd) PID() int { return c.proc.Pid() }

// Client returns a client connected to the daemon. It is shared, has no
// default namespace and is closed by Stop; do not Close it.
func (c *Containerd) Client() *client.Client { return c.client }

// Namespace creates namespace ns if needed, labels it so that clients
// which do not name a snapshotter (image unpack, WithNewSnapshot, ctr)
// use this daemon's snapshotter, and returns ctx bound to it.
func (c *Containerd) Namespace(ctx context.Context, ns string) (context.Context, error) {
	svc := c.client.NamespaceService()
	labels := map[string]string{defaults.DefaultSnapshotterNSLabel: c.snapshotter}
	err := svc.Create(ctx, ns, labels)
	if errdefs.IsAlreadyExists(err) {
		err = svc.SetLabel(ctx, ns, defaults.DefaultSnapshotterNSLabel, c.snapshotter)
	}
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	return namespaces.WithNamespace(ctx, ns), nil
}

// Ctr returns a ctr command aimed at this daemon: the address is set and
// CONTAINERD_SNAPSHOTTER names the daemon's snapshotter. Subcommands that
// create FIFOs still need --fifo-dir FIFODir() to stay out of /run.
func (c *Containerd) Ctr(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.ctr, append([]string{"--address", c.address}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERD_SNAPSHOTTER="+c.snapshotter)
	return cmd
}

// Stop tears the daemon down and removes every trace of it: tasks are
// killed and deleted through the API, the daemon gets SIGTERM (SIGKILL
// after 10s), shims and their children still running from Dir are
// killed, their sockets removed, mounts under Dir lazily unmounted, and
// Dir deleted. It is safe to call more than once; later calls return the
// first result.
func (c *Containerd) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Containerd) stop() error {
	var errs []error
	if c.serving && !c.hasExited() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c.deleteAllTasks(ctx)
		cancel()
	}
	if c.client != nil {
		_ = c.client.Close()
	}
	if c.proc != nil {
		c.proc.Stop(stopGracePeriod)
	}
	if err := killStrays(c.dir); err != nil {
		errs = append(errs, err)
	}
	removeShimSockets(c.dir, c.address, c.shimSockDir)
	nsIDs := bundleIDs(c.dir)
	for _, ns := range c.namespaces {
		if _, ok := nsIDs[ns]; !ok {
			nsIDs[ns] = nil
		}
	}
	removeCgroups(nsIDs)
	if err := unmountUnder(c.dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", c.dir, err))
	}
	if c.shimSockDir != "" {
		if err := os.RemoveAll(c.shimSockDir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.shimSockDir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop containerd: %w", err)
	}
	return nil
}

func (c *Containerd) hasExited() bool { return c.proc != nil && !c.proc.Running() }

// deleteAllTasks kills and deletes every task in every namespace, so
// shims exit on their own and release their mounts and sockets. containerd
// deliberately leaves shims running when it stops, so this cannot be left
// to the daemon. Errors are ignored: killStrays is the fallback.
func (c *Containerd) deleteAllTasks(ctx context.Context) {
	nss, err := c.client.NamespaceService().List(ctx)
	if err != nil {
		return
	}
	c.namespaces = nss
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		containers, err := c.client.Containers(nctx)
		if err != nil {
			continue
		}
		for _, ctr := range containers {
			task, err := ctr.Task(nctx, nil)
			if err != nil {
				continue
			}
			// A frozen task cannot die from SIGKILL until thawed.
			if st, err := task.Status(nctx); err == nil && st.Status == client.Paused {
				_ = task.Resume(nctx)
			}
			_, _ = task.Delete(nctx, client.WithProcessKill)
		}
	}
}
