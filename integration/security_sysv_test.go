package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
)

// System V shared memory does not go through /dev/shm: shmget takes pages
// from the IPC namespace's budget (kernel.shmmax for one segment,
// kernel.shmall for all), which a new namespace starts with at nearly 2^64.
// These tests make segments from inside containers, as a tenant would, and
// touch every page so a segment holds the memory it names.

// shm32 gives a container a /dev/shm within the suite's tight cap (ctr's
// default is 64Mi).
var shm32 = []oci.SpecOpts{oci.WithDevShmSize(32 << 10)}

// withSysctls sets sysctls in the spec, as `ctr run --sysctl` does.
func withSysctls(kv ...string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Linux.Sysctl[kv[i]] = kv[i+1]
		}
		return nil
	}
}

// segment tries to make a System V segment of size (ipcmk's grammar) with
// every page touched; it returns "" when it could, else ipcmk's error.
type segmenter func(t *testing.T, size string) string

func (s *suite) segmenter(r *task) segmenter {
	return func(t *testing.T, size string) string {
		t.Helper()
		out, code, errOut := s.execCode(t, r, "ipcmk", "-M", size, "--touch")
		if code == 0 {
			if !strings.Contains(out, "Touched: ") {
				t.Fatalf("ipcmk -M %s --touch: %q", size, out)
			}
			return ""
		}
		return strings.TrimSpace(errOut)
	}
}

func (c *criSuite) segmenter(id string) segmenter {
	return func(t *testing.T, size string) string {
		t.Helper()
		resp, err := c.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"ipcmk", "-M", size, "--touch"}, Timeout: 60})
		if err != nil {
			t.Fatalf("exec ipcmk in %s: %v", id, err)
		}
		if resp.ExitCode == 0 {
			return ""
		}
		return strings.TrimSpace(string(resp.Stderr))
	}
}

const (
	overShmmax = "create share memory failed: invalid argument"        // EINVAL: over kernel.shmmax
	overShmall = "create share memory failed: no space left on device" // ENOSPC: over kernel.shmall
)

// holds checks that a namespace with a budget of budget MiB takes segments
// up to it and none beyond: the attacker's 1.5GiB first, then one larger
// than the budget, then two that fit alone but not together.
func holds(t *testing.T, seg segmenter, budget int) {
	t.Helper()
	if budget < 1536 {
		if e := seg(t, "1536M"); !strings.Contains(e, overShmmax) {
			t.Errorf("a touched 1.5GiB System V segment: %q; want %q", e, overShmmax)
		}
	}
	if e := seg(t, strconv.Itoa(budget+1)+"M"); !strings.Contains(e, overShmmax) {
		t.Errorf("a segment over the budget of %dMi: %q; want %q", budget, e, overShmmax)
	}
	half := strconv.Itoa(budget/2+1) + "M"
	if e := seg(t, half); e != "" {
		t.Fatalf("a segment of %s within the budget of %dMi: %s", half, budget, e)
	}
	if e := seg(t, half); !strings.Contains(e, overShmall) {
		t.Errorf("a second segment of %s, past the budget of %dMi in all: %q; want %q", half, budget, e, overShmall)
	}
}

// sysctlOf reads a sysctl of the container's IPC namespace from inside.
func (s *suite) sysctlOf(t *testing.T, r *task, name string) string {
	t.Helper()
	return strings.TrimSpace(s.exec(t, r, "cat", "/proc/sys/"+strings.ReplaceAll(name, ".", "/")))
}

// The review's attack, as it was run: a ctr container in private and in
// unset IPC mode under a config with max_container_shm_size (the suite's
// strict config: 1Gi, default 96Mi) makes a 1.5GiB segment and touches
// every page. Now each namespace holds the size of its /dev/shm by
// nsiso's settings; and the same under a cap alone (tight: 32Mi).
func TestSecuritySysVShmCapCtr(t *testing.T) {
	s := setup(t)
	for _, tc := range []struct {
		name   string
		sp     spec
		budget int // MiB
	}{
		{name: "strict/private", sp: spec{ann: ann(specmod.AnnotationIPCMode, "private")}, budget: 96},
		{name: "strict/unset", sp: spec{}, budget: 96},
		{name: "strict/private with a size", sp: spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "200Mi")}, budget: 200},
		{name: "tight/private", sp: spec{config: s.tight, ann: ann(specmod.AnnotationIPCMode, "private"), opts: shm32}, budget: 32},
		{name: "tight/unset", sp: spec{config: s.tight, opts: shm32}, budget: 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.start(t, newID("sysv"), tc.sp)
			b := int64(tc.budget) << 20
			if got := s.sysctlOf(t, r, "kernel.shmmax"); got != strconv.FormatInt(b, 10) {
				t.Errorf("kernel.shmmax = %s, want %d", got, b)
			}
			if got := s.sysctlOf(t, r, "kernel.shmall"); got != strconv.FormatInt(b/4096, 10) {
				t.Errorf("kernel.shmall = %s, want %d", got, b/4096)
			}
			holds(t, s.segmenter(r), tc.budget)
		})
	}
}

// A client's kernel.shm* sysctls: within the cap they are kept and seen
// inside, above it the create is refused in one line naming the key, the
// value and the rule.
func TestSecuritySysVSysctlsCtr(t *testing.T) {
	s := setup(t)
	// An operator who lets SysV go past /dev/shm, for Oracle's SGA.
	sga := s.writeConfig("sysv.toml", `max_container_shm_size = "32Mi"
max_container_sysv_shm_size = "128Mi"`)
	for _, tc := range []struct {
		name string
		sp   spec
		want string // %s is the container ID
	}{
		{name: "shmmax over the cap", sp: spec{config: s.tight, opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmmax", "1610612736")}},
			want: `nsiso: container "%s": linux.sysctl.kernel.shmmax="1610612736": a System V segment of 1536Mi is over max_container_shm_size=32Mi`},
		{name: "shmall over the cap", sp: spec{config: s.tight, ann: ann(specmod.AnnotationIPCMode, "private"), opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmall", "18446744073692774399")}},
			want: `nsiso: container "%s": linux.sysctl.kernel.shmall="18446744073692774399": 18446744073692774399 pages of 4096 bytes of System V shared memory are over max_container_shm_size=32Mi`},
		{name: "slash spelling over the cap", sp: spec{config: s.tight, opts: []oci.SpecOpts{shm32[0], withSysctls("kernel/shmall", "393216")}},
			want: `nsiso: container "%s": linux.sysctl.kernel/shmall="393216": 393216 pages of 4096 bytes of System V shared memory are over max_container_shm_size=32Mi`},
		{name: "hex, which the kernel reads", sp: spec{config: s.tight, opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmmax", "0x60000000")}},
			want: `nsiso: container "%s": linux.sysctl.kernel.shmmax="0x60000000": not a plain unsigned decimal number, which nsiso needs to hold it to max_container_shm_size=32Mi`},
		{name: "over the SysV cap", sp: spec{config: sga, opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmmax", "268435456")}},
			want: `nsiso: container "%s": linux.sysctl.kernel.shmmax="268435456": a System V segment of 256Mi is over max_container_sysv_shm_size=128Mi`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID("sysctl")
			err := s.tryCreate(t, id, tc.sp)
			want := strings.ReplaceAll(tc.want, "%s", id)
			if err == nil {
				t.Fatalf("created; want refusal %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n got %v\nwant …%s", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err.Error())
			}
			s.assertNoResidue(t, id)
		})
	}

	t.Run("within the cap: kept", func(t *testing.T) {
		r := s.start(t, newID("sysctl"), spec{config: s.tight, opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmmax", "16777216", "kernel.shm_rmid_forced", "1")}})
		for name, want := range map[string]string{"kernel.shmmax": "16777216", "kernel.shmall": "8192", "kernel.shmmni": "4096", "kernel.shm_rmid_forced": "1"} {
			if got := s.sysctlOf(t, r, name); got != want {
				t.Errorf("%s = %s, want %s", name, got, want)
			}
		}
		seg := s.segmenter(r)
		if e := seg(t, "17M"); !strings.Contains(e, overShmmax) {
			t.Errorf("a segment over the client's kernel.shmmax: %q", e)
		}
		if e := seg(t, "16M"); e != "" {
			t.Errorf("a segment at the client's kernel.shmmax: %s", e)
		}
	})

	t.Run("more SysV than /dev/shm where the operator allows it", func(t *testing.T) {
		r := s.start(t, newID("sga"), spec{config: sga, ann: ann(specmod.AnnotationIPCMode, "private"), opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmmax", "100663296")}})
		if got := s.sysctlOf(t, r, "kernel.shmall"); got != "24576" {
			t.Errorf("kernel.shmall = %s, want 24576 (the client's kernel.shmmax)", got)
		}
		if got := s.shmSize(t, r); got != 32<<20 {
			t.Errorf("/dev/shm is %d bytes, want 32Mi", got)
		}
		seg := s.segmenter(r)
		if e := seg(t, "96M"); e != "" {
			t.Errorf("the client's 96M SGA: %s", e)
		}
		if e := seg(t, "1M"); !strings.Contains(e, overShmall) {
			t.Errorf("a segment past the client's budget: %q", e)
		}
	})
}

// A child that joins its parent's IPC namespace would have runc write its
// sysctls into the parent's namespace: it may set none, whichever way it
// joins, and the parent's limits stay. A child without sysctls shares its
// parent's budget.
func TestSecuritySysVJoiner(t *testing.T) {
	s := setup(t)
	parent := s.start(t, newID("sysvparent"), spec{config: s.tight, ann: ann(specmod.AnnotationIPCMode, "private"), opts: shm32})
	pid := parent.t.Pid()
	nsPath := fmt.Sprintf("/proc/%d/ns/ipc", pid)
	for _, tc := range []struct {
		name string
		sp   spec
		want string
	}{
		{name: "share-parent raises shmall", sp: spec{config: s.tight, ann: ann(specmod.AnnotationParent, parent.id, specmod.AnnotationIPCMode, "share-parent"),
			opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmall", "18446744073692774399")}},
			want: `linux.sysctl.kernel.shmall="18446744073692774399": would be written into the IPC namespace this container joins (nsiso/ipc-mode="share-parent"), whose limits are its owner's; set it on the container that owns the namespace (max_container_shm_size=32Mi holds every namespace's System V shared memory)`},
		{name: "unset-mode child raises shmmax", sp: spec{config: s.tight, ann: ann(specmod.AnnotationParent, parent.id),
			opts: []oci.SpecOpts{shm32[0], withSysctls("kernel.shmmax", "18446744073692774399")}},
			want: `linux.sysctl.kernel.shmmax="18446744073692774399": would be written into the IPC namespace this container joins (nsiso/parent="` + parent.id + `")`},
		{name: "client path sets shm_rmid_forced", sp: spec{config: s.tight,
			opts: []oci.SpecOpts{shm32[0], oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: nsPath}), withSysctls("kernel.shm_rmid_forced", "1")}},
			want: `linux.sysctl.kernel.shm_rmid_forced="1": would be written into the IPC namespace this container joins (linux.namespaces.ipc.path="` + nsPath + `")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID("joiner")
			err := s.tryCreate(t, id, tc.sp)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`nsiso: container %q: `, id)+tc.want) {
				t.Errorf("error:\n got %v\nwant …%s", err, tc.want)
			}
			s.assertNoResidue(t, id)
			for name, want := range map[string]string{"kernel.shmmax": "33554432", "kernel.shmall": "8192", "kernel.shm_rmid_forced": "0"} {
				if got := s.sysctlOf(t, parent, name); got != want {
					t.Errorf("the parent's %s is now %s, want %s", name, got, want)
				}
			}
		})
	}

	t.Run("a child shares its parent's budget", func(t *testing.T) {
		child := s.start(t, newID("sysvchild"), spec{config: s.tight, ann: ann(specmod.AnnotationParent, parent.id, specmod.AnnotationIPCMode, "share-parent")})
		if e := s.segmenter(parent)(t, "20M"); e != "" {
			t.Fatalf("the parent's segment: %s", e)
		}
		if e := s.segmenter(child)(t, "20M"); !strings.Contains(e, overShmall) {
			t.Errorf("the child's segment past the parent's budget: %q; want %q", e, overShmall)
		}
	})
}

// A pod with no nsiso annotation, as the review ran it: its containers make
// and touch segments in the pod's IPC namespace, which now holds what its
// /dev/shm may (the handler's default, else its cap).
func TestSecuritySysVPod(t *testing.T) {
	c := setupCRI(t)
	for _, tc := range []struct {
		handler string
		budget  int // MiB
	}{
		{handler: "nsiso", budget: 256},        // examples/nsiso.toml: default 256Mi, max 8Gi
		{handler: "nsiso-maxonly", budget: 96}, // max 96Mi alone
	} {
		t.Run(tc.handler, func(t *testing.T) {
			p := pod{name: newPodName("sysv"), handler: tc.handler}
			sb, err := c.runPod(t, p)
			if err != nil {
				t.Fatal(err)
			}
			app := c.startContainer(t, sb, p, "app", nil)
			if got := strings.TrimSpace(c.exec(t, app, "cat", "/proc/sys/kernel/shmmax")); got != strconv.Itoa(tc.budget<<20) {
				t.Errorf("kernel.shmmax in the pod = %s, want %d", got, tc.budget<<20)
			}
			holds(t, c.segmenter(app), tc.budget)
		})
	}
}

// runPodWithSysctls runs a pod whose securityContext.sysctls the kubelet
// passes into the sandbox's spec.
func (c *criSuite) runPodWithSysctls(t *testing.T, p pod, sysctls map[string]string) (string, error) {
	t.Helper()
	cfg := p.config(c.logDir)
	cfg.Linux.Sysctls = sysctls
	resp, err := c.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: p.handler})
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { c.removePod(t, resp.PodSandboxId) })
	return resp.PodSandboxId, nil
}

// A pod's sysctls (Kubernetes' securityContext.sysctls, e.g. through
// --allowed-unsafe-sysctls 'kernel.shm*'): above the cap the sandbox is
// refused, within it they are kept, as is critest's kernel.shm_rmid_forced.
func TestSecuritySysVPodSysctls(t *testing.T) {
	c := setupCRI(t)
	t.Run("over the cap", func(t *testing.T) {
		before := mountsOf(t, c.ctd.Dir()+"/")
		p := pod{name: newPodName("sysctl"), handler: "nsiso-maxonly"}
		_, err := c.runPodWithSysctls(t, p, map[string]string{"kernel.shmmax": "1610612736"})
		c.criRefused(t, err, fmt.Sprintf(`of pod "default/%s": linux.sysctl.kernel.shmmax="1610612736": a System V segment of 1536Mi is over max_container_shm_size=96Mi`, p.name), before)
	})
	t.Run("within the cap", func(t *testing.T) {
		p := pod{name: newPodName("sysctl"), handler: "nsiso-maxonly"}
		sb, err := c.runPodWithSysctls(t, p, map[string]string{"kernel.shmmax": "33554432", "kernel.shm_rmid_forced": "1"})
		if err != nil {
			t.Fatal(err)
		}
		app := c.startContainer(t, sb, p, "app", nil)
		for name, want := range map[string]string{"shmmax": "33554432", "shmall": "24576", "shm_rmid_forced": "1"} {
			if got := strings.TrimSpace(c.exec(t, app, "cat", "/proc/sys/kernel/"+name)); got != want {
				t.Errorf("kernel.%s in the pod = %s, want %s", name, got, want)
			}
		}
	})
}
