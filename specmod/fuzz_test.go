package specmod

import (
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FuzzParseSize checks that any accepted size is positive and that its
// canonical form reads back to the same number of bytes.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"256Mi", "1g", "1.5G", "4096", "0", "-1", "1e3", "NaN", "99999999999999999999Ti", ".5k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n <= 0 || n > maxSize {
			t.Fatalf("ParseSize(%q) = %d out of range", s, n)
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("round trip of %q: %d -> %q -> %d, %v", s, n, FormatSize(n), back, err)
		}
	})
}

// criTypes are the CRI container types a fuzzed spec may claim.
var criTypes = []string{"", criTypeSandbox, criTypeContainer}

// fuzzAnnotations builds a spec's annotations from fuzzed values.
func fuzzAnnotations(ipc, size, pid, parent, extraKey, extraValue string, cri uint8) map[string]string {
	ann := map[string]string{}
	for k, v := range map[string]string{AnnotationIPCMode: ipc, AnnotationShmSize: size, AnnotationPIDMode: pid, AnnotationParent: parent} {
		if v != "" {
			ann[k] = v
		}
	}
	if extraKey != "" {
		ann[extraKey] = extraValue
	}
	if t := criTypes[int(cri)%len(criTypes)]; t != "" {
		ann[AnnotationCRIContainerType] = t
		ann[AnnotationCRISandboxID] = "sb"
		ann[AnnotationCRIContainerName] = "app"
	}
	return ann
}

// FuzzParseRequest checks that annotation parsing never panics, that every
// rejection is an *Error naming the annotation at fault, and that accepted
// requests obey the rules.
func FuzzParseRequest(f *testing.F) {
	f.Add("private", "256Mi", "share-parent", "p", "", "", uint8(0))
	f.Add("share-parent", "1g", "", "", "", "", uint8(0))
	f.Add("", "", "private", "", "nsiso/bogus", "v", uint8(0))
	f.Add("host", "0", "x", "c", "", "", uint8(0))
	f.Add("", "1Gi", "", "", "", "", uint8(1))
	f.Add("", "1Gi", "", "", "nsiso/ipc-mode.app", "private", uint8(2))
	f.Add("", "", "", "../ns/victim", "", "", uint8(2))
	f.Fuzz(func(t *testing.T, ipc, size, pid, parent, extraKey, extraValue string, cri uint8) {
		ann := fuzzAnnotations(ipc, size, pid, parent, extraKey, extraValue, cri)
		r, err := ParseRequest("c", ann)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Container != "c" {
				t.Fatalf("rejection %v is not a well-formed *Error", err)
			}
			if _, ok := ann[pe.Key]; !ok {
				t.Fatalf("rejection names %q, which is not an annotation of the spec", pe.Key)
			}
			return
		}
		if r.ShmSize != 0 && r.IPC != ModePrivate && !(r.Sandbox && r.IPC == ModeUnset) {
			t.Fatalf("accepted size %d with ipc mode %q (sandbox %v)", r.ShmSize, r.IPC, r.Sandbox)
		}
		if r.Parent == "c" {
			t.Fatal("accepted a container as its own parent")
		}
		if r.Parent != "" && !validID(r.Parent) {
			t.Fatalf("accepted parent %q, which is no containerd identifier", r.Parent)
		}
		if ann[AnnotationCRIContainerType] != "" && r.Parent != "" && r.ParentKey != AnnotationCRISandboxID {
			t.Fatalf("a pod's container got parent %q from %s", r.Parent, r.ParentKey)
		}
	})
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 76 {
		return false
	}
	for i, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		sep := c == '.' || c == '_' || c == '-'
		if !alnum && !(sep && i > 0 && i < len(s)-1 && !isSep(s[i-1])) {
			return false
		}
	}
	return true
}

func isSep(c byte) bool { return c == '.' || c == '_' || c == '-' }

// parseMounts reads fuzzed mounts, one per line: destination|type|source|
// options separated by ";" (so that one option may hold a ",", which runc
// passes on to the kernel as it is).
func parseMounts(text string) []specs.Mount {
	var out []specs.Mount
	for _, line := range strings.Split(text, "\n") {
		f := strings.SplitN(line, "|", 4)
		if len(f) < 3 || f[0] == "sysctl" {
			continue
		}
		m := specs.Mount{Destination: f[0], Type: f[1], Source: f[2]}
		if len(f) == 4 && f[3] != "" {
			m.Options = strings.Split(f[3], ";")
		}
		out = append(out, m)
	}
	return out
}

// The oracle below reads options as runc and the kernel do, written apart
// from the engine: runc joins its options with "," into the mount data
// (flags never hold a "," or a "="), tmpfs reads sizes with memparse (base
// 0, so "0x" is hex and a leading "0" octal), overlayfs splits at commas
// and colons not escaped by a backslash.

// kernelData is the mount data runc hands the kernel, split at ",".
func kernelData(opts []string) []string {
	return strings.Split(strings.Join(opts, ","), ",")
}

// tmpfsMaxBytes is the size limit the kernel gives a tmpfs with these
// options; ok is false when it is unlimited or not a byte count.
func tmpfsMaxBytes(opts []string) (n uint64, ok bool) {
	size, found := "", false
	for _, o := range kernelData(opts) {
		if v, cut := strings.CutPrefix(o, "size="); cut {
			size, found = v, true
		}
		if strings.HasPrefix(o, "nr_blocks=") {
			return 0, false
		}
	}
	if !found {
		return 0, false
	}
	return memparse(size)
}

func memparse(v string) (uint64, bool) {
	base, digits := uint64(10), v
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		base, digits = 16, v[2:]
	case len(v) > 1 && v[0] == '0':
		base, digits = 8, v[1:]
	}
	var n uint64
	i := 0
	for ; i < len(digits); i++ {
		d := strings.IndexByte("0123456789abcdef", digits[i]|0x20)
		if d < 0 || uint64(d) >= base {
			break
		}
		n = n*base + uint64(d)
		if n > 1<<62 {
			return 0, false
		}
	}
	shift := map[string]uint{"": 0, "k": 10, "K": 10, "m": 20, "M": 20, "g": 30, "G": 30, "t": 40, "T": 40, "p": 50, "P": 50, "e": 60, "E": 60}
	sh, known := shift[digits[i:]]
	if !known || n > 1<<(62-sh) {
		return 0, false
	}
	return n << sh, n > 0
}

// overlayLayers are the host paths an overlay's options name, as
// overlayfs parses them.
func overlayLayers(opts []string) []string {
	var out []string
	for _, o := range splitEscaped(strings.Join(opts, ","), ',') {
		k, v, _ := strings.Cut(o, "=")
		var layers []string
		switch k {
		case "lowerdir":
			layers = splitEscaped(v, ':')
		case "lowerdir+", "datadir+", "upperdir", "workdir":
			layers = []string{v}
		}
		for _, l := range layers {
			if l = strings.ReplaceAll(l, "\\", ""); l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// parseSysctls reads fuzzed sysctls from the same lines: sysctl|key|value.
func parseSysctls(text string) map[string]string {
	var out map[string]string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.SplitN(line, "|", 3); len(f) == 3 && f[0] == "sysctl" {
			if out == nil {
				out = map[string]string{}
			}
			out[f[1]] = f[2]
		}
	}
	return out
}

const fuzzMax = 1 << 30

// FuzzRewrite runs the engine on fuzzed mount lists and annotations under
// the node's strictest rules with a cap, and checks the invariants nsiso
// promises on whatever it accepts: no mount shows the host's /dev/shm, no
// namespace is the host's, every /dev/shm tmpfs has a byte size within the
// cap, and only this sandbox's own pod /dev/shm is ever resized.
func FuzzRewrite(f *testing.F) {
	f.Add("/dev/shm|tmpfs|shm|nosuid,size=65536k", "private", "", "", uint8(0), "/")
	f.Add("/dev/shm|tmpfs|shm|size=0", "", "", "", uint8(0), "rootfs")
	f.Add("dev/shm|bind|/dev/shm|rbind", "", "", "", uint8(0), "rootfs")
	f.Add("/run/shm|bind|/dev/shm|rbind\n/x|bind|/dev|rbind", "", "", "", uint8(0), "rootfs")
	f.Add("/dev/shm|bind|/run/cri/sandboxes/sb/shm|rbind,ro", "", "1Gi", "", uint8(1), "rootfs")
	f.Add("/dev/shm|bind|/run/victim/shm|rbind", "", "1Gi", "", uint8(1), "rootfs")
	f.Add("/dev/shm|tmpfs|shm|size=50%", "private", "", "", uint8(0), "rootfs")
	f.Add("/dev/shm|tmpfs|shm|nr_blocks=999999999", "", "", "", uint8(0), "rootfs")
	f.Add("/o|overlay|overlay|lowerdir=/a:/dev/shm/f,upperdir=/u", "", "", "share-parent", uint8(0), "rootfs")
	// One option that runc joins into the data beside the others.
	f.Add("/dev/shm|tmpfs|shm|size=1m;mode=1777,size=0", "", "", "", uint8(0), "rootfs")
	f.Add("/dev/shm|tmpfs|shm|size=1m;mode=1777,size=0", "private", "", "", uint8(0), "rootfs")
	f.Add("/o|overlay|overlay|index=off,lowerdir=/dev/shm:/x", "", "", "", uint8(0), "rootfs")
	f.Add("/o|overlay|overlay|lowerdir=/x\\;,lowerdir=/dev/shm", "", "", "", uint8(0), "rootfs")
	f.Add("/dev/shm|tmpfs|shm|size=1m\n/dev|tmpfs|tmpfs|size=0", "", "", "", uint8(0), "rootfs")
	f.Add("sysctl|kernel.shmall|18446744073692774399\nsysctl|kernel/shmmax|0x10", "", "", "", uint8(0), "rootfs")
	f.Add("sysctl|kernel.shmmax|1073741824\nsysctl|kernel.shm_rmid_forced|1", "", "", "", uint8(1), "rootfs")
	f.Add("sysctl|kernel.msgmnb|1", "", "", "", uint8(2), "rootfs")
	f.Fuzz(func(t *testing.T, mounts, ipc, size, pid string, cri uint8, root string) {
		s := baseSpec()
		s.Root.Path = root
		s.Mounts = parseMounts(mounts)
		s.Linux.Sysctl = parseSysctls(mounts)
		s.Annotations = fuzzAnnotations(ipc, size, pid, "", "", "", cri)
		r, err := ParseRequest("c", s.Annotations)
		if err != nil {
			return
		}
		policy := Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: fuzzMax}
		in := Input{ID: "c", Request: r, Policy: policy, Host: fakeHost{}, Bundle: testBundle, OwnShmDir: testOwnShm,
			Parent: Parent{ID: r.Parent, IPCPath: pinIPC, PIDPath: pinPID, ShmPath: pinShm}}
		if r.Sandbox {
			in.PodShmPath = "/run/cri/sandboxes/sb/shm"
		}
		plan, err := Rewrite(s, in)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Rewrite error %v is not an *Error", err)
			}
			return
		}
		checkInvariants(t, s, in, plan)
	})
}

func checkInvariants(t *testing.T, s *specs.Spec, in Input, plan Plan) {
	t.Helper()
	for _, ty := range []specs.LinuxNamespaceType{specs.IPCNamespace, specs.PIDNamespace} {
		if host, err := isHostNS(s, fakeHost{}, ty); host || err != nil {
			t.Fatalf("accepted a spec in the host's %s namespace (%v): %+v", ty, err, s.Linux.Namespaces)
		}
	}
	shm := shmMountIndex(s.Mounts)
	if shm < 0 && s.Root != nil && (s.Root.Path == "/" || strings.Trim(s.Root.Path, "/") == "") {
		t.Fatalf("accepted a container on the host's root without a /dev/shm of its own")
	}
	for i, m := range s.Mounts {
		if plan.OwnShm != nil && i == shm {
			if m.Source != in.OwnShmDir || !IsBind(m) {
				t.Fatalf("own /dev/shm planned but the spec's /dev/shm is %+v", m)
			}
			continue
		}
		var paths []string
		recursive := false
		switch {
		case IsBind(m):
			paths, recursive = []string{hostPath(in.Bundle, m.Source)}, hasOption(m.Options, "rbind")
		case m.Type == "overlay":
			paths = overlayLayers(m.Options)
		}
		for _, p := range paths {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("accepted mount %+v with a relative host path %q", m, p)
			}
			if host, err := (fakeHost{}).ExposesHostShm(p, recursive); host || err != nil {
				t.Fatalf("accepted mount %+v exposing the host's /dev/shm (%v)", m, err)
			}
		}
		if i == shm && !IsBind(m) {
			if n, ok := tmpfsMaxBytes(m.Options); m.Type != "tmpfs" || !ok || n > fuzzMax {
				t.Fatalf("accepted /dev/shm %s %q outside the cap (kernel reads %d, %v)", m.Type, m.Options, n, ok)
			}
		}
		if d := MountDest(m); shm >= 0 && i > shm && (d == "/dev" || d == "/") {
			t.Fatalf("accepted a mount on %s that hides the capped /dev/shm", d)
		}
	}
	checkSysV(t, s)
	if ns, ok := namespace(s, specs.MountNamespace); !ok || ns.Path != "" && !strings.HasPrefix(ns.Path, "/") {
		t.Fatalf("accepted a spec without a mount namespace of its own: %+v", s.Linux.Namespaces)
	}
	if plan.OwnShm != nil && (plan.OwnShm.Size <= 0 || plan.OwnShm.Size > fuzzMax) {
		t.Fatalf("own /dev/shm of %d bytes outside the cap", plan.OwnShm.Size)
	}
	if p := plan.PodShm; p != nil {
		if !in.Request.Sandbox || p.Path != in.PodShmPath || p.Size <= 0 || p.Size > fuzzMax {
			t.Fatalf("resize %+v of a pod /dev/shm that is not this sandbox's own within the cap", p)
		}
	}
}

// checkSysV holds an accepted spec's System V limits to the cap, read as
// runc writes them (a "/" in a key's first separator swaps "/" and ".")
// and as the kernel parses them: a new IPC namespace has shmmax and shmall
// within the cap, a joined one no IPC sysctl at all.
func checkSysV(t *testing.T, s *specs.Spec) {
	t.Helper()
	ns, ok := namespace(s, specs.IPCNamespace)
	if !ok {
		return
	}
	got := map[string]uint64{}
	for k, v := range s.Linux.Sysctl {
		name := k
		if i := strings.IndexAny(k, "./"); i >= 0 && k[i] == '/' {
			name = strings.NewReplacer("/", ".", ".", "/").Replace(k)
		}
		// runc's list of the IPC namespace's sysctls.
		switch name {
		case "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
			"kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced":
		default:
			if !strings.HasPrefix(name, "fs.mqueue.") {
				continue
			}
		}
		if ns.Path != "" {
			t.Fatalf("accepted IPC sysctl %s=%q on a container joining %s", k, v, ns.Path)
		}
		n, ok := memparse(strings.TrimSpace(v))
		if !ok && v != "0" {
			n = 1 << 63 // unreadable: as good as unlimited
		}
		got[name] = n
	}
	if ns.Path != "" {
		return
	}
	if all, ok := got["kernel.shmall"]; !ok || all > fuzzMax/DefaultPageSize {
		t.Fatalf("accepted a new IPC namespace with kernel.shmall %d (set %v) over the cap", all, ok)
	}
	if max, ok := got["kernel.shmmax"]; !ok || max > fuzzMax {
		t.Fatalf("accepted a new IPC namespace with kernel.shmmax %d (set %v) over the cap", max, ok)
	}
}
