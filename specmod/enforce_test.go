package specmod

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// What the kernel and runc will read of a spec, not what it seems to say:
// each case is an attack that a reading of the spec's own structure would
// let through.
func TestJudgedAsRuncRuns(t *testing.T) {
	capped := Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: 64 << 20}
	tmpfs := func(opts ...string) specs.Mount {
		return specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: opts}
	}
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		edit    func(*specs.Spec)
		wantErr string
		// wantSize is the /dev/shm size the kernel will read, when accepted.
		wantSize string
	}{
		{name: "size=0 hidden in a joined option after a legal size", edit: setShm(tmpfs("size=1m", "mode=1777,size=0")), wantSize: "67108864"},
		{name: "size=0 hidden in a private container's option", ann: map[string]string{AnnotationIPCMode: "private"},
			edit: setShm(tmpfs("size=1m", "mode=1777,size=0")), wantSize: "67108864"},
		{name: "an oversize size hidden in a joined option", edit: setShm(tmpfs("size=1m", "mode=1777,size=1g")),
			wantErr: `mounts./dev/shm.options="size=1g": /dev/shm of 1Gi is over max_container_shm_size=64Mi`},
		{name: "nr_blocks hidden in a joined option", edit: setShm(tmpfs("size=1m", "mode=1777,nr_blocks=0")),
			wantErr: `mounts./dev/shm.options="nr_blocks=0": a tmpfs sized in blocks cannot be checked`},
		{name: "a hexadecimal size", edit: setShm(tmpfs("size=0x40000000")),
			wantErr: `mounts./dev/shm.options="size=0x40000000": not a tmpfs size`},
		{name: "ramfs, which has no size, becomes a capped tmpfs", edit: setShm(specs.Mount{Destination: "/dev/shm", Type: "ramfs", Source: "ramfs"}), wantSize: "67108864"},
		{name: "a later /dev hides the capped /dev/shm", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=0"}})
		}, wantErr: `mounts./dev.destination="/dev": mounted after /dev/shm, it hides the /dev/shm`},
		{name: "an overlay layer hidden in a joined option", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{"index=off,lowerdir=/dev/shm:/x"}})
		}, wantErr: `mounts./o.options="lowerdir=/dev/shm:/x": shares the host's /dev/shm`},
		{name: "an overlay layer added with lowerdir+", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/x", "lowerdir+=/dev/shm"}})
		}, wantErr: `mounts./o.options="lowerdir+=/dev/shm": shares the host's /dev/shm`},
		{name: "an escaped overlay option", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{`lowerdir=/x\`, "upperdir=/u"}})
		}, wantErr: `mounts./o.options="lowerdir=/x\\": an escaped overlay option, so nsiso cannot tell which host paths it shows`},
		{name: "a relative overlay layer", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{"lowerdir=../../dev/shm"}})
		}, wantErr: `mounts./o.options="lowerdir=../../dev/shm": a relative overlay layer`},
		{name: "no mount namespace", edit: dropNS(specs.MountNamespace),
			wantErr: `linux.namespaces="no mount entry": shares (runc then mounts in the host's mount namespace, where the host's /dev/shm stays reachable) the host's MOUNT namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "the host's mount namespace", edit: setNS(specs.MountNamespace, "/proc/1/ns/mnt"),
			wantErr: `linux.namespaces.mount.path="/proc/1/ns/mnt": shares the host's MOUNT namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "a relative namespace path", edit: setNS(specs.IPCNamespace, "../../../../proc/1/ns/ipc"),
			wantErr: `linux.namespaces.ipc.path="../../../../proc/1/ns/ipc": not an absolute path`},
		{name: "a namespace named twice", edit: func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: hostIPC})
		}, wantErr: `linux.namespaces="ipc": the ipc namespace is named twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			tc.edit(s)
			s.Annotations = tc.ann
			err := rewrite(s, "c", capped, Parent{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v\nwant …%s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var last string
			for _, o := range strings.Split(strings.Join(s.Mounts[shmMountIndex(s.Mounts)].Options, ","), ",") {
				if v, ok := strings.CutPrefix(o, "size="); ok {
					last = v
				}
			}
			if last != tc.wantSize {
				t.Errorf("the kernel reads size=%s, want %s (options %q)", last, tc.wantSize, s.Mounts[shmMountIndex(s.Mounts)].Options)
			}
		})
	}
}

// No refusal is longer than its bound, whatever the size of what it quotes.
func TestRefusalsAreShort(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for _, tc := range []struct {
		name string
		ann  map[string]string
		edit func(*specs.Spec)
	}{
		{name: "shm-size", ann: map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: "1" + huge}},
		{name: "shm-size of spaces", ann: map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: strings.Repeat(" ", 1<<20) + "x"}},
		{name: "ipc-mode", ann: map[string]string{AnnotationIPCMode: huge}},
		{name: "parent", ann: map[string]string{AnnotationParent: huge}},
		{name: "unknown key", ann: map[string]string{AnnotationPrefix + huge: huge}},
		{name: "namespace path", edit: setNS(specs.IPCNamespace, huge)},
		{name: "bind source", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/gone/" + huge})
		}},
		{name: "overlay option", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/o", Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/" + huge + `\`}})
		}},
		{name: "tmpfs size", edit: setShm(tmpfsWith("size=" + huge))},
		{name: "destination", edit: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/dev/" + huge + "/..", Type: "ramfs"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			if tc.edit != nil {
				tc.edit(s)
			}
			s.Annotations = tc.ann
			err := rewrite(s, huge, Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: 32 << 20}, Parent{})
			if err == nil {
				t.Fatal("accepted")
			}
			if n := len(err.Error()); n > 2*MaxReason {
				t.Errorf("a %d-byte refusal", n)
			}
		})
	}
}

func tmpfsWith(opts ...string) specs.Mount {
	return specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: opts}
}
