package specmod

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// baseSpec is what containerd's default spec (ctr run) gives a container.
func baseSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
		},
	}
}

// Paths the fake host checker knows. The pins of "hostkid" are what nsiso
// pins for a parent that itself shares the host's namespaces.
const (
	hostIPC      = "/proc/1/ns/ipc"
	hostPID      = "/proc/1/ns/pid"
	otherIPC     = "/proc/4242/ns/ipc"
	otherPID     = "/proc/4242/ns/pid"
	pinIPC       = "/b/child/nsiso/ipc"
	pinPID       = "/b/child/nsiso/pid"
	pinShm       = "/b/child/nsiso/shm"
	hostPinIPC   = "/b/grandchild/nsiso/ipc"
	hostPinPID   = "/b/grandchild/nsiso/pid"
	hostPinShm   = "/b/grandchild/nsiso/shm"
	brokenNSPath = "/proc/999/ns/ipc"
	brokenShm    = "/gone"
	testBundle   = "/b/c"
	testOwnShm   = "/b/c/nsiso/shm"
)

type fakeHost struct{}

func (fakeHost) IsHostNamespace(t specs.LinuxNamespaceType, p string) (bool, error) {
	switch p {
	case hostIPC, hostPID, hostPinIPC, hostPinPID, "/proc/1/ns/mnt":
		return true, nil
	case brokenNSPath:
		return false, errors.New("stat /proc/999/ns/ipc: no such file or directory")
	}
	return false, nil
}

// ExposesHostShm knows the host's /dev/shm, a file in it, the directories
// above it, a pin of a parent that shares it, and a source it cannot stat.
func (fakeHost) ExposesHostShm(p string, recursive bool) (bool, error) {
	switch p {
	case "/dev/shm", "/dev/shm/f", hostPinShm:
		return true, nil
	case "/dev", "/":
		return recursive, nil
	case brokenShm:
		return false, errors.New("stat /gone: no such file or directory")
	}
	return false, nil
}

var (
	strict  = Policy{DisallowHostIPC: true, DisallowHostPID: true}
	lenient = Policy{}
	sized   = Policy{DisallowHostIPC: true, DisallowHostPID: true, DefaultShmSize: 256 << 20, MaxShmSize: 1 << 30}
	parent  = Parent{ID: "p", IPCPath: pinIPC, PIDPath: pinPID, ShmPath: pinShm}
	hostKid = Parent{ID: "hostkid", IPCPath: hostPinIPC, PIDPath: hostPinPID, ShmPath: hostPinShm}
	shmBind = func(src string) specs.Mount {
		return specs.Mount{Destination: "/dev/shm", Type: "bind", Source: src, Options: shmBindOptions}
	}
	shmTmpfs = func(size string) specs.Mount {
		o := []string{"nosuid", "noexec", "nodev", "mode=1777"}
		if size != "" {
			o = append(o, "size="+size)
		}
		return specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: o}
	}
)

// sizedSysV is the System V limits of a new IPC namespace under sized: its
// default /dev/shm size (specmod/sysv_test.go tests them).
var sizedSysV = withSysctl(SysctlShmMax, "268435456", SysctlShmAll, "65536", SysctlShmMni, "4096")

// edit helpers build the expected spec from baseSpec.
func setShm(m specs.Mount) func(*specs.Spec) {
	return func(s *specs.Spec) { s.Mounts[3] = m }
}

func setNS(t specs.LinuxNamespaceType, p string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		for i := range s.Linux.Namespaces {
			if s.Linux.Namespaces[i].Type == t {
				s.Linux.Namespaces[i].Path = p
			}
		}
	}
}

func dropNS(t specs.LinuxNamespaceType) func(*specs.Spec) {
	return func(s *specs.Spec) { _ = WithHostNamespace(t)(s) }
}

func edits(fs ...func(*specs.Spec)) func(*specs.Spec) {
	return func(s *specs.Spec) {
		for _, f := range fs {
			f(s)
		}
	}
}

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		policy  Policy
		parent  Parent
		client  func(*specs.Spec) // the client's changes to the default spec
		want    func(*specs.Spec) // the expected changes to the client's spec
		wantErr string
	}{
		// IPC, top-level.
		{name: "top unset keeps new ns and client shm size", policy: strict},
		{name: "top unset applies default shm size", policy: sized, want: edits(setShm(shmTmpfs("268435456")), sizedSysV)},
		{name: "top unset keeps client path", policy: strict, client: setNS(specs.IPCNamespace, otherIPC)},
		{name: "top unset client host ipc refused", policy: strict, client: dropNS(specs.IPCNamespace),
			wantErr: `nsiso: container "c": linux.namespaces="no ipc entry": shares (the spec leaves the container in the runtime's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "top unset client host ipc path refused", policy: strict, client: setNS(specs.IPCNamespace, hostIPC),
			wantErr: `nsiso: container "c": linux.namespaces.ipc.path="/proc/1/ns/ipc": shares the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "top unset client host ipc allowed when lenient", policy: lenient, client: setNS(specs.IPCNamespace, hostIPC)},
		{name: "top unset unverifiable path refused", policy: strict, client: setNS(specs.IPCNamespace, brokenNSPath),
			wantErr: `nsiso: container "c": linux.namespaces.ipc.path="/proc/999/ns/ipc": cannot tell whether this is the host's IPC namespace (stat /proc/999/ns/ipc: no such file or directory); refused because of disallow_sharing_host_ipc_namespace=true`},
		{name: "top unset client binds host shm refused", policy: strict, client: setShm(shmBind("/dev/shm")),
			wantErr: `nsiso: container "c": mounts./dev/shm.source="/dev/shm": shares the host's /dev/shm, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "top unset client bind of other shm kept", policy: sized, client: setShm(shmBind("/run/pod/shm")), want: sizedSysV},
		{name: "top unset host root shares host shm refused", policy: strict,
			client:  func(s *specs.Spec) { s.Root.Path = "/"; s.Mounts = append(s.Mounts[:3], s.Mounts[4:]...) },
			wantErr: `nsiso: container "c": root.path="/": shares (a container on the host's root sees the host's /dev/shm) the host's /dev/shm, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "top unset host root allowed when lenient", policy: lenient,
			client: func(s *specs.Spec) { s.Root.Path = "/"; s.Mounts = append(s.Mounts[:3], s.Mounts[4:]...) }},
		{name: "top unset no shm mount gets one after /dev", policy: sized,
			client: func(s *specs.Spec) { s.Mounts = append(s.Mounts[:3], s.Mounts[4:]...) },
			want: func(s *specs.Spec) {
				s.Mounts = append(s.Mounts[:2], append([]specs.Mount{shmTmpfs("268435456")}, s.Mounts[2:]...)...)
				sizedSysV(s)
			}},
		{name: "top private with size", policy: strict, ann: map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: "128Mi"},
			want: setShm(shmTmpfs("134217728"))},
		{name: "top private default size", policy: sized, ann: map[string]string{AnnotationIPCMode: "private"},
			want: edits(setShm(shmTmpfs("268435456")), sizedSysV)},
		{name: "top private no size keeps client size", policy: strict, ann: map[string]string{AnnotationIPCMode: "private"}},
		{name: "top private overrides client host path", policy: strict, ann: map[string]string{AnnotationIPCMode: "private"},
			client: edits(setNS(specs.IPCNamespace, hostIPC), setShm(shmBind("/dev/shm"))),
			want:   edits(setNS(specs.IPCNamespace, ""), setShm(shmTmpfs("")))},
		{name: "top private adds ipc entry", policy: strict, ann: map[string]string{AnnotationIPCMode: "private"},
			client: dropNS(specs.IPCNamespace),
			want: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.IPCNamespace})
			}},
		{name: "top private over max refused", policy: sized, ann: map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: "2g"},
			wantErr: `nsiso: container "c": nsiso/shm-size="2Gi": /dev/shm of 2Gi is over max_container_shm_size=1Gi`},
		{name: "top unset client bind is not size-capped", policy: sized, client: setShm(shmBind("/run/x/shm")), want: sizedSysV},
		{name: "top unset default size replaces client size", policy: sized, client: setShm(shmTmpfs("2g")),
			want: edits(setShm(shmTmpfs("268435456")), sizedSysV)},
		{name: "top unset client tmpfs over max without default refused", policy: Policy{MaxShmSize: 1 << 30}, client: setShm(shmTmpfs("2g")),
			wantErr: `nsiso: container "c": mounts./dev/shm.options="size=2g": /dev/shm of 2Gi is over max_container_shm_size=1Gi`},
		{name: "top private client tmpfs over max refused", policy: Policy{MaxShmSize: 1 << 20}, ann: map[string]string{AnnotationIPCMode: "private"},
			wantErr: `nsiso: container "c": mounts./dev/shm.options="size=65536k": /dev/shm of 64Mi is over max_container_shm_size=1Mi`},
		{name: "top share-parent refused", policy: strict, ann: map[string]string{AnnotationIPCMode: "share-parent"},
			wantErr: `nsiso: container "c": nsiso/ipc-mode="share-parent": shares (the parent of a top-level container is the host) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "top share-parent lenient joins host", policy: lenient, ann: map[string]string{AnnotationIPCMode: "share-parent"},
			want: edits(dropNS(specs.IPCNamespace), setShm(shmBind("/dev/shm")))},
		{name: "top share-parent ignores default size", policy: Policy{DefaultShmSize: 1 << 30}, ann: map[string]string{AnnotationIPCMode: "share-parent"},
			want: edits(dropNS(specs.IPCNamespace), setShm(shmBind("/dev/shm")))},

		// IPC, nested.
		{name: "nested unset joins parent with own shm", policy: sized, ann: map[string]string{AnnotationParent: "p"}, parent: parent,
			want: edits(setNS(specs.IPCNamespace, pinIPC), setShm(shmTmpfs("268435456")))},
		{name: "nested unset keeps client path", policy: strict, ann: map[string]string{AnnotationParent: "p"},
			client: setNS(specs.IPCNamespace, otherIPC)},
		{name: "nested unset parent shares host refused", policy: strict, ann: map[string]string{AnnotationParent: "hostkid"}, parent: hostKid,
			wantErr: `nsiso: container "c": nsiso/parent="hostkid": shares (with nsiso/ipc-mode unset a nested container joins its parent's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "nested share-parent", policy: strict, ann: map[string]string{AnnotationParent: "p", AnnotationIPCMode: "share-parent"}, parent: parent,
			want: edits(setNS(specs.IPCNamespace, pinIPC), setShm(shmBind(pinShm)))},
		{name: "nested share-parent of host sharer refused", policy: strict, ann: map[string]string{AnnotationParent: "hostkid", AnnotationIPCMode: "share-parent"}, parent: hostKid,
			wantErr: `nsiso: container "c": nsiso/ipc-mode="share-parent": shares (parent container "hostkid") the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "nested share-parent of host sharer lenient", policy: lenient, ann: map[string]string{AnnotationParent: "hostkid", AnnotationIPCMode: "share-parent"}, parent: hostKid,
			want: edits(setNS(specs.IPCNamespace, hostPinIPC), setShm(shmBind(hostPinShm)))},
		{name: "nested private", policy: strict, ann: map[string]string{AnnotationParent: "p", AnnotationIPCMode: "private", AnnotationShmSize: "1Gi"},
			want: setShm(shmTmpfs("1073741824"))},
		{name: "nested not pinned is a bug", policy: strict, ann: map[string]string{AnnotationParent: "p", AnnotationIPCMode: "share-parent"},
			wantErr: `specmod: parent "p" of "c" was not pinned`},

		// PID.
		{name: "top pid private", policy: strict, ann: map[string]string{AnnotationPIDMode: "private"}, client: setNS(specs.PIDNamespace, otherPID),
			want: setNS(specs.PIDNamespace, "")},
		{name: "top pid unset keeps path", policy: strict, client: setNS(specs.PIDNamespace, otherPID)},
		{name: "top pid unset host refused", policy: strict, client: dropNS(specs.PIDNamespace),
			wantErr: `nsiso: container "c": linux.namespaces="no pid entry": shares (the spec leaves the container in the runtime's PID namespace) the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "top pid unset host path refused", policy: strict, client: setNS(specs.PIDNamespace, hostPID),
			wantErr: `nsiso: container "c": linux.namespaces.pid.path="/proc/1/ns/pid": shares the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "top pid share-parent refused", policy: strict, ann: map[string]string{AnnotationPIDMode: "share-parent"},
			wantErr: `nsiso: container "c": nsiso/pid-mode="share-parent": shares (the parent of a top-level container is the host) the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "top pid share-parent lenient", policy: lenient, ann: map[string]string{AnnotationPIDMode: "share-parent"},
			want: dropNS(specs.PIDNamespace)},
		{name: "top pid share-parent allowed by pid rule alone", policy: Policy{DisallowHostIPC: true}, ann: map[string]string{AnnotationPIDMode: "share-parent"},
			want: dropNS(specs.PIDNamespace)},
		{name: "nested pid share-parent", policy: strict, ann: map[string]string{AnnotationParent: "p", AnnotationPIDMode: "share-parent", AnnotationIPCMode: "private"}, parent: parent,
			want: setNS(specs.PIDNamespace, pinPID)},
		{name: "nested pid share-parent of host sharer refused", policy: strict, ann: map[string]string{AnnotationParent: "hostkid", AnnotationPIDMode: "share-parent", AnnotationIPCMode: "private"}, parent: hostKid,
			wantErr: `nsiso: container "c": nsiso/pid-mode="share-parent": shares (parent container "hostkid") the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "nested pid unset keeps new", policy: strict, ann: map[string]string{AnnotationParent: "p", AnnotationIPCMode: "private"}},
		{name: "nested pid private", policy: strict, ann: map[string]string{AnnotationParent: "p", AnnotationIPCMode: "private", AnnotationPIDMode: "private"}},

		// CRI: the sandbox is the parent; what CRI put in the spec stays.
		{name: "cri container keeps pod namespaces", policy: strict,
			ann:    map[string]string{AnnotationCRIContainerType: "container", AnnotationCRISandboxID: "sb"},
			client: edits(setNS(specs.IPCNamespace, otherIPC), setNS(specs.PIDNamespace, otherPID), setShm(shmBind("/run/sb/shm")))},
		{name: "cri container share-parent joins sandbox", policy: strict,
			ann:    map[string]string{AnnotationCRIContainerType: "container", AnnotationCRISandboxID: "p", AnnotationIPCMode: "share-parent"},
			parent: parent,
			client: edits(setNS(specs.IPCNamespace, otherIPC), setShm(shmBind("/run/sb/shm"))),
			want:   edits(setNS(specs.IPCNamespace, pinIPC), setShm(shmBind(pinShm)))},
		{name: "cri container private opts out of pod", policy: sized,
			ann:    map[string]string{AnnotationCRIContainerType: "container", AnnotationCRISandboxID: "sb", AnnotationIPCMode: "private"},
			client: edits(setNS(specs.IPCNamespace, otherIPC), setShm(shmBind("/run/sb/shm"))),
			want:   edits(setNS(specs.IPCNamespace, ""), setShm(shmTmpfs("268435456")), sizedSysV)},
		{name: "cri hostIPC pod refused", policy: strict,
			ann:     map[string]string{AnnotationCRIContainerType: "sandbox", AnnotationCRISandboxID: "sb"},
			client:  edits(dropNS(specs.IPCNamespace), setShm(shmBind("/dev/shm"))),
			wantErr: `nsiso: container "c": linux.namespaces="no ipc entry": shares (the spec leaves the container in the runtime's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},

		// Annotation errors.
		{name: "size without private", policy: strict, ann: map[string]string{AnnotationIPCMode: "share-parent", AnnotationShmSize: "1Gi"},
			wantErr: `nsiso: container "c": nsiso/shm-size="1Gi": only allowed with nsiso/ipc-mode=private, got ipc-mode "share-parent"`},
		{name: "size with unset", policy: strict, ann: map[string]string{AnnotationShmSize: "1Gi"},
			wantErr: `nsiso: container "c": nsiso/shm-size="1Gi": only allowed with nsiso/ipc-mode=private, got no ipc-mode`},
		{name: "bad mode", policy: strict, ann: map[string]string{AnnotationIPCMode: "host"},
			wantErr: `nsiso: container "c": nsiso/ipc-mode="host": unknown mode (use "private" or "share-parent")`},
		{name: "bad size", policy: strict, ann: map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: "12 parsecs"},
			wantErr: `nsiso: container "c": nsiso/shm-size="12 parsecs": size "12 parsecs" has unknown unit "parsecs" (use Ki, Mi, Gi, Ti, k, m, g, t or bytes)`},
		{name: "unknown key", policy: strict, ann: map[string]string{"nsiso/ipcmode": "private"},
			wantErr: `nsiso: container "c": nsiso/ipcmode="private": unknown nsiso annotation (known: nsiso/ipc-mode, nsiso/shm-size, nsiso/pid-mode, nsiso/parent, and for pods <key>.<container-name>)`},
		{name: "own parent", policy: strict, ann: map[string]string{AnnotationParent: "c"},
			wantErr: `nsiso: container "c": nsiso/parent="c": a container cannot be its own parent`},
		{name: "parent path walks to another namespace", policy: strict, ann: map[string]string{AnnotationParent: "../other/victim"},
			wantErr: `nsiso: container "c": nsiso/parent="../other/victim": not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)`},
		{name: "parent absolute path", policy: strict, ann: map[string]string{AnnotationParent: "/etc"},
			wantErr: `nsiso: container "c": nsiso/parent="/etc": not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)`},
		{name: "parent dot-dot", policy: strict, ann: map[string]string{AnnotationParent: ".."},
			wantErr: `nsiso: container "c": nsiso/parent="..": not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)`},
		{name: "parent empty", policy: strict, ann: map[string]string{AnnotationParent: " "},
			wantErr: `nsiso: container "c": nsiso/parent=" ": not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)`},
		{name: "parent too long is echoed truncated", policy: strict, ann: map[string]string{AnnotationParent: strings.Repeat("a", 5000)},
			wantErr: `nsiso: container "c": nsiso/parent="` + strings.Repeat("a", 128) + `…": not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			if tc.client != nil {
				tc.client(s)
			}
			s.Annotations = tc.ann
			want := clone(t, s)
			if tc.want != nil {
				tc.want(want)
			}
			err := rewrite(s, "c", tc.policy, tc.parent)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error:\n got %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(s, want) {
				t.Fatalf("spec:\n got %s\nwant %s", dump(t, s), dump(t, want))
			}
		})
	}
}

// rewrite runs the engine as the shim does and, where the plan mounts the
// container's own /dev/shm on the host, puts that tmpfs back in the spec
// in place of its bind, so expectations read as what the container gets.
func rewrite(s *specs.Spec, id string, p Policy, parent Parent) error {
	req, err := ParseRequest(id, s.Annotations)
	if err != nil {
		return err
	}
	plan, err := Rewrite(s, Input{ID: id, Request: req, Policy: p, Parent: parent, Host: fakeHost{}, Bundle: testBundle, OwnShmDir: testOwnShm})
	if err != nil {
		return err
	}
	if plan.OwnShm != nil {
		i := shmMountIndex(s.Mounts)
		if i < 0 || !reflect.DeepEqual(s.Mounts[i], shmBind(testOwnShm)) {
			return fmt.Errorf("plan mounts own /dev/shm but the spec does not bind it: %+v", s.Mounts)
		}
		s.Mounts[i] = specs.Mount{Destination: ShmPath, Type: "tmpfs", Source: "shm", Options: plan.OwnShm.Options}
	}
	if plan.PodShm != nil {
		return fmt.Errorf("unexpected pod /dev/shm resize %+v", plan.PodShm)
	}
	return nil
}

func TestRejectionsAreErrors(t *testing.T) {
	s := baseSpec()
	s.Annotations = map[string]string{AnnotationIPCMode: "share-parent"}
	err := rewrite(s, "web", strict, Parent{})
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("want *Error, got %T %v", err, err)
	}
	if pe.Container != "web" || pe.Key != AnnotationIPCMode || pe.Value != "share-parent" {
		t.Fatalf("unexpected fields: %+v", pe)
	}
}

func TestParentNeeds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func(*specs.Spec)
		req    Request
		want   Needs
	}{
		{name: "top-level needs nothing", req: Request{IPC: ModeShareParent, PID: ModeShareParent}},
		{name: "share both", req: Request{Parent: "p", IPC: ModeShareParent, PID: ModeShareParent}, want: Needs{IPC: true, Shm: true, PID: true}},
		{name: "unset fresh ipc joins parent", req: Request{Parent: "p"}, want: Needs{IPC: true}},
		{name: "unset with path keeps client", req: Request{Parent: "p"}, client: setNS(specs.IPCNamespace, otherIPC)},
		{name: "unset with host keeps client", req: Request{Parent: "p"}, client: dropNS(specs.IPCNamespace)},
		{name: "private needs nothing", req: Request{Parent: "p", IPC: ModePrivate, PID: ModePrivate}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			if tc.client != nil {
				tc.client(s)
			}
			if got := ParentNeeds(s, tc.req); got != tc.want {
				t.Fatalf("got %+v want %+v", got, tc.want)
			}
		})
	}
}

func clone(t *testing.T, s *specs.Spec) *specs.Spec {
	t.Helper()
	var out specs.Spec
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func dump(t *testing.T, s *specs.Spec) string {
	b, _ := json.MarshalIndent(struct {
		NS     any
		Mounts any
	}{s.Linux.Namespaces, s.Mounts}, "", " ")
	return string(b)
}
