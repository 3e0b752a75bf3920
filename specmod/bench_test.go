package specmod

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The spec rewrite is on every Create's path, so it must stay small next
// to what runc does: the goal is at most 20µs and 50 allocations per
// container. `make bench` checks these numbers; no test asserts them.

// benchHost answers like a node where no path in these specs is the
// host's, at no cost, so only the engine is measured.
type benchHost struct{}

func (benchHost) IsHostNamespace(specs.LinuxNamespaceType, string) (bool, error) { return false, nil }
func (benchHost) ExposesHostShm(string, bool) (bool, error)                      { return false, nil }

// Identifiers shaped like the ones containerd's CRI plugin generates.
const (
	benchSandboxID  = "5f2c1a9e8d7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a"
	benchSandboxPID = "/proc/48213/ns/"
	benchBundle     = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c0ffee"
)

// benchDefaultSpec is containerd's default spec for a container of a
// busybox-like image, as `ctr run` or the Go client build it, with the
// given annotations.
func benchDefaultSpec(b *testing.B, ann map[string]string, opts ...oci.SpecOpts) *specs.Spec {
	b.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "default")
	all := append([]oci.SpecOpts{
		oci.WithEnv([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}),
		oci.WithProcessArgs("sh", "-c", "exec my-job --threads 4"),
		oci.WithProcessCwd("/"),
		oci.WithAnnotations(ann),
	}, opts...)
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "job-7"}, all...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchCRIAnnotations are those containerd's CRI plugin puts on every spec
// of a pod, plus a pod annotation passed through (pod_annotations nsiso/*).
func benchCRIAnnotations(kind string) map[string]string {
	ann := map[string]string{
		"io.kubernetes.cri.container-type":    kind,
		"io.kubernetes.cri.sandbox-id":        benchSandboxID,
		"io.kubernetes.cri.sandbox-namespace": "payments",
		"io.kubernetes.cri.sandbox-uid":       "0d3c9a4e-6f1b-4c8e-9a2d-7b5e3f1c8a90",
		"io.kubernetes.cri.sandbox-name":      "ledger-7d9f8b6c5-x2k4q",
		AnnotationShmSize:                     "256Mi",
	}
	if kind == "sandbox" {
		ann["io.kubernetes.cri.sandbox-log-directory"] = "/var/log/pods/payments_ledger-7d9f8b6c5-x2k4q_0d3c9a4e-6f1b-4c8e-9a2d-7b5e3f1c8a90"
		ann["io.kubernetes.cri.podsandbox.image-name"] = "registry.k8s.io/pause:3.10"
		ann["io.kubernetes.cri.sandbox-cpu-period"] = "100000"
		ann["io.kubernetes.cri.sandbox-cpu-quota"] = "200000"
		ann["io.kubernetes.cri.sandbox-cpu-shares"] = "2048"
		ann["io.kubernetes.cri.sandbox-memory"] = "2147483648"
	} else {
		ann["io.kubernetes.cri.container-name"] = "ledger"
		ann["io.kubernetes.cri.image-name"] = "registry.example/payments/ledger:1.42.0"
	}
	return ann
}

// benchCRISandbox is shaped like the spec containerd's CRI plugin gives a
// pod sandbox: the pause process, a read-only root, the pod's network
// namespace by path and the pod's /dev/shm bound in from the host.
func benchCRISandbox(b *testing.B) *specs.Spec {
	dir := "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/" + benchSandboxID
	return benchDefaultSpec(b, benchCRIAnnotations("sandbox"),
		oci.WithoutRunMount,
		oci.WithRootFSReadonly(),
		oci.WithHostname("ledger-7d9f8b6c5-x2k4q"),
		oci.WithProcessArgs("/pause"),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-8f1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"}),
		oci.WithoutMounts("/dev/shm"),
		oci.WithMounts([]specs.Mount{
			{Destination: "/dev/shm", Type: "bind", Source: dir + "/shm", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: dir + "/resolv.conf", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
		}),
	)
}

// benchCRIContainer is shaped like a pod container's spec: the sandbox's
// IPC, UTS and network namespaces by path, the pod's /dev/shm, and the
// usual kubelet mounts.
func benchCRIContainer(b *testing.B) *specs.Spec {
	dir := "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/" + benchSandboxID
	pod := "/var/lib/kubelet/pods/0d3c9a4e-6f1b-4c8e-9a2d-7b5e3f1c8a90"
	bind := func(dst, src string, ro bool) specs.Mount {
		o := []string{"rbind", "rprivate", "rw"}
		if ro {
			o[2] = "ro"
		}
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: o}
	}
	return benchDefaultSpec(b, benchCRIAnnotations("container"),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: benchSandboxPID + "ipc"}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.UTSNamespace, Path: benchSandboxPID + "uts"}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: benchSandboxPID + "net"}),
		oci.WithoutMounts("/dev/shm"),
		oci.WithMounts([]specs.Mount{
			bind("/etc/hosts", pod+"/etc-hosts", false),
			bind("/dev/termination-log", pod+"/containers/ledger/2f9e1c7a", false),
			bind("/etc/hostname", dir+"/hostname", false),
			bind("/etc/resolv.conf", dir+"/resolv.conf", false),
			{Destination: "/dev/shm", Type: "bind", Source: dir + "/shm", Options: []string{"rbind", "rprivate", "rw"}},
			bind("/var/run/secrets/kubernetes.io/serviceaccount", pod+"/volumes/kubernetes.io~projected/kube-api-access-9xk2p", true),
			bind("/var/lib/ledger", pod+"/volumes/kubernetes.io~csi/pvc-4b1f/mount", false),
		}),
	)
}

// benchSpec resets a working copy of a spec without allocating: Rewrite
// changes a spec in place, and copying it with allocations of its own
// would hide the engine's.
type benchSpec struct {
	base   *specs.Spec
	s      specs.Spec
	linux  specs.Linux
	mounts []specs.Mount
	ns     []specs.LinuxNamespace
}

func newBenchSpec(base *specs.Spec) *benchSpec {
	c := &benchSpec{base: base}
	// Room for the /dev/shm mount and namespace entries Rewrite may add.
	c.mounts = make([]specs.Mount, 0, len(base.Mounts)+2)
	c.ns = make([]specs.LinuxNamespace, 0, len(base.Linux.Namespaces)+2)
	return c
}

// reset returns the working copy as the base was. Only the mount and
// namespace lists are copied: the engine replaces, never edits, anything
// they point to.
func (c *benchSpec) reset() *specs.Spec {
	c.s = *c.base
	c.mounts = append(c.mounts[:0], c.base.Mounts...)
	c.s.Mounts = c.mounts
	c.linux = *c.base.Linux
	c.ns = append(c.ns[:0], c.base.Linux.Namespaces...)
	c.linux.Namespaces = c.ns
	c.s.Linux = &c.linux
	return &c.s
}

// rewriteOnce does the engine's share of one Create as the shim does it:
// read the request, see what the parent must provide, rewrite and check,
// and move a private container's own /dev/shm to the host.
func rewriteOnce(s *specs.Spec, id string, policy Policy, parent Parent) error {
	req, err := ParseRequest(id, s.Annotations)
	if err != nil {
		return err
	}
	if ParentNeeds(s, req) == (Needs{}) {
		parent = Parent{}
	}
	in := Input{ID: id, Request: req, Policy: policy, Parent: parent, Host: benchHost{}, Bundle: benchBundle, OwnShmDir: benchBundle + "/nsiso/shm"}
	if req.Sandbox {
		in.PodShmPath = "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/" + benchSandboxID + "/shm"
	}
	_, err = Rewrite(s, in)
	return err
}

func BenchmarkRewrite(b *testing.B) {
	// The built-in defaults: both host-sharing rules on, no sizes.
	strict := Policy{DisallowHostIPC: true, DisallowHostPID: true}
	pinned := Parent{ID: "parent", IPCPath: benchBundle + "/nsiso/parent-ipc", PIDPath: benchBundle + "/nsiso/parent-pid", ShmPath: benchBundle + "/nsiso/parent-shm"}
	for _, tc := range []struct {
		name   string
		spec   func(*testing.B) *specs.Spec
		policy Policy
		parent Parent
		// check looks at the rewritten spec, so that each case measures
		// the path it is named after.
		check func(*specs.Spec) bool
	}{
		{name: "containerd-default", policy: strict,
			spec:  func(b *testing.B) *specs.Spec { return benchDefaultSpec(b, nil) },
			check: func(s *specs.Spec) bool { return hasShmSource(s, "shm") }},
		{name: "containerd-private-sized", policy: Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: 1 << 30},
			spec: func(b *testing.B) *specs.Spec {
				return benchDefaultSpec(b, map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: "128Mi", AnnotationPIDMode: "private"})
			},
			check: func(s *specs.Spec) bool { return hasShmSource(s, benchBundle+"/nsiso/shm") }},
		{name: "cri-sandbox", policy: strict, spec: benchCRISandbox,
			check: func(s *specs.Spec) bool {
				return hasShmSource(s, "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/"+benchSandboxID+"/shm")
			}},
		{name: "cri-container", policy: strict, spec: benchCRIContainer,
			check: func(s *specs.Spec) bool { return nsPath(s, specs.IPCNamespace) == benchSandboxPID+"ipc" }},
		{name: "nested-share-parent", policy: strict, parent: pinned,
			spec: func(b *testing.B) *specs.Spec {
				return benchDefaultSpec(b, map[string]string{AnnotationIPCMode: "share-parent", AnnotationPIDMode: "share-parent", AnnotationParent: "parent"})
			},
			check: func(s *specs.Spec) bool {
				return nsPath(s, specs.IPCNamespace) == pinned.IPCPath && nsPath(s, specs.PIDNamespace) == pinned.PIDPath && hasShmSource(s, pinned.ShmPath)
			}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			work := newBenchSpec(tc.spec(b))
			s := work.reset()
			if err := rewriteOnce(s, "job-7", tc.policy, tc.parent); err != nil {
				b.Fatal(err)
			}
			if !tc.check(s) {
				b.Fatalf("rewrite took another path: mounts %+v namespaces %+v", s.Mounts, s.Linux.Namespaces)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := rewriteOnce(work.reset(), "job-7", tc.policy, tc.parent); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func hasShmSource(s *specs.Spec, src string) bool {
	i := shmMountIndex(s.Mounts)
	return i >= 0 && s.Mounts[i].Source == src
}

func nsPath(s *specs.Spec, t specs.LinuxNamespaceType) string {
	n, _ := namespace(s, t)
	return n.Path
}
