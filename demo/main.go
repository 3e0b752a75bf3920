// Command demo is `make demo`: it starts a private containerd next to
// whatever the machine runs, imports a busybox image made from the host's
// busybox, runs containers through containerd-shim-nsiso-v1 with ctr to show
// each policy from inside the containers, and stops everything it started.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nsiso/nsiso/testenv"
)

const (
	runtime  = "io.containerd.nsiso.v1"
	imageRef = "docker.io/library/nsiso-busybox:demo"
	ns       = "nsiso-demo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	ctd      *testenv.Containerd
	ctx      context.Context
	fifo     string
	runcRoot string
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: containerd and runc need it")
	}
	ctx := context.Background()
	h, err := testenv.NewHarness()
	if err != nil {
		return err
	}
	defer h.Close()

	d, err := startContainerd(ctx, h)
	if err != nil {
		return err
	}
	defer d.stop()
	if err := d.importImage(h); err != nil {
		return err
	}
	showHostNamespaces()

	d.showPrivate()
	d.showDefault()
	if err := d.showParentAndChild(); err != nil {
		return err
	}
	defer d.quiet("task", "kill", "-s", "KILL", "demo-parent")
	d.showHostRefused()
	d.showTenantBoundaries()
	capped, err := d.showShmCap(h)
	if err != nil {
		return err
	}
	d.showSysVCap(capped)
	d.removeLeftovers()
	return nil
}

// startContainerd starts a private containerd whose shim reads the node's
// rules, written into its own directory.
func startContainerd(ctx context.Context, h *testenv.Harness) (*demo, error) {
	ctdDir, err := os.MkdirTemp("", "nsdemo-")
	if err != nil {
		return nil, err
	}
	runcRoot := testenv.RuncRoot(ctdDir)
	const rules = `# The node's rules (the defaults, spelled out), and a default /dev/shm size.
disallow_sharing_host_ipc_namespace = true
disallow_sharing_host_pid_namespace = true
default_container_shm_size = "256Mi"
max_container_shm_size = "1Gi"`
	cfg, err := h.WritePolicy("nsiso.toml", runcRoot, rules)
	if err != nil {
		return nil, err
	}
	cfgBody, err := os.ReadFile(cfg)
	if err != nil {
		return nil, err
	}

	step("Start a private containerd %s with the nsiso shim on its PATH", mustVersion(h.Deps.Containerd))
	ctd, err := h.Start(ctx, testenv.Options{
		Dir: ctdDir,
		Env: []string{"NSISO_CONFIG=" + cfg},
	})
	if err != nil {
		return nil, err
	}
	fmt.Printf("  socket %s\n  nsiso config (NSISO_CONFIG):\n%s", ctd.Address(), indent(string(cfgBody), "    "))
	return &demo{ctd: ctd, ctx: ctx, fifo: ctd.FIFODir(), runcRoot: runcRoot}, nil
}

// stop stops containerd, which removes everything it made.
func (d *demo) stop() {
	step("Stop containerd and remove everything it made")
	if err := d.ctd.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: stop:", err)
	}
	fmt.Println("done.")
}

// importImage imports the busybox image every step runs.
func (d *demo) importImage(h *testenv.Harness) error {
	step("Import a busybox image made locally from Debian's busybox-static")
	tarPath, err := h.BusyboxImage(d.ctx, imageRef, nil)
	if err != nil {
		return err
	}
	return d.ctr("images", "import", tarPath)
}

// showHostNamespaces prints the host's namespaces, for the steps to be
// read against.
func showHostNamespaces() {
	hostIPC, _ := os.Readlink("/proc/self/ns/ipc")
	hostPID, _ := os.Readlink("/proc/self/ns/pid")
	fmt.Printf("\n  the host's namespaces: %s %s\n", hostIPC, hostPID)
}

func (d *demo) showPrivate() {
	step("1. nsiso/ipc-mode=private with nsiso/shm-size=128Mi: own IPC namespace, own 128Mi /dev/shm, own SysV segments")
	d.show(d.runArgs("demo-private", []string{"nsiso/ipc-mode=private", "nsiso/shm-size=128Mi"},
		"sh", "-c", "readlink /proc/self/ns/ipc; df -h /dev/shm | tail -1; ipcmk -M 1M; cat /proc/sysvipc/shm | cut -c1-40")...)
}

// showDefault compares the node's default /dev/shm with runc.v2's.
func (d *demo) showDefault() {
	step("2. No annotation: a new IPC namespace and /dev/shm of the node's default_container_shm_size (256Mi); runc.v2 gives 64M")
	d.show(d.runArgs("demo-unset", nil, "sh", "-c", "readlink /proc/self/ns/ipc; df -h /dev/shm | tail -1")...)
	d.show("run", "--rm", "--fifo-dir", d.fifo, "--runtime", "io.containerd.runc.v2", "--runc-root", d.runcRoot, imageRef, "demo-runc", "sh", "-c", "df -h /dev/shm | tail -1")
}

// showParentAndChild leaves demo-parent running, for the later steps to
// name; the caller kills it.
func (d *demo) showParentAndChild() error {
	step("3. A parent and its share-parent child: one IPC namespace, one /dev/shm, one PID namespace")
	if err := d.ctr("run", "-d", "--fifo-dir", d.fifo, "--runtime", runtime,
		"--annotation", "nsiso/ipc-mode=private", "--annotation", "nsiso/shm-size=64Mi", "--annotation", "nsiso/pid-mode=private",
		imageRef, "demo-parent", "sh", "-c", "echo written-by-parent > /dev/shm/hello; ipcmk -M 4096; exec sleep 3600"); err != nil {
		return err
	}
	d.show("task", "exec", "--fifo-dir", d.fifo, "--exec-id", "look", "demo-parent", "sh", "-c", "readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid")
	d.show(d.runArgs("demo-child", []string{"nsiso/ipc-mode=share-parent", "nsiso/pid-mode=share-parent", "nsiso/parent=demo-parent"},
		"sh", "-c", "readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; cat /dev/shm/hello; df -h /dev/shm | tail -1; cat /proc/sysvipc/shm | cut -c1-40; ps -o pid,args")...)
	return nil
}

func (d *demo) showHostRefused() {
	step("4. Sharing the host's IPC or PID namespace is refused (disallow_sharing_host_*_namespace = true), whatever asks")
	d.show(d.runArgs("demo-hostipc", []string{"nsiso/ipc-mode=share-parent"}, "true")...)
	d.show("run", "--rm", "--fifo-dir", d.fifo, "--runtime", runtime, "--with-ns", "ipc:/proc/1/ns/ipc", imageRef, "demo-withns", "true")
	d.show(d.runArgs("demo-hostpid", []string{"nsiso/pid-mode=share-parent"}, "true")...)
	d.show(d.runArgs("demo-badsize", []string{"nsiso/ipc-mode=share-parent", "nsiso/shm-size=1Gi"}, "true")...)
}

func (d *demo) showTenantBoundaries() {
	step("5. Tenant boundaries: a parent is only ever a container of the same containerd namespace, and the host's /dev/shm is refused at any destination")
	d.show(d.runArgs("demo-otherns", []string{"nsiso/ipc-mode=share-parent", "nsiso/parent=../default/demo-parent"}, "true")...)
	d.show("run", "--rm", "--fifo-dir", d.fifo, "--runtime", runtime, "--mount", "type=bind,src=/dev,dst=/hostdev,options=rbind:ro", imageRef, "demo-hostdev", "true")
}

// showShmCap writes a policy with only a cap and returns its path, which
// showSysVCap runs under too.
func (d *demo) showShmCap(h *testenv.Harness) (string, error) {
	step("6. max_container_shm_size holds for every /dev/shm a container owns: under a policy with only a cap (96Mi), a client's tmpfs without a size gets the cap, not half of the node's memory")
	capped, err := h.WritePolicy("capped.toml", d.runcRoot, `max_container_shm_size = "96Mi"`)
	if err != nil {
		return "", err
	}
	d.show("run", "--rm", "--fifo-dir", d.fifo, "--runtime", runtime, "--runtime-config-path", capped,
		"--mount", "type=tmpfs,src=shm,dst=/dev/shm,options=nosuid:nodev", imageRef, "demo-capped", "sh", "-c", "df -h /dev/shm | tail -1")
	return capped, nil
}

func (d *demo) showSysVCap(capped string) {
	step("7. System V shared memory is shared memory too: under the same cap the container's own IPC namespace gets System V limits of its /dev/shm budget (96Mi; kernel.shmall counts pages)")
	d.show("run", "--rm", "--fifo-dir", d.fifo, "--runtime", runtime, "--runtime-config-path", capped,
		"--annotation", "nsiso/ipc-mode=private", imageRef, "demo-sysv", "sh", "-c", "echo shmmax $(cat /proc/sys/kernel/shmmax) shmall $(cat /proc/sys/kernel/shmall)")
}

// removeLeftovers deletes the parent and the containers whose refused
// start left a record behind.
func (d *demo) removeLeftovers() {
	d.quiet("task", "kill", "-s", "KILL", "demo-parent")
	d.quiet("task", "delete", "demo-parent")
	d.quiet("containers", "delete", "demo-parent")
	for _, id := range []string{"demo-hostipc", "demo-withns", "demo-hostpid", "demo-badsize", "demo-otherns", "demo-hostdev"} {
		d.quiet("containers", "delete", id)
	}
}

func (d *demo) runArgs(id string, annotations []string, args ...string) []string {
	a := []string{"run", "--rm", "--fifo-dir", d.fifo, "--runtime", runtime}
	for _, an := range annotations {
		a = append(a, "--annotation", an)
	}
	return append(append(a, imageRef, id), args...)
}

// ctr shows a ctr command, runs it and prints what it says.
func (d *demo) ctr(args ...string) error {
	fmt.Printf("\n$ ctr -n %s %s\n", ns, shellJoin(args))
	cmd := d.ctd.Ctr(d.ctx, append([]string{"--namespace", ns}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	fmt.Print(indent(dropNoise(out.String()), "  "))
	if err != nil {
		fmt.Printf("  (exit: %v)\n", err)
		return fmt.Errorf("ctr %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// show runs ctr for a step to show: its failure, a refusal as often as
// not, is printed by ctr and is what the step shows.
func (d *demo) show(args ...string) { _ = d.ctr(args...) }

func (d *demo) quiet(args ...string) {
	cmd := d.ctd.Ctr(d.ctx, append([]string{"--namespace", ns}, args...)...)
	_ = cmd.Run()
}

// dropNoise hides containerd's cgroup v1 deprecation warning, which ctr
// repeats on every call on such hosts.
func dropNoise(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "DEPRECATION") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

func step(format string, args ...any) {
	fmt.Printf("\n=== "+format+"\n", args...)
}

func indent(s, pre string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return pre + strings.ReplaceAll(s, "\n", "\n"+pre) + "\n"
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " ;|&$'\"*()<>") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func mustVersion(bin string) string {
	v, err := testenv.ContainerdVersion(bin)
	if err != nil {
		return filepath.Base(bin)
	}
	return v
}
