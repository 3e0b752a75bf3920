package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// These tests need systemd as PID 1 on a unified (cgroup v2) hierarchy,
// which is where runc's systemd cgroup driver is used on real nodes; on
// any other machine they skip. docs/compatibility.md says where they ran.

// systemdV2 reports why the machine is not systemd on cgroup v2, or "".
func systemdV2() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return "/sys/fs/cgroup is not cgroup2 (unified)"
	}
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return "systemd is not PID 1"
	}
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return "systemd has not booted this system (/run/systemd/system missing)"
	}
	return ""
}

func needSystemdV2(t *testing.T) {
	t.Helper()
	if why := systemdV2(); why != "" {
		t.Skip("needs systemd as PID 1 on cgroup v2: " + why)
	}
}

// unitProps asks systemd itself (not the file system) for a unit's
// properties.
func unitProps(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out, err := exec.Command("systemctl", "show", "--property="+strings.Join(props, ","), unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// unifiedCgroup is a process's cgroup v2 path, read on the host.
func unifiedCgroup(t *testing.T, pid uint32) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup v2 entry for pid %d in %q", pid, data)
	return ""
}

// memStat reads one counter of a cgroup's memory.stat.
func memStat(t *testing.T, cgroup, key string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", cgroup, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s not in %s/memory.stat", key, cgroup)
	return 0
}

// assertScopeGone checks that systemd no longer runs a unit.
func assertScopeGone(t *testing.T, unit string) {
	t.Helper()
	if st := unitProps(t, unit, "ActiveState")["ActiveState"]; st == "active" {
		t.Errorf("%s still active after the container was deleted", unit)
	}
}

// nsiso's systemd_cgroup = true hands runc --systemd-cgroup: the container
// lands in the transient scope runc asks systemd for, with the resources
// of its spec, and nsiso's IPC and /dev/shm policy holds as with cgroupfs.
// Everything is read on the host (systemd, /proc, /sys/fs/cgroup) except
// what only the container can see.
func TestSystemdCgroupShim(t *testing.T) {
	needSystemdV2(t)
	s := setup(t)
	cfg := s.writeConfig("systemd.toml", `systemd_cgroup = true
default_container_shm_size = "96Mi"
max_container_shm_size = "256Mi"`)

	id := newID("sd")
	unit := "nsiso-" + id + ".scope"
	r := s.start(t, id, spec{
		config: cfg,
		ann:    ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "64Mi"),
		// runc's systemd driver reads the path as slice:prefix:name.
		opts: []oci.SpecOpts{oci.WithCgroup("system.slice:nsiso:" + id), oci.WithMemoryLimit(512 << 20)},
	})

	pid := r.t.Pid()
	want := "/system.slice/" + unit
	if got := unifiedCgroup(t, pid); got != want {
		t.Fatalf("container process %d in cgroup %q, want %q", pid, got, want)
	}
	p := unitProps(t, unit, "ActiveState", "ControlGroup", "MemoryMax")
	if p["ActiveState"] != "active" || p["ControlGroup"] != want {
		t.Fatalf("systemd's view of %s: %v, want active in %s", unit, p, want)
	}
	if p["MemoryMax"] != strconv.Itoa(512<<20) {
		t.Errorf("%s MemoryMax=%s, want the spec's 512Mi", unit, p["MemoryMax"])
	}

	// IPC and /dev/shm policy, under the systemd driver too.
	if ipc := s.ns(t, r, "ipc"); ipc == hostNS(t, "ipc") {
		t.Errorf("private container in the host's IPC namespace %s", ipc)
	}
	if got := s.shmSize(t, r); got != 64<<20 {
		t.Errorf("/dev/shm: %d bytes, want 64Mi", got)
	}
	key := s.ipcmk(t, r)
	if hostSees(t, key) {
		t.Error("segment of a private container visible on the host")
	}

	// The private /dev/shm is charged to the container's own cgroup (the
	// scope), not to the shim's or to the host's.
	before := memStat(t, want, "shmem")
	s.exec(t, r, "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=16")
	if after := memStat(t, want, "shmem"); after-before < 16<<20 {
		t.Errorf("shmem of %s grew by %d bytes after writing 16Mi to /dev/shm, want at least 16Mi", want, after-before)
	}

	// The node's rules hold: a request for the host's IPC namespace is
	// refused before runc runs, naming the rule.
	bad := newID("sdbad")
	err := s.tryCreate(t, bad, spec{
		config: cfg,
		ann:    ann(specmod.AnnotationIPCMode, "share-parent"),
		opts:   []oci.SpecOpts{oci.WithCgroup("system.slice:nsiso:" + bad)},
	})
	if err == nil || !strings.Contains(err.Error(), "disallow_sharing_host_ipc_namespace=true") {
		t.Errorf("share-parent IPC under systemd_cgroup: %v, want a refusal naming disallow_sharing_host_ipc_namespace", err)
	}
	assertScopeGone(t, "nsiso-"+bad+".scope")

	// Deleting the container stops its scope.
	s.remove(t, r)
	r.t = nil
	assertScopeGone(t, unit)
	s.assertNoResidue(t, id)
}

// CRI with a handler whose options say systemd_cgroup = true and a pod
// whose cgroup parent is a slice, as kubelet's systemd driver sends it:
// containerd names the scopes cri-containerd-<id>.scope under that slice.
func TestSystemdCgroupCRI(t *testing.T) {
	needSystemdV2(t)
	s := setup(t)
	ctx := context.Background()
	ctdDir, err := os.MkdirTemp("", "nssd-")
	if err != nil {
		t.Fatal(err)
	}
	runcRoot := filepath.Join(ctdDir, "runc")
	cfg := fmt.Sprintf(`
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "nsiso"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nsiso]
  runtime_type = "io.containerd.nsiso.v1"
  pod_annotations = ["nsiso/*"]
  container_annotations = ["nsiso/*"]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nsiso.options]
    systemd_cgroup = true
    default_container_shm_size = "96Mi"
    max_container_shm_size = "256Mi"
    root = %q
`, criPauseImage, runcRoot)
	ctd, err := s.h.Start(ctx, testenv.Options{Dir: ctdDir, EnableCRI: true, ExtraConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctd.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	if err := loadCRIImages(ctx, s.h, ctd); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+ctd.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &criSuite{ctd: ctd, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn), runcRoot: runcRoot, logDir: filepath.Join(s.dir, "sd-pod-logs")}
	if err := waitCRIImages(ctx, c.img, criAppImage, criPauseImage); err != nil {
		t.Fatal(err)
	}

	// The slice kubelet's systemd driver would give a best-effort pod.
	slice := fmt.Sprintf("kubepods-besteffort-pod%d.slice", os.Getpid())
	sliceDir := "/kubepods.slice/kubepods-besteffort.slice/" + slice
	p := pod{name: newPodName("sd"), ipc: runtimeapi.NamespaceMode_POD, pid: runtimeapi.NamespaceMode_CONTAINER,
		ann: ann(specmod.AnnotationShmSize, "64Mi")}
	pc := p.config(c.logDir)
	pc.Linux.CgroupParent = slice
	resp, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pc, RuntimeHandler: "nsiso"})
	if err != nil {
		t.Fatalf("run pod: %v", err)
	}
	podID := resp.PodSandboxId
	removed := false
	t.Cleanup(func() {
		if !removed {
			c.removePod(t, podID)
		}
	})

	cresp, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: criAppImage},
			Command:  []string{"sleep", "3600"},
			LogPath:  "app.log",
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: p.nsOptions()},
			},
		},
		SandboxConfig: pc,
	})
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	cid := cresp.ContainerId
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("start container: %v", err)
	}

	for _, id := range []string{podID, cid} {
		unit := "cri-containerd-" + id + ".scope"
		want := sliceDir + "/" + unit
		pr := unitProps(t, unit, "ActiveState", "ControlGroup")
		if pr["ActiveState"] != "active" || pr["ControlGroup"] != want {
			t.Errorf("systemd's view of %s: %v, want active in %s", unit, pr, want)
		}
		procs, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", want, "cgroup.procs"))
		if err != nil || len(strings.Fields(string(procs))) == 0 {
			t.Errorf("no process in %s (%v)", want, err)
		}
	}

	// The pod's policy holds: its own IPC namespace, /dev/shm sized by the
	// pod's annotation, and no System V segment leaks to the host.
	if ipc := c.ns(t, cid, "ipc"); ipc == hostNS(t, "ipc") {
		t.Errorf("pod container in the host's IPC namespace %s", ipc)
	}
	if got := c.shmSize(t, cid); got != 64<<20 {
		t.Errorf("/dev/shm of the pod's container: %d bytes, want 64Mi", got)
	}
	out := c.exec(t, cid, "ipcmk", "-M", "65536")
	if !strings.Contains(out, "Shared memory id:") {
		t.Fatalf("ipcmk: %q", out)
	}
	host, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		t.Fatal(err)
	}
	for key := range shmKeys(c.exec(t, cid, "cat", "/proc/sysvipc/shm")) {
		if _, ok := shmKeys(string(host))[key]; ok {
			t.Errorf("segment %s of the pod visible on the host", key)
		}
	}

	// hostIPC is refused by the node's rule under this driver too.
	hp := pod{name: newPodName("sdhost"), ipc: runtimeapi.NamespaceMode_NODE, pid: runtimeapi.NamespaceMode_CONTAINER}
	hc := hp.config(c.logDir)
	hc.Linux.CgroupParent = slice
	if r, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: hc, RuntimeHandler: "nsiso"}); err == nil {
		c.removePod(t, r.PodSandboxId)
		t.Error("hostIPC pod started under systemd_cgroup")
	} else {
		if !strings.Contains(err.Error(), "disallow_sharing_host_ipc_namespace=true") {
			t.Errorf("hostIPC pod: %v, want a refusal naming disallow_sharing_host_ipc_namespace", err)
		}
		// Refused before runc ran: systemd never got a scope for it.
		if m := regexp.MustCompile(`container "([0-9a-f]{64})"`).FindStringSubmatch(err.Error()); m != nil {
			assertScopeGone(t, "cri-containerd-"+m[1]+".scope")
		} else {
			t.Errorf("refusal does not name the sandbox container: %v", err)
		}
	}

	// Removing the pod stops its scopes.
	removed = true
	c.removePod(t, podID)
	for _, id := range []string{podID, cid} {
		assertScopeGone(t, "cri-containerd-"+id+".scope")
	}
}
