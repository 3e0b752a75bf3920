package specmod

import (
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// criSandbox is the spec containerd's CRI plugin gives a pod sandbox: a new
// IPC namespace and the pod's /dev/shm, a tmpfs it mounted on the host.
func criSandbox(ann map[string]string) *specs.Spec {
	s := baseSpec()
	s.Mounts[3] = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/run/cri/sandboxes/sb/shm", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}}
	s.Annotations = map[string]string{AnnotationCRIContainerType: "sandbox", AnnotationCRISandboxID: "sb"}
	for k, v := range ann {
		s.Annotations[k] = v
	}
	return s
}

// criContainer is a pod container's spec: the sandbox's IPC namespace by
// path and the pod's /dev/shm.
func criContainer(name string, ann map[string]string) *specs.Spec {
	s := baseSpec()
	s.Mounts[3] = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/run/cri/sandboxes/sb/shm", Options: []string{"rbind", "rw"}}
	setNS(specs.IPCNamespace, "/proc/77/ns/ipc")(s)
	s.Annotations = map[string]string{AnnotationCRIContainerType: "container", AnnotationCRISandboxID: "sb", AnnotationCRIContainerName: name}
	for k, v := range ann {
		s.Annotations[k] = v
	}
	return s
}

func TestParseRequestCRI(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		sandbox bool
		cname   string
		want    Request
		wantErr string
	}{
		{name: "sandbox is top-level", sandbox: true, want: Request{Sandbox: true}},
		{name: "sandbox takes the pod's shm size without a mode", sandbox: true, ann: ann2(AnnotationShmSize, "1Gi"),
			want: Request{Sandbox: true, ShmSize: 1 << 30, keys: map[string]string{AnnotationShmSize: AnnotationShmSize}}},
		{name: "container's parent is the sandbox", cname: "app",
			want: Request{Parent: "sb", ParentKey: AnnotationCRISandboxID}},
		{name: "pod shm size copied onto a container is ignored", cname: "app", ann: ann2(AnnotationShmSize, "1Gi"),
			want: Request{Parent: "sb", ParentKey: AnnotationCRISandboxID, keys: map[string]string{AnnotationShmSize: AnnotationShmSize}}},
		{name: "scoped key applies to its container", cname: "app", ann: ann2(AnnotationIPCMode+".app", "private", AnnotationShmSize+".app", "128Mi"),
			want: Request{IPC: ModePrivate, ShmSize: 128 << 20, Parent: "sb", ParentKey: AnnotationCRISandboxID,
				keys: map[string]string{AnnotationIPCMode: AnnotationIPCMode + ".app", AnnotationShmSize: AnnotationShmSize + ".app"}}},
		{name: "scoped key wins over the pod's", cname: "app", ann: ann2(AnnotationIPCMode, "share-parent", AnnotationIPCMode+".app", "private"),
			want: Request{IPC: ModePrivate, Parent: "sb", ParentKey: AnnotationCRISandboxID, keys: map[string]string{AnnotationIPCMode: AnnotationIPCMode + ".app"}}},
		{name: "scoped key of another container is ignored", cname: "db", ann: ann2(AnnotationIPCMode+".app", "private"),
			want: Request{Parent: "sb", ParentKey: AnnotationCRISandboxID}},
		{name: "scoped keys are ignored by the sandbox", sandbox: true, ann: ann2(AnnotationIPCMode+".app", "private"),
			want: Request{Sandbox: true}},
		{name: "scoped key is checked everywhere", sandbox: true, ann: ann2(AnnotationIPCMode+".app", "hostish"),
			wantErr: `nsiso: container "c": nsiso/ipc-mode.app="hostish": unknown mode (use "private" or "share-parent")`},
		{name: "scoped size still needs private", cname: "app", ann: ann2(AnnotationShmSize+".app", "1Gi"),
			wantErr: `nsiso: container "c": nsiso/shm-size.app="1Gi": only allowed with nsiso/ipc-mode=private, got no ipc-mode`},
		{name: "scoped parent refused", cname: "app", ann: ann2(AnnotationParent+".app", "x"),
			wantErr: `nsiso: container "c": nsiso/parent.app="x": nsiso/parent cannot be scoped to a container (inside a pod the parent is the sandbox)`},
		{name: "parent refused on a pod container", cname: "app", ann: ann2(AnnotationParent, "victim"),
			wantErr: `nsiso: container "c": nsiso/parent="victim": not allowed in a Kubernetes pod: a pod's sandbox is top-level and its containers' parent is their own sandbox`},
		{name: "parent refused on a sandbox", sandbox: true, ann: ann2(AnnotationParent, "victim"),
			wantErr: `nsiso: container "c": nsiso/parent="victim": not allowed in a Kubernetes pod: a pod's sandbox is top-level and its containers' parent is their own sandbox`},
		{name: "empty scope refused", cname: "app", ann: ann2(AnnotationIPCMode+".", "private"),
			wantErr: `nsiso: container "c": nsiso/ipc-mode.="private": empty container name after "nsiso/ipc-mode."`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *specs.Spec
			if tc.sandbox {
				s = criSandbox(tc.ann)
			} else {
				s = criContainer(tc.cname, tc.ann)
			}
			got, err := ParseRequest("c", s.Annotations)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("got %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func ann2(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// The only tmpfs a plan ever resizes is the pod /dev/shm CRI made for this
// very sandbox, and only for the sandbox's own request.
func TestPodShmPlan(t *testing.T) {
	const src = "/run/cri/sandboxes/sb/shm"
	withShm := func(s *specs.Spec, source string) *specs.Spec { s.Mounts[3].Source = source; return s }
	for _, tc := range []struct {
		name     string
		spec     *specs.Spec
		podShm   string // Input.PodShmPath
		policy   Policy
		want     *PodShm
		wantErr  string
		wantBind string // the sandbox's /dev/shm source afterwards
	}{
		{name: "no size keeps CRI's", spec: criSandbox(nil), podShm: src, policy: strict},
		{name: "pod annotation", spec: criSandbox(ann2(AnnotationShmSize, "1Gi")), podShm: src, policy: strict, want: &PodShm{src, 1 << 30}},
		{name: "node default", spec: criSandbox(nil), podShm: src, policy: sized, want: &PodShm{src, 256 << 20}},
		{name: "annotation beats default", spec: criSandbox(ann2(AnnotationShmSize, "512Mi")), podShm: src, policy: sized, want: &PodShm{src, 512 << 20}},
		{name: "private sandbox keeps the pod's shm", spec: criSandbox(ann2(AnnotationIPCMode, "private", AnnotationShmSize, "512Mi")), podShm: src, policy: sized, want: &PodShm{src, 512 << 20}},
		{name: "over max", spec: criSandbox(ann2(AnnotationShmSize, "2Gi")), podShm: src, policy: sized,
			wantErr: `nsiso: container "c": nsiso/shm-size="2Gi": pod /dev/shm of 2Gi is over max_container_shm_size=1Gi`},
		{name: "default over max is never reached", spec: criSandbox(nil), podShm: src, policy: Policy{DefaultShmSize: 1 << 30, MaxShmSize: 1 << 30}, want: &PodShm{src, 1 << 30}},
		{name: "a container is not resized", spec: criContainer("app", ann2(AnnotationShmSize, "1Gi")), podShm: src, policy: sized},
		{name: "sandbox label outside CRI's namespace", spec: criSandbox(ann2(AnnotationShmSize, "1Gi")), podShm: "", policy: sized},
		{name: "sandbox label binding another tmpfs", spec: withShm(criSandbox(ann2(AnnotationShmSize, "1Gi")), "/run/victim/shm"), podShm: src, policy: lenient, wantBind: "/run/victim/shm"},
		{name: "sandbox label binding another pod's shm", spec: withShm(criSandbox(ann2(AnnotationShmSize, "1Gi")), "/run/cri/sandboxes/other/shm"), podShm: src, policy: sized, wantBind: "/run/cri/sandboxes/other/shm"},
		{name: "private sandbox binding another tmpfs keeps it unresized", spec: withShm(criSandbox(ann2(AnnotationIPCMode, "private", AnnotationShmSize, "8Mi")), "/run/victim/shm"), podShm: src, policy: sized, wantBind: "/run/victim/shm"},
		{name: "share-parent sandbox joins the host, resizes nothing", spec: criSandbox(ann2(AnnotationIPCMode, "share-parent")), podShm: src, policy: Policy{DefaultShmSize: 1 << 30}, wantBind: "/dev/shm"},
		{name: "hostIPC pod's host shm is never resized", podShm: src, policy: Policy{DefaultShmSize: 1 << 30}, wantBind: "/dev/shm",
			spec: func() *specs.Spec {
				s := withShm(criSandbox(nil), "/dev/shm")
				_ = WithHostNamespace(specs.IPCNamespace)(s)
				return s
			}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ParseRequest("c", tc.spec.Annotations)
			if err != nil {
				t.Fatal(err)
			}
			in := Input{ID: "c", Request: req, Policy: tc.policy, Parent: Parent{ID: "sb", IPCPath: pinIPC, PIDPath: pinPID, ShmPath: pinShm},
				Host: fakeHost{}, Bundle: testBundle, OwnShmDir: testOwnShm, PodShmPath: tc.podShm}
			plan, err := Rewrite(tc.spec, in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("got %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("rewrite: %v", err)
			}
			if !reflect.DeepEqual(plan.PodShm, tc.want) {
				t.Fatalf("pod shm plan %+v, want %+v", plan.PodShm, tc.want)
			}
			want := tc.wantBind
			if want == "" {
				want = src
			}
			if i := shmMountIndex(tc.spec.Mounts); i < 0 || tc.spec.Mounts[i].Source != want {
				t.Fatalf("/dev/shm afterwards: %+v, want a bind of %s", tc.spec.Mounts, want)
			}
		})
	}
}
