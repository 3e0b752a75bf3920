package specmod

import (
	"errors"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A refusal of a container CRI made names its pod, whichever step refuses
// it: the request carries the pod from ParseRequest on.
func TestRefusalsNameThePod(t *testing.T) {
	inPod := map[string]string{AnnotationCRISandboxName: "web-0", AnnotationCRISandboxNamespace: "team-a"}
	sb := func(ann ...string) *specs.Spec {
		s := criSandbox(inPod)
		for i := 0; i+1 < len(ann); i += 2 {
			s.Annotations[ann[i]] = ann[i+1]
		}
		return s
	}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		pod  string
		want string
	}{
		{name: "an annotation", spec: sb(AnnotationIPCMode, "hostish"), pod: "team-a/web-0",
			want: `nsiso: container "c" of pod "team-a/web-0": nsiso/ipc-mode="hostish": unknown mode (use "private" or "share-parent")`},
		{name: "a namespace path", spec: edit(sb(), setNS(specs.IPCNamespace, "proc/1/ns/ipc")), pod: "team-a/web-0",
			want: `nsiso: container "c" of pod "team-a/web-0": linux.namespaces.ipc.path="proc/1/ns/ipc": not an absolute path (the OCI runtime spec requires one; runc would open it relative to its own working directory)`},
		{name: "a rule", spec: edit(sb(), dropNS(specs.IPCNamespace)), pod: "team-a/web-0",
			want: `nsiso: container "c" of pod "team-a/web-0": linux.namespaces="no ipc entry": shares (the spec leaves the container in the runtime's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "a sysctl", spec: edit(sb(AnnotationIPCMode, "private"), func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{SysctlShmMax: "x"} }), pod: "team-a/web-0",
			want: `nsiso: container "c" of pod "team-a/web-0": linux.sysctl.kernel.shmmax="x": not a plain unsigned decimal number, which nsiso needs to hold it to max_container_shm_size=1Gi`},
		{name: "a pod without a namespace", spec: edit(sb(AnnotationIPCMode, "hostish"), func(s *specs.Spec) { delete(s.Annotations, AnnotationCRISandboxNamespace) }), pod: "/web-0",
			want: `nsiso: container "c" of pod "/web-0": nsiso/ipc-mode="hostish": unknown mode (use "private" or "share-parent")`},
		{name: "no pod", spec: edit(baseSpec(), dropNS(specs.IPCNamespace)),
			want: `nsiso: container "c": linux.namespaces="no ipc entry": shares (the spec leaves the container in the runtime's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rewrite(tc.spec, "c", sized, Parent{})
			var pe *Error
			if !errors.As(err, &pe) || err.Error() != tc.want {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
			if pe.Pod != tc.pod {
				t.Errorf("Pod = %q, want %q", pe.Pod, tc.pod)
			}
		})
	}
}

// edit applies fs to s and returns it.
func edit(s *specs.Spec, fs ...func(*specs.Spec)) *specs.Spec {
	edits(fs...)(s)
	return s
}
