package specmod

import (
	"errors"
	"path"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/internal/podcases"
)

// podCase is a row of testdata/pod-cases.json (internal/podcases), which
// the admission policy's test (deploy/admission) and e2e read too, so the
// node and admission cannot drift apart unnoticed.
type podCase = podcases.Case

func loadPodCases(t *testing.T) podcases.Table {
	t.Helper()
	pc, err := podcases.Load("testdata/pod-cases.json")
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// The table itself: every rule has rows, names are unique, and a row where
// the layers differ says why (and only such a row).
func TestPodCasesTable(t *testing.T) {
	pc := loadPodCases(t)
	if len(pc.Cases) < 40 {
		t.Errorf("only %d cases", len(pc.Cases))
	}
	names := map[string]bool{}
	refusedKeys := map[string]bool{}
	for _, c := range pc.Cases {
		if names[c.Name] {
			t.Errorf("case %q twice", c.Name)
		}
		names[c.Name] = true
		if (c.Admission != c.Node) != (c.Why != "") {
			t.Errorf("%s: admission %q, node %q: a row says why exactly when the layers differ", c.Name, c.Admission, c.Node)
		}
		if c.Admission != "" && c.Message == "" {
			t.Errorf("%s: a refused row names a part of the admission message", c.Name)
		}
		refusedKeys[c.Node] = true
	}
	// Every way the node refuses a pod appears at least once.
	for _, k := range []string{AnnotationIPCMode, AnnotationPIDMode, AnnotationShmSize, AnnotationParent,
		AnnotationShmSize + ".app", AnnotationParent + ".app", "linux.namespaces", "mounts./dev/shm.source"} {
		if !refusedKeys[k] {
			t.Errorf("no row where the node refuses naming %s", k)
		}
	}
}

// Sandbox and container IDs, and the paths containerd's CRI puts in their
// specs. The sandbox's init is pid 4242; the host's is pid 1.
const (
	pcSandboxID  = "5b1d"
	pcSandboxShm = "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/5b1d/shm"
	pcBundle     = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/"
)

// pcHost knows the host's namespaces (pid 1's) and /dev/shm; the sandbox's
// and the pins of it are not the host's.
type pcHost struct{}

func (pcHost) IsHostNamespace(_ specs.LinuxNamespaceType, p string) (bool, error) {
	return p == "/proc/1/ns/ipc" || p == "/proc/1/ns/pid", nil
}

func (pcHost) ExposesHostShm(p string, recursive bool) (bool, error) {
	return p == "/dev/shm" || recursive && (p == "/dev" || p == "/"), nil
}

// pcSpec is the part every CRI spec shares: containerd's default mounts,
// /dev/shm bound from shmSource, and the given namespaces.
func pcSpec(shmSource string, ns ...specs.LinuxNamespace) *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "bind", Source: shmSource, Options: []string{"rbind", "nosuid", "nodev", "noexec", "rw"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{Namespaces: ns},
	}
}

// pcAnnotations are CRI's own annotations plus the pod's annotations that
// the runtime handler passes through (pod_annotations = ["nsiso/*"] in
// examples/containerd/config.toml; containerd matches with path.Match).
func pcAnnotations(c podCase, cri map[string]string) map[string]string {
	a := map[string]string{
		AnnotationCRISandboxID:        pcSandboxID,
		AnnotationCRISandboxName:      "pod",
		AnnotationCRISandboxNamespace: c.PodNamespace(),
	}
	for k, v := range cri {
		a[k] = v
	}
	for k, v := range c.Annotations {
		if ok, _ := path.Match("nsiso/*", k); ok {
			a[k] = v
		}
	}
	return a
}

// pcContainers are the pod's containers in the order the kubelet creates
// them: init containers first.
func pcContainers(c podCase) []string {
	return append(append([]string(nil), c.InitContainers...), c.ContainerNames()...)
}

// pcSandboxSpec is the pause container's spec: its own IPC and PID
// namespaces and the pod's /dev/shm, a tmpfs containerd mounted on the
// host; the host's namespace (no entry) and /dev/shm for hostIPC/hostPID.
func pcSandboxSpec(c podCase) *specs.Spec {
	shm := pcSandboxShm
	var ns []specs.LinuxNamespace
	if c.HostIPC {
		shm = "/dev/shm"
	} else {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	if !c.HostPID {
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace}, specs.LinuxNamespace{Type: specs.MountNamespace},
		specs.LinuxNamespace{Type: specs.NetworkNamespace})
	s := pcSpec(shm, ns...)
	s.Annotations = pcAnnotations(c, map[string]string{AnnotationCRIContainerType: criTypeSandbox})
	if len(c.Sysctls) > 0 {
		s.Linux.Sysctl = map[string]string{}
		for k, v := range c.Sysctls {
			// The kubelet hands CRI a slash-separated name with dots
			// (Kubernetes' ConvertSysctlVariableToDotsSeparator, the same
			// swap runc's validation makes), so a sandbox spec never
			// holds "kernel/shmall"; e2e runs these rows through one.
			s.Linux.Sysctl[sysctlName(k)] = v
		}
	}
	return s
}

// pcContainerSpec is a pod container's spec: the sandbox's IPC namespace by
// path and the pod's /dev/shm; the sandbox's PID namespace with
// shareProcessNamespace, else a new one; the host's for hostIPC/hostPID.
func pcContainerSpec(c podCase, name string) *specs.Spec {
	shm := pcSandboxShm
	var ns []specs.LinuxNamespace
	if c.HostIPC {
		shm = "/dev/shm"
	} else {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/4242/ns/ipc"})
	}
	switch {
	case c.HostPID:
	case c.ShareProcessNamespace:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/4242/ns/pid"})
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace, Path: "/proc/4242/ns/uts"},
		specs.LinuxNamespace{Type: specs.MountNamespace}, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/4242/ns/net"})
	s := pcSpec(shm, ns...)
	s.Annotations = pcAnnotations(c, map[string]string{AnnotationCRIContainerType: criTypeContainer, AnnotationCRIContainerName: name})
	return s
}

// nodeRunsPod does what the shim does on each Create of a pod, in the
// order the kubelet asks: the sandbox (ParseRequest, Rewrite with CRI's
// pod /dev/shm as this sandbox's own), then each init container and
// container (ParseRequest, Rewrite, with the sandbox pinned as the
// parent). It returns the first refusal.
func nodeRunsPod(t *testing.T, c podCase, policy Policy) error {
	t.Helper()
	sb := pcSandboxSpec(c)
	req, err := ParseRequest(pcSandboxID, sb.Annotations)
	if err != nil {
		return err
	}
	in := Input{ID: pcSandboxID, Request: req, Policy: policy, Host: pcHost{},
		Bundle: pcBundle + pcSandboxID, OwnShmDir: pcBundle + pcSandboxID + "/nsiso/shm", PodShmPath: pcSandboxShm}
	if _, err := Rewrite(sb, in); err != nil {
		return err
	}
	for _, name := range pcContainers(c) {
		id := pcSandboxID + "-" + name
		s := pcContainerSpec(c, name)
		req, err := ParseRequest(id, s.Annotations)
		if err != nil {
			return err
		}
		if req.Parent != pcSandboxID {
			t.Fatalf("container %s: parent %q, want the sandbox", name, req.Parent)
		}
		pins := pcBundle + id + "/nsiso/"
		parent := Parent{ID: pcSandboxID, IPCPath: pins + "parent-ipc", PIDPath: pins + "parent-pid", ShmPath: pins + "parent-shm"}
		in := Input{ID: id, Request: req, Policy: policy, Parent: parent, Host: pcHost{},
			Bundle: pcBundle + id, OwnShmDir: pins + "shm"}
		if _, err := Rewrite(s, in); err != nil {
			return err
		}
	}
	return nil
}

// TestPodCasesNode runs every row of the shared table through the shim's
// policy engine, under the default node rules and the table's node max: a
// refused row is refused naming the row's key, an admitted row runs.
func TestPodCasesNode(t *testing.T) {
	pc := loadPodCases(t)
	max, err := ParseSize(pc.NodeMaxShmSize)
	if err != nil {
		t.Fatal(err)
	}
	policy := Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: max}
	for _, c := range pc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			err := nodeRunsPod(t, c, policy)
			if c.Node == "" {
				if err != nil {
					t.Fatalf("the node refuses the pod: %v", err)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("the node runs the pod (or fails otherwise: %v); want a refusal naming %s", err, c.Node)
			}
			if pe.Key != c.Node {
				t.Fatalf("the node names %s, want %s: %v", pe.Key, c.Node, err)
			}
			if c.NodeValue != "" && pe.Value != c.NodeValue {
				t.Fatalf("the node names %s=%q, want %q: %v", pe.Key, pe.Value, c.NodeValue, err)
			}
			if v, ok := c.Annotations[c.Node]; ok && pe.Value != v {
				t.Fatalf("the node names %s=%q, the pod says %q", pe.Key, pe.Value, v)
			}
		})
	}
}
