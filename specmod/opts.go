package specmod

import (
	"path"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Opt changes one thing in a spec, in the manner of containerd's
// oci.SpecOpts, so that policies are compositions of small, testable steps.
type Opt func(*specs.Spec) error

// ShmPath is where containers see POSIX shared memory.
const ShmPath = "/dev/shm"

// HostShmSource is the host's /dev/shm, bound into a container that shares
// the host's IPC namespace so that POSIX and System V IPC stay consistent.
const HostShmSource = "/dev/shm"

// shmBindOptions are those containerd's CRI plugin uses for a pod's shared
// /dev/shm: read-write, but nothing executable or set-uid comes through.
var shmBindOptions = []string{"rbind", "nosuid", "nodev", "noexec", "rw"}

// defaultShmOptions are containerd's defaults for a container's own tmpfs,
// used when the client's spec had no /dev/shm mount at all.
var defaultShmOptions = []string{"nosuid", "noexec", "nodev", "mode=1777"}

// Apply runs opts on s in order and stops at the first error.
func Apply(s *specs.Spec, opts ...Opt) error {
	for _, o := range opts {
		if err := o(s); err != nil {
			return err
		}
	}
	return nil
}

func ensureLinux(s *specs.Spec) {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
}

// WithNewNamespace makes the container get a namespace of type t of its own.
func WithNewNamespace(t specs.LinuxNamespaceType) Opt {
	return WithNamespacePath(t, "")
}

// WithNamespacePath makes the container join the namespace at path (or get a
// new one when path is empty).
func WithNamespacePath(t specs.LinuxNamespaceType, p string) Opt {
	return func(s *specs.Spec) error {
		ensureLinux(s)
		for i := range s.Linux.Namespaces {
			if s.Linux.Namespaces[i].Type == t {
				s.Linux.Namespaces[i].Path = p
				return nil
			}
		}
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t, Path: p})
		return nil
	}
}

// WithHostNamespace makes the container stay in the runtime's (the host's)
// namespace of type t, which the OCI spec expresses by leaving it out.
func WithHostNamespace(t specs.LinuxNamespaceType) Opt {
	return func(s *specs.Spec) error {
		if s.Linux == nil {
			return nil
		}
		ns := s.Linux.Namespaces[:0]
		for _, n := range s.Linux.Namespaces {
			if n.Type != t {
				ns = append(ns, n)
			}
		}
		s.Linux.Namespaces = ns
		return nil
	}
}

// WithShmTmpfs gives the container its own tmpfs on /dev/shm. A size of 0
// keeps the size the client's spec had, if any (without one the kernel
// default applies: half of RAM).
func WithShmTmpfs(size int64) Opt {
	return func(s *specs.Spec) error {
		i := shmMountIndex(s.Mounts)
		if i < 0 {
			opts := append([]string(nil), defaultShmOptions...)
			if size > 0 {
				opts = append(opts, "size="+strconv.FormatInt(size, 10))
			}
			insertShmMount(s, specs.Mount{Destination: ShmPath, Type: "tmpfs", Source: "shm", Options: opts})
			return nil
		}
		m := &s.Mounts[i]
		if !isTmpfs(*m) {
			// A bind (of a parent's or the host's /dev/shm) is replaced
			// whole: its options make no sense on a tmpfs.
			*m = specs.Mount{Destination: ShmPath, Type: "tmpfs", Source: "shm", Options: append([]string(nil), defaultShmOptions...)}
		}
		if size > 0 {
			m.Options = setOption(m.Options, "size=", "size="+strconv.FormatInt(size, 10))
		}
		return nil
	}
}

// WithShmBind makes the container's /dev/shm a bind mount of source.
func WithShmBind(source string) Opt {
	return func(s *specs.Spec) error {
		m := specs.Mount{Destination: ShmPath, Type: "bind", Source: source, Options: append([]string(nil), shmBindOptions...)}
		if i := shmMountIndex(s.Mounts); i >= 0 {
			s.Mounts[i] = m
		} else {
			insertShmMount(s, m)
		}
		return nil
	}
}

// ShmMount returns the mount the container sees at /dev/shm, the last one
// there; ok is false when there is none.
func ShmMount(mounts []specs.Mount) (m specs.Mount, ok bool) {
	if i := shmMountIndex(mounts); i >= 0 {
		return mounts[i], true
	}
	return specs.Mount{}, false
}

// shmMountIndex returns the index of ShmMount's mount, or -1.
func shmMountIndex(mounts []specs.Mount) int {
	for i := len(mounts) - 1; i >= 0; i-- {
		if MountDest(mounts[i]) == ShmPath {
			return i
		}
	}
	return -1
}

// insertShmMount puts m right after the /dev mount, since a mount on /dev
// placed later would hide it.
func insertShmMount(s *specs.Spec, m specs.Mount) {
	at := len(s.Mounts)
	for i := range s.Mounts {
		if MountDest(s.Mounts[i]) == "/dev" {
			at = i + 1
		}
	}
	s.Mounts = append(s.Mounts, specs.Mount{})
	copy(s.Mounts[at+1:], s.Mounts[at:])
	s.Mounts[at] = m
}

func isTmpfs(m specs.Mount) bool { return m.Type == "tmpfs" }

// IsBind tells whether runc mounts m as a bind: type "bind", or a "bind"
// or "rbind" option whatever the type says.
func IsBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	return hasOption(m.Options, "bind", "rbind")
}

// MountDest is where a mount lands in the container: runc takes a
// relative destination as relative to the container's root, so "dev/shm"
// and "/dev/../dev/shm" are both /dev/shm.
func MountDest(m specs.Mount) string {
	if strings.HasPrefix(m.Destination, "/") {
		// Not Clean("/"+d): a clean path comes back without an allocation.
		return path.Clean(m.Destination)
	}
	return path.Clean("/" + m.Destination)
}

// KernelOptions is a mount's options as the kernel receives them: runc
// joins every option that is not one of its flags with "," into the mount
// data, and the kernel splits the data at every ",", so that one spec
// option "mode=1777,size=0" reaches it as two. No flag name holds a comma,
// so splitting every option keeps the kernel's order, flags among it. The
// options are returned as they are when none holds a comma.
func KernelOptions(opts []string) []string {
	split := false
	for _, o := range opts {
		if o == "" || strings.Contains(o, ",") {
			split = true
			break
		}
	}
	if !split {
		return opts
	}
	out := make([]string, 0, len(opts)+1)
	for _, o := range opts {
		for _, p := range strings.Split(o, ",") {
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// setOption replaces every option starting with prefix, as the kernel will
// read the options, by opt at the end.
func setOption(opts []string, prefix, opt string) []string {
	opts = KernelOptions(opts)
	out := make([]string, 0, len(opts)+1)
	for _, o := range opts {
		if !strings.HasPrefix(o, prefix) {
			out = append(out, o)
		}
	}
	return append(out, opt)
}

// optionValue is the value of the last option starting with prefix, as the
// kernel will read the options: the last one is the one it keeps.
func optionValue(opts []string, prefix string) (string, bool) {
	v, ok := "", false
	for _, o := range KernelOptions(opts) {
		if strings.HasPrefix(o, prefix) {
			v, ok = strings.TrimPrefix(o, prefix), true
		}
	}
	return v, ok
}

// namespace returns the entry of type t and whether the spec has one.
func namespace(s *specs.Spec, t specs.LinuxNamespaceType) (specs.LinuxNamespace, bool) {
	if s.Linux == nil {
		return specs.LinuxNamespace{}, false
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == t {
			return n, true
		}
	}
	return specs.LinuxNamespace{}, false
}

// moveShmToHost moves a container's own /dev/shm tmpfs out of the
// container: the shim mounts the returned tmpfs at dir on the host and the
// container binds dir. A tmpfs mounted by runc lives only in the
// container's mount namespace, where no other container can bind it; one
// on the host can be shared with a child (share-parent), as Mesos and
// Docker's "shareable" IPC mode do. It returns nil when the container has
// no tmpfs of its own.
func moveShmToHost(s *specs.Spec, dir string) *Tmpfs {
	i := shmMountIndex(s.Mounts)
	if i < 0 || !isTmpfs(s.Mounts[i]) {
		return nil
	}
	t := &Tmpfs{Options: append([]string(nil), s.Mounts[i].Options...)}
	if v, ok := optionValue(t.Options, "size="); ok {
		t.Size, _ = parseTmpfsSize(v)
	}
	s.Mounts[i] = specs.Mount{Destination: ShmPath, Type: "bind", Source: dir, Options: append([]string(nil), shmBindOptions...)}
	return t
}
