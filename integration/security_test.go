package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// These tests attack nsiso the way a tenant would: a tenant of a shared
// Kubernetes cluster controls only its pods' annotations (through the CRI
// API), a tenant of a containerd namespace only the containers it creates
// there (through the containerd client, as ctr and nerdctl do). Each attack
// must be refused with one line naming the container, the key, the value
// and the rule, leave nothing behind, and change nothing a victim sees
// from inside.

const victimNS = "nsiso-victim"

// idRule is the refusal of a parent name that is no containerd identifier.
const idRule = "not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)"

// noTask is the refusal of a parent containerd knows no task of in the
// caller's containerd namespace.
const noTask = "parent container has no task in this containerd namespace (it must exist and be running)"

// podParentRule is the refusal of nsiso/parent in a Kubernetes pod.
const podParentRule = "not allowed in a Kubernetes pod: a pod's sandbox is top-level and its containers' parent is their own sandbox"

// ctrVictim is a private container in another containerd namespace with a
// secret in its /dev/shm.
type ctrVictim struct {
	s    *suite
	task *task
	size int64
}

// inNamespace is the suite seen from another containerd namespace, with the
// test image imported there (images are per namespace).
func (s *suite) inNamespace(t *testing.T, ns string) *suite {
	t.Helper()
	ctx, err := s.ctd.Namespace(context.Background(), ns)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testenv.ImportImage(ctx, s.ctd.Client(), s.imageTar)
	if err != nil {
		t.Fatal(err)
	}
	o := *s
	o.ctx, o.image = ctx, img
	return &o
}

func startCtrVictim(t *testing.T, s *suite) *ctrVictim {
	t.Helper()
	vs := s.inNamespace(t, victimNS)
	v := &ctrVictim{s: vs}
	v.task = vs.start(t, newID("victim"), spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "64Mi")})
	vs.exec(t, v.task, "sh", "-c", "echo secret > /dev/shm/victim")
	v.size = vs.shmSize(t, v.task)
	return v
}

// untouched checks from inside the victim that its /dev/shm holds exactly
// its secret, at its size.
func (v *ctrVictim) untouched(t *testing.T) {
	t.Helper()
	if got := strings.TrimSpace(v.s.exec(t, v.task, "ls", "-A", "/dev/shm")); got != "victim" {
		t.Errorf("victim's /dev/shm now holds %q", got)
	}
	if got := strings.TrimSpace(v.s.exec(t, v.task, "cat", "/dev/shm/victim")); got != "secret" {
		t.Errorf("victim's secret changed: %q", got)
	}
	if got := v.s.shmSize(t, v.task); got != v.size {
		t.Errorf("victim's /dev/shm resized: %d, was %d", got, v.size)
	}
}

// evilRuncRoot lays out a runc root whose state files a tenant made: the
// shim must never follow them. It returns a config file pointing at it.
func evilRuncRoot(t *testing.T, s *suite, v *ctrVictim) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "runc")
	dir := filepath.Join(root, testNS)
	for _, d := range []string{"to-shadow", "to-zero", "fifo", "dir", "forged"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"to-shadow/state.json": "/etc/shadow",
		"to-zero/state.json":   "/dev/zero",
		"linked":               "/etc",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo", "state.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir", "state.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A plain file naming the victim's init, with its start time, as
	// runc's own state.json would: what the shim once trusted.
	pid := v.task.t.Pid()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	forged := fmt.Sprintf(`{"id":"forged","init_process_pid":%d,"init_process_start":%s}`, pid, fields[19])
	if err := os.WriteFile(filepath.Join(dir, "forged", "state.json"), []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "evil.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("root = %q\n", root)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func withMounts(m ...specs.Mount) []oci.SpecOpts { return []oci.SpecOpts{oci.WithMounts(m)} }

// A tenant of one containerd namespace, with the containerd client.
func TestSecurityContainerdTenant(t *testing.T) {
	s := setup(t)
	v := startCtrVictim(t, s)
	evil := evilRuncRoot(t, s, v)
	secret, err := os.CreateTemp("/dev/shm", "nsiso-it-secret-")
	if err != nil {
		t.Fatal(err)
	}
	secret.Close()
	t.Cleanup(func() { os.Remove(secret.Name()) })
	shmLink := filepath.Join(t.TempDir(), "shm-link")
	if err := os.Symlink("/dev/shm", shmLink); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "config.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	share := func(parent string) map[string]string {
		return ann(specmod.AnnotationParent, parent, specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationPIDMode, "share-parent")
	}
	long := strings.Repeat("x", 300)
	const hostShm = "shares the host's /dev/shm, forbidden by disallow_sharing_host_ipc_namespace=true"
	for _, tc := range []struct {
		name string
		sp   spec
		want string // %s is the attacker's container ID
	}{
		{name: "parent path into another namespace", sp: spec{ann: share("../" + victimNS + "/" + v.task.id)},
			want: `nsiso: container "%s": nsiso/parent="../` + victimNS + `/` + v.task.id + `": ` + idRule},
		{name: "parent ID of another namespace", sp: spec{ann: share(v.task.id)},
			want: `nsiso: container "%s": nsiso/parent="` + v.task.id + `": parent container has no task in this containerd namespace (it must exist and be running)`},
		{name: "parent absolute path", sp: spec{ann: share("/run/containerd/runc/" + victimNS + "/" + v.task.id)},
			want: `nsiso: container "%s": nsiso/parent="/run/containerd/runc/` + victimNS + `/` + v.task.id + `": ` + idRule},
		{name: "parent name too long is cut", sp: spec{ann: share(long)},
			want: `nsiso: container "%s": nsiso/parent="` + long[:specmod.MaxEcho] + `…": ` + idRule},
		// A runc root the client chose in its runtime options holds state
		// files it wrote: none of them names a parent any more, whatever
		// it points at, since parents come from containerd's tasks.
		{name: "state.json symlink to /etc/shadow", sp: spec{config: evil, ann: share("to-shadow")},
			want: `nsiso: container "%s": nsiso/parent="to-shadow": ` + noTask},
		{name: "state.json symlink to /dev/zero", sp: spec{config: evil, ann: share("to-zero")},
			want: `nsiso: container "%s": nsiso/parent="to-zero": ` + noTask},
		{name: "state.json is a FIFO", sp: spec{config: evil, ann: share("fifo")},
			want: `nsiso: container "%s": nsiso/parent="fifo": ` + noTask},
		{name: "state.json is a directory", sp: spec{config: evil, ann: share("dir")},
			want: `nsiso: container "%s": nsiso/parent="dir": ` + noTask},
		{name: "parent directory is a symlink", sp: spec{config: evil, ann: share("linked")},
			want: `nsiso: container "%s": nsiso/parent="linked": ` + noTask},
		{name: "forged state.json naming the victim's init", sp: spec{config: evil, ann: share("forged")},
			want: `nsiso: container "%s": nsiso/parent="forged": ` + noTask},
		{name: "config file is /dev/zero", sp: spec{config: "/dev/zero"},
			want: `nsiso config "/dev/zero": not a regular file (a character device)`},
		{name: "config file is a FIFO", sp: spec{config: fifo},
			want: `nsiso config "` + fifo + `": not a regular file (a FIFO)`},
		{name: "host shm at a relative destination", sp: spec{opts: withMounts(specs.Mount{Destination: "dev/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind"}})},
			want: `nsiso: container "%s": mounts./dev/shm.source="/dev/shm": ` + hostShm},
		{name: "host shm at another destination", sp: spec{opts: withMounts(specs.Mount{Destination: "/run/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind"}})},
			want: `nsiso: container "%s": mounts./run/shm.source="/dev/shm": ` + hostShm},
		{name: "rbind of the host's /dev", sp: spec{opts: withMounts(specs.Mount{Destination: "/hostdev", Type: "bind", Source: "/dev", Options: []string{"rbind", "ro"}})},
			want: `nsiso: container "%s": mounts./hostdev.source="/dev": ` + hostShm},
		{name: "a file in the host's /dev/shm", sp: spec{opts: withMounts(specs.Mount{Destination: "/data/secret", Type: "bind", Source: secret.Name(), Options: []string{"bind"}})},
			want: `nsiso: container "%s": mounts./data/secret.source="` + secret.Name() + `": ` + hostShm},
		{name: "a symlink to the host's /dev/shm", sp: spec{opts: withMounts(specs.Mount{Destination: "/x", Type: "bind", Source: shmLink, Options: []string{"bind"}})},
			want: `nsiso: container "%s": mounts./x.source="` + shmLink + `": ` + hostShm},
		{name: "a source relative to the bundle", sp: spec{opts: withMounts(specs.Mount{Destination: "/x", Type: "bind", Source: strings.Repeat("../", 20) + "dev/shm", Options: []string{"bind"}})},
			want: `nsiso: container "%s": mounts./x.source="` + strings.Repeat("../", 20) + `dev/shm": ` + hostShm},
		{name: "an overlay layer on the host's /dev/shm", sp: spec{opts: withMounts(specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/etc:/dev/shm"}})},
			want: `nsiso: container "%s": mounts./o.options="lowerdir=/etc:/dev/shm": ` + hostShm},
		{name: "a /dev/shm sized in percent", sp: spec{config: s.tight, opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"size=50%"}})},
			want: `nsiso: container "%s": mounts./dev/shm.options="size=50%": a /dev/shm sized in percent of memory cannot be checked against max_container_shm_size=32Mi; give a size in bytes`},
		{name: "a /dev/shm sized in blocks", sp: spec{opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nr_blocks=99999999"}})},
			want: `nsiso: container "%s": mounts./dev/shm.options="nr_blocks=99999999": a tmpfs sized in blocks cannot be checked against max_container_shm_size=1Gi; give size= in bytes`},
		{name: "a pod-scoped key outside a pod", sp: spec{ann: ann(specmod.AnnotationIPCMode+".app", "private")},
			want: `nsiso: container "%s": nsiso/ipc-mode.app="private": a key scoped to a container by name is for Kubernetes pods, whose annotations are per pod; set nsiso/ipc-mode on this container instead`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID("attack")
			done := make(chan error, 1)
			go func() { done <- s.tryCreate(t, id, tc.sp) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("create hangs")
			}
			want := strings.ReplaceAll(tc.want, "%s", id)
			if err == nil {
				t.Fatalf("created; want refusal %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n got %v\nwant …%s", err, want)
			}
			if strings.Contains(err.Error(), "\n") || len(err.Error()) > 1024 {
				t.Errorf("error is not one short line: %q", err.Error())
			}
			if strings.Contains(err.Error(), "root:") {
				t.Errorf("error leaks file contents: %q", err.Error())
			}
			s.assertNoResidue(t, id)
			v.untouched(t)
		})
	}
}

// The cap holds for every /dev/shm a container owns, whoever wrote its
// size, measured with statfs from inside.
func TestSecurityShmCap(t *testing.T) {
	s := setup(t)
	for _, tc := range []struct {
		name string
		sp   spec
		want int64
	}{
		{name: "size=0 means unlimited to tmpfs; capped", want: 32 << 20,
			sp: spec{config: s.tight, opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "size=0"}})}},
		{name: "no size; capped", want: 32 << 20,
			sp: spec{config: s.tight, opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "mode=1777"}})}},
		{name: "private without a size or default; capped", want: 32 << 20,
			sp: spec{config: s.tight, ann: ann(specmod.AnnotationIPCMode, "private"), opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid"}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.start(t, newID("cap"), tc.sp)
			if got := s.shmSize(t, r); got != tc.want {
				t.Errorf("/dev/shm is %d bytes, want %d", got, tc.want)
			}
		})
	}
}

// A client that labels its container a pod sandbox and binds some tmpfs
// at /dev/shm with a size must never get that tmpfs remounted.
func TestSecurityFakeSandboxNeverResizes(t *testing.T) {
	s := setup(t)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("victim", victim, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(victim, unix.MNT_DETACH) })
	for _, ns := range []string{testNS, criNS} {
		t.Run(ns, func(t *testing.T) {
			as := s.inNamespace(t, ns)
			as.start(t, newID("fakesb"), spec{
				ann:  ann(specmod.AnnotationCRIContainerType, "sandbox", specmod.AnnotationCRISandboxID, "x", specmod.AnnotationShmSize, "1Gi"),
				opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "bind", Source: victim, Options: []string{"rbind", "rw"}}),
			})
			if got := statfsSize(t, victim); got != 1<<20 {
				t.Errorf("victim tmpfs resized to %d", got)
			}
		})
	}
}

func statfsSize(t *testing.T, dir string) int64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(fs.Blocks) * fs.Bsize
}

// criVictim is another tenant's pod: a 512Mi pod /dev/shm with a secret.
type criVictim struct {
	c          *criSuite
	sandbox    string
	container  string
	ipc, pid   string
	podShmPath string
}

func startCRIVictim(t *testing.T, c *criSuite) *criVictim {
	t.Helper()
	p := pod{name: newPodName("victim"), ann: ann("nsiso/shm-size", "512Mi"), pid: runtimeapi.NamespaceMode_POD}
	sb, err := c.runPod(t, p)
	if err != nil {
		t.Fatal(err)
	}
	v := &criVictim{c: c, sandbox: sb, container: c.startContainer(t, sb, p, "v", nil)}
	c.exec(t, v.container, "sh", "-c", "echo secret > /dev/shm/victim")
	v.ipc, v.pid = c.ns(t, v.container, "ipc"), c.ns(t, v.container, "pid")
	v.podShmPath = filepath.Join(c.ctd.Dir(), "state", "io.containerd.grpc.v1.cri", "sandboxes", sb, "shm")
	return v
}

func (v *criVictim) untouched(t *testing.T) {
	t.Helper()
	c := v.c
	if got := strings.TrimSpace(c.exec(t, v.container, "ls", "-A", "/dev/shm")); got != "victim" {
		t.Errorf("victim pod's /dev/shm now holds %q", got)
	}
	if got := c.shmSize(t, v.container); got != 512<<20 {
		t.Errorf("victim pod's /dev/shm is %d bytes, want 512Mi", got)
	}
	if got := statfsSize(t, v.podShmPath); got != 512<<20 {
		t.Errorf("victim pod's /dev/shm on the host is %d bytes, want 512Mi", got)
	}
	if ps := c.exec(t, v.container, "ps", "-o", "args"); strings.Count(ps, "sleep 3600") != 1 {
		t.Errorf("a stranger runs in the victim pod's PID namespace:\n%s", ps)
	}
}

// criRefused checks a refusal through CRI: the message, and that nothing
// of the refused sandbox or container is left.
func (c *criSuite) criRefused(t *testing.T, err error, want string, before []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want refusal …%s", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error:\n got %v\nwant …%s", err, want)
	}
	m := regexp.MustCompile(`container "([0-9a-f]{64})"`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error does not name the container: %v", err)
	}
	waitFor(t, "shim of the refused container to exit", func() bool { return len(shimPIDs(t, m[1])) == 0 })
	if _, err := os.Stat(filepath.Join(c.runcRoot, criNS, m[1])); !os.IsNotExist(err) {
		t.Errorf("runc state of %s left: %v", m[1], err)
	}
	if added := diff(mountsOf(t, c.ctd.Dir()+"/"), before); len(added) > 0 {
		t.Errorf("mounts left by the refused attacker:\n%s", strings.Join(added, "\n"))
	}
}

// createAndStart creates and starts a container of a pod: CRI creates the
// task, and so runs the shim's Create, only at StartContainer. The
// container record is removed when the test ends.
func (c *criSuite) createAndStart(t *testing.T, sb string, p pod, name string, a map[string]string) error {
	t.Helper()
	id, err := c.createContainer(sb, p, name, a)
	if err != nil {
		return err
	}
	t.Cleanup(func() {
		_, _ = c.rt.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id})
	})
	_, err = c.rt.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
	return err
}

// A tenant of a Kubernetes cluster, with only its pods' annotations.
func TestSecurityPodTenant(t *testing.T) {
	c := setupCRI(t)
	v := startCRIVictim(t, c)
	share := func(parent string) map[string]string {
		return ann("nsiso/parent", parent, "nsiso/ipc-mode", "share-parent", "nsiso/pid-mode", "share-parent")
	}
	pods := []struct {
		name, handler string
		ann           map[string]string
		value         string
	}{
		{name: "join another pod's sandbox", ann: share(v.sandbox), value: v.sandbox},
		{name: "join another pod's container", ann: share(v.container), value: v.container},
		{name: "parent alone joins its IPC namespace", ann: ann("nsiso/parent", v.sandbox), value: v.sandbox},
		{name: "resize another pod's /dev/shm through a default size", handler: "nsiso-batch", ann: ann("nsiso/parent", v.sandbox, "nsiso/ipc-mode", "share-parent"), value: v.sandbox},
		{name: "parent path into another namespace", ann: share("../default/" + v.sandbox), value: "../default/" + v.sandbox},
	}
	for _, tc := range pods {
		t.Run("pod/"+tc.name, func(t *testing.T) {
			before := mountsOf(t, c.ctd.Dir()+"/")
			p := pod{name: newPodName("attacker"), handler: tc.handler, ann: tc.ann}
			_, err := c.runPod(t, p)
			c.criRefused(t, err, fmt.Sprintf(`of pod "default/%s": nsiso/parent=%q: %s`, p.name, tc.value, podParentRule), before)
			v.untouched(t)
		})
	}

	// The attacker's own pod is fine; its containers try the same.
	p := pod{name: newPodName("attacker")}
	sb, err := c.runPod(t, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want string
	}{
		{name: "container joins another pod's container", ann: share(v.container),
			want: fmt.Sprintf(`nsiso/parent=%q: %s`, v.container, podParentRule)},
		{name: "container names another pod's sandbox", ann: ann("nsiso/parent", v.sandbox),
			want: fmt.Sprintf(`nsiso/parent=%q: %s`, v.sandbox, podParentRule)},
	} {
		t.Run("container/"+tc.name, func(t *testing.T) {
			before := mountsOf(t, c.ctd.Dir()+"/")
			c.criRefused(t, c.createAndStart(t, sb, p, newPodName("x"), tc.ann), tc.want, before)
			v.untouched(t)
		})
	}

	// share-parent in a pod means the pod's own sandbox, never another.
	t.Run("share-parent joins only its own pod", func(t *testing.T) {
		own := c.startContainer(t, sb, p, "joined", ann("nsiso/ipc-mode", "share-parent", "nsiso/pid-mode", "share-parent"))
		if got := c.ns(t, own, "ipc"); got == v.ipc {
			t.Errorf("attacker's container is in the victim pod's IPC namespace %s", got)
		}
		if out, err := c.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: own, Cmd: []string{"cat", "/dev/shm/victim"}, Timeout: 10}); err != nil || out.ExitCode == 0 {
			t.Errorf("attacker reads the victim's /dev/shm (exit %v, err %v)", out.GetExitCode(), err)
		}
		v.untouched(t)
	})
}

// With only a cap on the node, a pod's container that asks for a /dev/shm
// of its own gets the cap, not half of the node's memory.
func TestSecurityPodShmCap(t *testing.T) {
	c := setupCRI(t)
	p := pod{name: newPodName("capped"), handler: "nsiso-maxonly", ann: ann("nsiso/ipc-mode.app", "private")}
	sb, err := c.runPod(t, p)
	if err != nil {
		t.Fatal(err)
	}
	app := c.startContainer(t, sb, p, "app", nil)
	if got := c.shmSize(t, app); got != 96<<20 {
		t.Errorf("private container's /dev/shm is %d bytes, want the cap of 96Mi", got)
	}
	before := mountsOf(t, c.ctd.Dir()+"/")
	err = c.createAndStart(t, sb, p, "big", ann("nsiso/ipc-mode", "private", "nsiso/shm-size", "200Mi"))
	c.criRefused(t, err, `nsiso/shm-size="200Mi": /dev/shm of 200Mi is over max_container_shm_size=96Mi`, before)
}

// A containerd client in CRI's own namespace that labels its container a
// sandbox and binds another pod's /dev/shm with a size does not resize it.
func TestSecurityFakeSandboxInCRINamespace(t *testing.T) {
	c := setupCRI(t)
	v := startCRIVictim(t, c)
	ctx, err := c.ctd.Namespace(context.Background(), criNS)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.ctd.Client()
	img, err := cl.GetImage(ctx, criAppImage)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "nsiso.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("root = %q\n", c.runcRoot)), 0o644); err != nil {
		t.Fatal(err)
	}
	id := newID("fakesb")
	cont, err := cl.NewContainer(ctx, id, client.WithImage(img), client.WithNewSnapshot(id+"-snap", img),
		client.WithRuntime(nsisoRuntime, runtimeOptions(cfg)),
		client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "3600"),
			oci.WithAnnotations(ann(specmod.AnnotationCRIContainerType, "sandbox", specmod.AnnotationCRISandboxID, id, specmod.AnnotationShmSize, "8Mi")),
			oci.WithMounts([]specs.Mount{{Destination: "/dev/shm", Type: "bind", Source: v.podShmPath, Options: []string{"rbind", "rw"}}})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cont.Delete(ctx, client.WithSnapshotCleanup) }()
	tk, err := cont.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	defer func() {
		_ = tk.Kill(ctx, syscall.SIGKILL)
		_, _ = tk.Delete(ctx, client.WithProcessKill)
	}()
	v.untouched(t)
}

func runtimeOptions(configPath string) *runtimeoptions.Options {
	return &runtimeoptions.Options{ConfigPath: configPath}
}

// encoding/json, which runc decodes config.json with, matches keys
// regardless of case and lets a later key overwrite an earlier one; a
// client that writes its spec's bytes itself (the container record holds
// them as they came) can hide a mount under "Mounts" after the "mounts"
// nsiso would read. nsiso reads the spec as runc does.
func TestSecurityCaseFoldedSpecKeys(t *testing.T) {
	s := setup(t)
	id := newID("casefold")
	c := s.newContainer(t, id, spec{})
	sp, err := c.Spec(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	hidden := append(append([]specs.Mount(nil), sp.Mounts...), specs.Mount{Destination: "/run/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind"}})
	base, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := json.Marshal(hidden)
	if err != nil {
		t.Fatal(err)
	}
	raw := append(append(bytes.TrimSuffix(base, []byte("}")), []byte(`,"Mounts":`)...), append(extra, '}')...)
	url, err := typeurl.TypeURL(&specs.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Update(s.ctx, func(_ context.Context, _ *client.Client, c *containers.Container) error {
		c.Spec = &anypb.Any{TypeUrl: url, Value: raw}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := &task{id: id, c: c}
	tk, err := c.NewTask(s.ctx, cio.NullIO)
	if err == nil {
		r.t = tk
	}
	s.remove(t, r)
	if err == nil {
		t.Fatal("created a container whose spec hides a bind of the host's /dev/shm under \"Mounts\"")
	}
	want := `nsiso: container "` + id + `": mounts./run/shm.source="/dev/shm": shares the host's /dev/shm, forbidden by disallow_sharing_host_ipc_namespace=true`
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error:\n got %v\nwant …%s", err, want)
	}
	s.assertNoResidue(t, id)
}

// bundleOf is where containerd keeps a container's bundle on the host.
func (s *suite) bundleOf(id string) string {
	ns, _ := namespaces.Namespace(s.ctx)
	return filepath.Join(s.ctd.Dir(), "state", "io.containerd.runtime.v2.task", ns, id)
}

// A container that has its own bundle mounted (any containerd client can
// ask for that bind) replaces <bundle>/nsiso by a symlink to a host
// directory. At Delete the root shim must not follow it: the host's tmpfs
// stays mounted, its files stay, and the container's own /dev/shm tmpfs,
// which the rename moved away, is unmounted all the same.
func TestSecurityBundleSymlink(t *testing.T) {
	s := setup(t)
	victim := t.TempDir()
	if err := unix.Mount("victim", victim, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(victim, unix.MNT_DETACH) })
	shm := filepath.Join(victim, "shm")
	if err := os.Mkdir(shm, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("victim-shm", shm, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shm, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(victim, "parent-ipc"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := newID("bundle-attack")
	bundle := s.bundleOf(id)
	r := s.start(t, id, spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "8Mi"),
		opts: withMounts(specs.Mount{Destination: "/bundle", Type: "bind", Source: bundle, Options: []string{"bind"}})})
	s.exec(t, r, "sh", "-c", "mv /bundle/nsiso /bundle/moved && ln -s "+victim+" /bundle/nsiso")
	s.remove(t, r)

	var st unix.Statfs_t
	if err := unix.Statfs(shm, &st); err != nil || st.Type != unix.TMPFS_MAGIC || st.Blocks*uint64(st.Bsize) != 1<<20 {
		t.Errorf("the host's tmpfs at %s was unmounted (%v)", shm, err)
	}
	if data, err := os.ReadFile(filepath.Join(victim, "parent-ipc")); err != nil || string(data) != "precious" {
		t.Errorf("the host's file was removed or changed: %q, %v", data, err)
	}
	if left := mountsOf(t, bundle); len(left) > 0 {
		t.Errorf("mounts left under the bundle: %q", left)
	}
	s.assertNoResidue(t, id)
}

// A namespace path the client flips between a container's namespace and
// the host's, as fast as it can, while it creates containers that join
// it: a container that is accepted must never be in the host's.
func TestSecurityFlippedNamespacePath(t *testing.T) {
	s := setup(t)
	other := s.start(t, newID("flip-target"), spec{ann: ann(specmod.AnnotationIPCMode, "private")})
	otherIPC := fmt.Sprintf("/proc/%d/ns/ipc", other.t.Pid())
	hostIPC, err := hostns.Stat("/proc/self/ns/ipc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "ipc")
	if err := os.Symlink(otherIPC, link); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		tmp := filepath.Join(dir, "next")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			target := otherIPC
			if i%2 == 1 {
				target = "/proc/self/ns/ipc" // resolved by whoever opens it: the host's, for the shim and runc
			}
			os.Remove(tmp)
			_ = os.Symlink(target, tmp) // a turn lost to the race is the next one's
			_ = os.Rename(tmp, link)
		}
	}()
	defer func() { close(stop); <-flipped }()
	joined := 0
	for i := 0; i < 16; i++ {
		id := newID("flip")
		c := s.newContainer(t, id, spec{opts: []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: link})}})
		tk, err := c.NewTask(s.ctx, cio.NullIO)
		r := &task{id: id, c: c, t: tk}
		if err != nil {
			r.t = nil
			s.remove(t, r)
			continue // judged the host's: refused
		}
		if err := tk.Start(s.ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := hostns.Stat(fmt.Sprintf("/proc/%d/ns/ipc", tk.Pid())); err != nil || got == hostIPC {
			t.Errorf("try %d: accepted into the host's IPC namespace", i)
		} else {
			joined++
		}
		s.remove(t, r)
	}
	t.Logf("%d of 16 tries joined the other container's namespace; the rest were refused", joined)
}

// Paths and options read as runc and the kernel read them.
func TestSecurityJudgedAsRuncRuns(t *testing.T) {
	s := setup(t)
	target := s.start(t, newID("ns-target"), spec{ann: ann(specmod.AnnotationIPCMode, "private")})
	rel := strings.Repeat("../", 12) + fmt.Sprintf("proc/%d/ns/ipc", target.t.Pid())
	withoutMountNS := func(_ context.Context, _ oci.Client, _ *containers.Container, sp *specs.Spec) error {
		ns := sp.Linux.Namespaces[:0]
		for _, n := range sp.Linux.Namespaces {
			if n.Type != specs.MountNamespace {
				ns = append(ns, n)
			}
		}
		sp.Linux.Namespaces = ns
		return nil
	}
	for _, tc := range []struct {
		name string
		sp   spec
		want string
	}{
		{name: "a relative namespace path", sp: spec{opts: []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: rel})}},
			want: `nsiso: container "%s": linux.namespaces.ipc.path="` + rel + `": not an absolute path`},
		{name: "no mount namespace", sp: spec{opts: []oci.SpecOpts{withoutMountNS}},
			want: `nsiso: container "%s": linux.namespaces="no mount entry": shares (runc then mounts in the host's mount namespace, where the host's /dev/shm stays reachable) the host's MOUNT namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "an overlay layer hidden in a joined option", sp: spec{opts: withMounts(specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{"index=off,lowerdir=/dev/shm:/etc"}})},
			want: `nsiso: container "%s": mounts./o.options="lowerdir=/dev/shm:/etc": shares the host's /dev/shm, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "an oversize tmpfs hidden in a joined option", sp: spec{config: s.tight, opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"size=1m", "mode=1777,size=1g"}})},
			want: `nsiso: container "%s": mounts./dev/shm.options="size=1g": /dev/shm of 1Gi is over max_container_shm_size=32Mi`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID("judged")
			err := s.tryCreate(t, id, tc.sp)
			want := strings.ReplaceAll(tc.want, "%s", id)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error:\n got %v\nwant …%s", err, want)
			}
			s.assertNoResidue(t, id)
		})
	}
	// A size=0 that runc would join after a legal size= (tmpfs reads the
	// last): the cap holds, measured from inside, in both modes.
	for _, mode := range []string{"", "private"} {
		t.Run("size=0 hidden in a joined option, ipc-mode "+mode, func(t *testing.T) {
			sp := spec{config: s.tight, opts: withMounts(specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "size=1m", "mode=1777,size=0"}})}
			if mode != "" {
				sp.ann = ann(specmod.AnnotationIPCMode, mode)
			}
			r := s.start(t, newID("joined"), sp)
			if got := s.shmSize(t, r); got != 32<<20 {
				t.Errorf("/dev/shm is %d bytes, want the cap %d", got, 32<<20)
			}
		})
	}
}

// Every value a refusal echoes is cut, whatever its size and wherever it
// came from: annotations through the containerd client, a config file.
func TestSecurityRefusalsAreShort(t *testing.T) {
	s := setup(t)
	huge := strings.Repeat("9", 100<<10)
	big := s.writeConfig("big-values.toml", fmt.Sprintf("max_container_shm_size = %q\n", "1"+strings.Repeat(" ", 500<<10)+"x"))
	bigDefault := s.writeConfig("big-default.toml", fmt.Sprintf("default_container_shm_size = %q\nmax_container_shm_size = \"1Mi\"\n", strings.Repeat(" ", 500<<10)+"1Gi"))
	for _, tc := range []struct {
		name string
		sp   spec
	}{
		{name: "nsiso/shm-size", sp: spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, huge+"parsecs")}},
		{name: "nsiso/ipc-mode", sp: spec{ann: ann(specmod.AnnotationIPCMode, huge)}},
		{name: "nsiso/parent", sp: spec{ann: ann(specmod.AnnotationParent, huge)}},
		{name: "an unknown key", sp: spec{ann: ann(specmod.AnnotationPrefix+huge, huge)}},
		{name: "max_container_shm_size", sp: spec{config: big}},
		{name: "default_container_shm_size", sp: spec{config: bigDefault}},
		{name: "a bind source", sp: spec{opts: withMounts(specs.Mount{Destination: "/x", Type: "bind", Source: "/gone/" + huge, Options: []string{"bind"}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID("short")
			err := s.tryCreate(t, id, tc.sp)
			if err == nil {
				t.Fatal("created")
			}
			if n := len(err.Error()); n > 2048 || strings.Contains(err.Error(), "\n") {
				t.Errorf("a %d-byte refusal: %.300q…", n, err.Error())
			}
			s.assertNoResidue(t, id)
		})
	}
}
