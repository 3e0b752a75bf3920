package specmod

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// capShmSize holds the tmpfs the container sees at /dev/shm to
// max_container_shm_size, whoever wrote it, reading its options as the
// kernel will (KernelOptions): one with a byte size over the cap is
// refused, one without a size (or size=0, which tmpfs reads as unlimited)
// is given the cap, and sizes the cap cannot be checked against without
// reading the node's memory (a percentage, nr_blocks) are refused. A
// /dev/shm that is neither a tmpfs nor a bind (ramfs has no size), or one
// that a later mount on /dev or / hides, cannot be held to the cap and is
// refused.
func capShmSize(s *specs.Spec, in Input, d decision) error {
	max := in.Policy.MaxShmSize
	if max == 0 {
		return nil
	}
	i := shmMountIndex(s.Mounts)
	if i < 0 {
		return nil
	}
	for _, m := range s.Mounts[i+1:] {
		if dest := MountDest(m); dest == "/dev" || dest == "/" {
			return reject(in.ID, in.Request, "mounts."+dest+".destination", m.Destination, "mounted after /dev/shm, it hides the /dev/shm that %s=%s holds; mount /dev before /dev/shm", RuleMaxShmSize, FormatSize(max))
		}
	}
	m := &s.Mounts[i]
	if IsBind(*m) {
		return nil
	}
	if !isTmpfs(*m) {
		return reject(in.ID, in.Request, "mounts./dev/shm.type", m.Type, "only a tmpfs (or a bind) on /dev/shm can be held to %s=%s", RuleMaxShmSize, FormatSize(max))
	}
	c := cause{"mounts./dev/shm.options", "", ""}
	if d.shmSize != nil {
		c = *d.shmSize
	}
	if v, ok := optionValue(m.Options, "nr_blocks="); ok {
		return reject(in.ID, in.Request, "mounts./dev/shm.options", "nr_blocks="+v, "a tmpfs sized in blocks cannot be checked against %s=%s; give size= in bytes", RuleMaxShmSize, FormatSize(max))
	}
	v, ok := optionValue(m.Options, "size=")
	if !ok {
		m.Options = setOption(m.Options, "size=", "size="+strconv.FormatInt(max, 10))
		return nil
	}
	if c.value == "" {
		c.value = "size=" + v
	}
	if strings.HasSuffix(v, "%") {
		return reject(in.ID, in.Request, c.key, c.value, "a /dev/shm sized in percent of memory cannot be checked against %s=%s; give a size in bytes", RuleMaxShmSize, FormatSize(max))
	}
	size, ok := parseTmpfsSize(v)
	if !ok {
		return reject(in.ID, in.Request, c.key, c.value, "not a tmpfs size")
	}
	if size == 0 {
		m.Options = setOption(m.Options, "size=", "size="+strconv.FormatInt(max, 10))
		return nil
	}
	if size > max {
		return reject(in.ID, in.Request, c.key, c.value, "/dev/shm of %s is over %s=%s", FormatSize(size), RuleMaxShmSize, FormatSize(max))
	}
	return nil
}

// CheckNamespacePaths refuses a namespace path that is not absolute and a
// namespace type named twice, both of which the OCI runtime spec forbids:
// runc opens a relative path from its own working directory, and acts on
// every entry of a type, so nsiso could judge neither as runc runs it. r
// is the container's request, for the refusal.
func CheckNamespacePaths(id string, r Request, s *specs.Spec) error {
	if s.Linux == nil {
		return nil
	}
	for i, n := range s.Linux.Namespaces {
		if n.Path != "" && !path.IsAbs(n.Path) {
			return reject(id, r, "linux.namespaces."+string(n.Type)+".path", n.Path, "not an absolute path (the OCI runtime spec requires one; runc would open it relative to its own working directory)")
		}
		for _, o := range s.Linux.Namespaces[:i] {
			if o.Type == n.Type {
				return reject(id, r, "linux.namespaces", string(n.Type), "the %s namespace is named twice (the OCI runtime spec allows one entry per type)", n.Type)
			}
		}
	}
	return nil
}

// JudgesNamespace tells whether the node's rules judge a namespace of type
// t, as enforce does: the IPC rule judges the IPC and mount namespaces, the
// PID rule the PID namespace. The shim holds open only the paths judged.
func (p Policy) JudgesNamespace(t specs.LinuxNamespaceType) bool {
	switch t {
	case specs.IPCNamespace, specs.MountNamespace:
		return p.DisallowHostIPC
	case specs.PIDNamespace:
		return p.DisallowHostPID
	}
	return false
}

// enforce checks the final spec, whatever produced it: the node's rules hold
// for every client (ctr, nerdctl, CRI) and for every chain of parents. Each
// rule is one function, as in runc's config validation.
func enforce(s *specs.Spec, in Input, d decision, p Plan) error {
	if in.Policy.DisallowHostIPC {
		if err := checkHostNamespace(s, in, specs.IPCNamespace, d.ipc, RuleDisallowHostIPC); err != nil {
			return err
		}
		if err := checkHostNamespace(s, in, specs.MountNamespace, mountCause(s, in), RuleDisallowHostIPC); err != nil {
			return err
		}
		if err := checkHostShm(s, in, d, p); err != nil {
			return err
		}
	}
	if in.Policy.DisallowHostPID {
		if err := checkHostNamespace(s, in, specs.PIDNamespace, d.pid, RuleDisallowHostPID); err != nil {
			return err
		}
	}
	return nil
}

// checkHostNamespace refuses a spec whose namespace of type t is the host's:
// no entry for it, or a path to the host's namespace.
func checkHostNamespace(s *specs.Spec, in Input, t specs.LinuxNamespaceType, c cause, rule string) error {
	kind := strings.ToUpper(string(t))
	host, err := isHostNS(s, in.Host, t)
	if err != nil {
		return reject(in.ID, in.Request, c.key, c.value, "cannot tell whether this is the host's %s namespace (%v); refused because of %s=true", kind, err, rule)
	}
	if host {
		return reject(in.ID, in.Request, c.key, c.value, "%s the host's %s namespace, forbidden by %s=true", sharesWhy(c), kind, rule)
	}
	return nil
}

// checkHostShm refuses a spec that would show the host's /dev/shm (POSIX
// shared memory, which an IPC namespace does not separate) anywhere in the
// container: at /dev/shm or any other destination, through a bind of it,
// of anything on its file system, or a recursive bind of a directory above
// it, and through the container's root.
func checkHostShm(s *specs.Spec, in Input, d decision, p Plan) error {
	if in.Host == nil {
		return fmt.Errorf("specmod: no host checker")
	}
	shm := shmMountIndex(s.Mounts)
	if shm < 0 && s.Root != nil && path.Clean(s.Root.Path) == "/" {
		return reject(in.ID, in.Request, d.shm.key, d.shm.value, "%s the host's /dev/shm, forbidden by %s=true", sharesWhy(d.shm), RuleDisallowHostIPC)
	}
	if s.Root != nil && path.Clean(s.Root.Path) != "/" {
		root := hostPath(in.Bundle, s.Root.Path)
		host, err := in.Host.ExposesHostShm(root, true)
		if err != nil {
			return reject(in.ID, in.Request, "root.path", s.Root.Path, "cannot tell whether the container's root shows the host's /dev/shm (%v); refused because of %s=true", err, RuleDisallowHostIPC)
		}
		if host {
			return reject(in.ID, in.Request, "root.path", s.Root.Path, "shows the host's /dev/shm, forbidden by %s=true", RuleDisallowHostIPC)
		}
	}
	for i, m := range s.Mounts {
		if p.OwnShm != nil && i == shm {
			continue // the tmpfs nsiso mounts for this container
		}
		srcs, bad := mountSources(m, in.Bundle)
		if bad != nil {
			return reject(in.ID, in.Request, "mounts."+MountDest(m)+"."+bad.key, bad.value, "%s, so nsiso cannot tell which host paths it shows; refused because of %s=true", bad.why, RuleDisallowHostIPC)
		}
		for _, src := range srcs {
			c := cause{"mounts." + MountDest(m) + "." + src.field, src.value, ""}
			if i == shm {
				c = d.shm
			}
			host, err := in.Host.ExposesHostShm(src.path, src.recursive)
			if err != nil {
				return reject(in.ID, in.Request, c.key, c.value, "cannot tell whether %s is the host's /dev/shm (%v); refused because of %s=true", Truncate(src.path), innermost(err), RuleDisallowHostIPC)
			}
			if host {
				return reject(in.ID, in.Request, c.key, c.value, "%s the host's /dev/shm, forbidden by %s=true", sharesWhy(c), RuleDisallowHostIPC)
			}
		}
	}
	return nil
}

// mountCause names the mount namespace entry: without one runc mounts in
// the host's mount namespace and only changes root, which leaves the
// host's /dev/shm (and its mounts) reachable from the container.
func mountCause(s *specs.Spec, in Input) cause {
	ns, ok := namespace(s, specs.MountNamespace)
	switch {
	case !ok:
		return cause{"linux.namespaces", "no mount entry", "runc then mounts in the host's mount namespace, where the host's /dev/shm stays reachable"}
	case ns.Path != "":
		return cause{"linux.namespaces.mount.path", in.clientPath(specs.MountNamespace, ns.Path), ""}
	}
	return cause{"linux.namespaces.mount", "", ""}
}

// innermost is the cause at the bottom of an error's chain (an errno, for a
// failed stat), which does not repeat the path the message names, cut.
func innermost(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func sharesWhy(c cause) string {
	if c.why == "" {
		return "shares"
	}
	return "shares (" + c.why + ")"
}

func isHostNS(s *specs.Spec, h HostChecker, t specs.LinuxNamespaceType) (bool, error) {
	ns, ok := namespace(s, t)
	if !ok {
		return true, nil
	}
	if ns.Path == "" {
		return false, nil
	}
	if h == nil {
		return false, fmt.Errorf("no host checker")
	}
	return h.IsHostNamespace(t, ns.Path)
}

// source is a host path a mount shows inside the container.
type source struct {
	path      string
	recursive bool
	// field and value name it in the spec, for messages.
	field, value string
}

// mountSources lists the host paths a mount shows in the container: a
// bind's source (relative to the bundle, as runc resolves it; its
// submounts too for rbind), and an overlay's layers as the kernel reads
// its options. Other mounts (tmpfs, proc, sysfs, devpts, mqueue, cgroup)
// show no host path. An overlay whose layers nsiso cannot read as the
// kernel will is returned as a cause to refuse: escapes (overlayfs reads
// "\," and "\:" as part of a path) and relative layers (resolved from
// wherever runc's mount runs).
func mountSources(m specs.Mount, bundle string) ([]source, *cause) {
	if IsBind(m) {
		return []source{{hostPath(bundle, m.Source), hasOption(m.Options, "rbind"), "source", m.Source}}, nil
	}
	if m.Type != "overlay" {
		return nil, nil
	}
	var out []source
	for _, o := range KernelOptions(m.Options) {
		if strings.Contains(o, "\\") {
			return nil, &cause{"options", o, "an escaped overlay option"}
		}
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		var layers []string
		switch k {
		case "lowerdir", "lowerdir+", "datadir+":
			layers = strings.Split(v, ":")
		case "upperdir", "workdir":
			layers = []string{v}
		}
		for _, l := range layers {
			if l == "" {
				continue
			}
			if !path.IsAbs(l) {
				return nil, &cause{"options", o, "a relative overlay layer"}
			}
			out = append(out, source{l, false, "options", o})
		}
	}
	return out, nil
}

// hostPath is where runc finds a spec path on the host: relative paths are
// relative to the bundle.
func hostPath(bundle, p string) string {
	if filepath.IsAbs(p) || bundle == "" {
		return p
	}
	return filepath.Join(bundle, p)
}

func hasOption(opts []string, want ...string) bool {
	for _, o := range opts {
		for _, w := range want {
			if o == w {
				return true
			}
		}
	}
	return false
}
