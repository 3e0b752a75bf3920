package integration

import (
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/specmod"
)

// Every rejection reaches the client as one line naming the container, the
// key, the value and the rule, and leaves nothing behind.
func TestRejections(t *testing.T) {
	s := setup(t)
	stopped := s.start(t, newID("stopped"), spec{args: []string{"true"}})
	waitFor(t, "container to stop", func() bool {
		st, err := stopped.t.Status(s.ctx)
		return err == nil && st.Status == "stopped"
	})
	for _, tc := range []struct {
		name string
		sp   spec
		want string // %s is the container ID
	}{
		{name: "share host IPC", sp: spec{ann: ann(specmod.AnnotationIPCMode, "share-parent")},
			want: `nsiso: container "%s": nsiso/ipc-mode="share-parent": shares (the parent of a top-level container is the host) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "share host PID", sp: spec{ann: ann(specmod.AnnotationPIDMode, "share-parent")},
			want: `nsiso: container "%s": nsiso/pid-mode="share-parent": shares (the parent of a top-level container is the host) the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "client joins pid 1's IPC", sp: spec{opts: []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"})}},
			want: `nsiso: container "%s": linux.namespaces.ipc.path="/proc/1/ns/ipc": shares the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "client joins own IPC by another path", sp: spec{opts: []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/self/ns/ipc"})}},
			want: `nsiso: container "%s": linux.namespaces.ipc.path="/proc/self/ns/ipc": shares the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "client host IPC", sp: spec{opts: []oci.SpecOpts{oci.WithHostNamespace(specs.IPCNamespace)}},
			want: `nsiso: container "%s": linux.namespaces="no ipc entry": shares (the spec leaves the container in the runtime's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "client host PID", sp: spec{opts: []oci.SpecOpts{oci.WithHostNamespace(specs.PIDNamespace)}},
			want: `nsiso: container "%s": linux.namespaces="no pid entry": shares (the spec leaves the container in the runtime's PID namespace) the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "client binds host shm", sp: spec{opts: []oci.SpecOpts{oci.WithMounts([]specs.Mount{{Destination: "/dev/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind"}}})}},
			want: `nsiso: container "%s": mounts./dev/shm.source="/dev/shm": shares the host's /dev/shm, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "size without private", sp: spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationShmSize, "1Gi")},
			want: `nsiso: container "%s": nsiso/shm-size="1Gi": only allowed with nsiso/ipc-mode=private, got ipc-mode "share-parent"`},
		{name: "size over max", sp: spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "2Gi")},
			want: `nsiso: container "%s": nsiso/shm-size="2Gi": /dev/shm of 2Gi is over max_container_shm_size=1Gi`},
		{name: "client size over a tight max", sp: spec{config: s.tight, opts: []oci.SpecOpts{oci.WithDevShmSize(64 << 10)}},
			want: `nsiso: container "%s": mounts./dev/shm.options="size=65536k": /dev/shm of 64Mi is over max_container_shm_size=32Mi`},
		{name: "unknown mode", sp: spec{ann: ann(specmod.AnnotationIPCMode, "host")},
			want: `nsiso: container "%s": nsiso/ipc-mode="host": unknown mode (use "private" or "share-parent")`},
		{name: "unknown annotation", sp: spec{ann: ann("nsiso/pidmode", "private")},
			want: `nsiso: container "%s": nsiso/pidmode="private": unknown nsiso annotation`},
		{name: "missing parent", sp: spec{ann: ann(specmod.AnnotationParent, "no-such-container")},
			want: `nsiso: container "%s": nsiso/parent="no-such-container": parent container has no task in this containerd namespace (it must exist and be running)`},
		{name: "stopped parent", sp: spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, stopped.id)},
			want: `nsiso: container "%s": nsiso/parent="` + stopped.id + `": parent container is not running`},
		{name: "bad config", sp: spec{config: "/nonexistent/nsiso.toml"},
			want: `nsiso config "/nonexistent/nsiso.toml": open: no such file or directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID("bad")
			err := s.tryCreate(t, id, tc.sp)
			want := strings.ReplaceAll(tc.want, "%s", id)
			if err == nil {
				t.Fatalf("created; want refusal %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n got %v\nwant %s", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err.Error())
			}
			s.assertNoResidue(t, id)
		})
	}
}
