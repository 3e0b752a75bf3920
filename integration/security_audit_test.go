package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// These tests attack `nsiso audit` the way the tenants of
// docs/security.md can: a containerd client writes any labels, OCI
// annotations and runtime name on the containers it creates, in its own
// containerd namespace or in CRI's; then the operator runs the audit as
// docs/audit.md says. The names must never forge a report line or reach the
// terminal as control characters, and a claim to be another team's pod
// must not change that team's audit.

// Labels the kubelet puts on a pod's containers, which any client can
// write too.
const (
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodName       = "io.kubernetes.pod.name"
	labelContainerName = "io.kubernetes.container.name"
	labelCRIKind       = "io.cri-containerd.kind"
)

// quoted is how the text report prints a value from a client: unchanged
// when it is made of ASCII letters, digits and . _ - : (and / outside a
// pod's names), else Go's double-quoted ASCII form.
func quoted(s string, slash bool) string {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-:", c) >= 0 || slash && c == '/') {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// terminalUnsafe returns the first character of out that a terminal
// would act on or that hides text (C0 controls other than the line feed,
// DEL, C1 controls, line and paragraph separators, bidi controls and
// other invisible format characters) or a byte that is not UTF-8, and
// whether there is one.
func terminalUnsafe(out string) (string, bool) {
	for i, r := range out {
		switch {
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(out[i:]); n == 1 {
				return fmt.Sprintf("byte %#x at %d", out[i], i), true
			}
		case r == '\n':
		case r < 0x20 || r == 0x7f || 0x80 <= r && r < 0xa0,
			r == 0x2028 || r == 0x2029,
			0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069,
			unicode.Is(unicode.Cf, r):
			return fmt.Sprintf("%U at %d", r, i), true
		}
	}
	return "", false
}

func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if c, bad := terminalUnsafe(out); bad {
		t.Errorf("%s holds %s:\n%q", what, c, out)
	}
}

// forge creates a container record as a containerd client can, with any
// runtime name and OCI annotations (the suite's newContainer passes an
// unknown runtime name on as it is), and no task; removed at test end.
func (s *suite) forge(t *testing.T, id string, sp spec) {
	t.Helper()
	r := &task{id: id, c: s.newContainer(t, id, sp)}
	t.Cleanup(func() { s.remove(t, r) })
}

// startLabelled starts a container of the suite's kind with the given
// labels, as `ctr run --label` would.
func (s *suite) startLabelled(t *testing.T, id string, sp spec, labels map[string]string) *task {
	t.Helper()
	c := s.newContainer(t, id, sp)
	r := &task{id: id, c: c}
	t.Cleanup(func() { s.remove(t, r) })
	if _, err := c.SetLabels(s.ctx, labels); err != nil {
		t.Fatalf("label %s: %v", id, err)
	}
	tk, err := c.NewTask(s.ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create task %s: %v", id, err)
	}
	r.t = tk
	if err := tk.Start(s.ctx); err != nil {
		t.Fatalf("start task %s: %v", id, err)
	}
	return r
}

// A newline in a pod name (a label) or a runtime name (the container
// record) forged a whole line of the text report: the report of a
// namespace with two containers must have exactly their two lines.
func TestSecurityAuditForgedLines(t *testing.T) {
	s := setup(t)
	const ns = "nsiso-audit-lines"
	as := s.inNamespace(t, ns)

	podName := "web\n" + ns + "/forged: IpcMode=private PidMode=private ShmSize=64Mi Runtime=" + runcRuntime
	a := as.startLabelled(t, newID("forge-a"), spec{runtime: runcRuntime},
		map[string]string{labelPodNamespace: "team-b", labelPodName: podName, labelContainerName: "app"})
	runtime := runcRuntime + "\n" + ns + "/forged2: IpcMode=private PidMode=private ShmSize=- Runtime=" + runcRuntime + " (from spec)"
	b := newID("forge-b")
	as.forge(t, b, spec{runtime: runtime})

	want := []string{
		fmt.Sprintf("%s/%s: IpcMode=private PidMode=private ShmSize=64Mi Runtime=%s ClaimedPod=team-b/%s ClaimedContainer=app",
			ns, a.id, runcRuntime, quoted(podName, false)),
		fmt.Sprintf("%s/%s: IpcMode=private PidMode=private ShmSize=- Runtime=%s (from spec)", ns, b, quoted(runtime, true)),
	}
	r := runAudit(t, nil, "audit", "--address", s.ctd.Address(), "--namespace", ns)
	got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(got) != 2 || !strings.HasPrefix(got[0], ns+"/"+a.id+": ") || !strings.HasPrefix(got[1], ns+"/"+b+": ") {
		t.Errorf("the report of 2 containers has %d lines:\n%s", len(got), r.stdout)
	}
	if r.stdout != strings.Join(want, "\n")+"\n" {
		t.Errorf("report:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}
	if r.code != 0 || r.stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
	}

	// JSON carries the exact strings, and the claim is no pod's identity.
	j := runAudit(t, nil, "audit", "--address", s.ctd.Address(), "--namespace", ns, "--format", "json")
	recs := j.recordsIn(t, ns)
	if g := recs[a.id]; g.PodNamespace != "" || g.PodName != "" || g.ClaimedPodNamespace != "team-b" || g.ClaimedPodName != podName || g.ClaimedContainerName != "app" {
		t.Errorf("JSON record of %s: %+v", a.id, g)
	}
	if g := recs[b]; g.Runtime != runtime {
		t.Errorf("JSON runtime of %s: %q, want %q", b, g.Runtime, runtime)
	}
}

// Terminal escapes in labels, OCI annotations and a runtime name: no
// format writes a control character, JSON gives back the exact strings and
// the metrics parse, with the characters written as visible escapes.
func TestSecurityAuditTerminalEscapes(t *testing.T) {
	s := setup(t)
	const ns = "nsiso-audit-esc"
	as := s.inNamespace(t, ns)

	podNS := "team-b\x1b[2J"
	podName := "\x1b]0;pwned\x07web"
	ctrName := "app\u202e\u2028\u0085\u009b31m\x7f\x1b[0m\u2066"
	h := as.startLabelled(t, newID("esc-host"), spec{config: s.lenient, ann: ann(specmod.AnnotationIPCMode, "share-parent",
		specmod.AnnotationCRISandboxNamespace, podNS, specmod.AnnotationCRISandboxName, podName)},
		map[string]string{labelContainerName: ctrName})
	runtime := "\x1b]0;pwned\x07"
	n := newID("esc-rt")
	as.forge(t, n, spec{runtime: runtime, opts: []oci.SpecOpts{oci.WithHostNamespace(specs.IPCNamespace)}})

	args := []string{"audit", "--address", s.ctd.Address(), "--namespace", ns}
	r := runAudit(t, nil, args...)
	assertTerminalSafe(t, "stdout", r.stdout)
	assertTerminalSafe(t, "stderr", r.stderr)
	wantOut := fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=host Runtime=%s ClaimedPod=%s/%s ClaimedContainer=%s\n",
		ns, h.id, nsisoRuntime, quoted(podNS, false), quoted(podName, false), quoted(ctrName, false)) +
		fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=- Runtime=%s (from spec)\n", ns, n, quoted(runtime, true))
	wantErr := fmt.Sprintf("nsiso audit: %s/%s (claimed pod %s/%s, container %s) shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)\n",
		ns, h.id, quoted(podNS, false), quoted(podName, false), quoted(ctrName, false)) +
		fmt.Sprintf("nsiso audit: %s/%s has no running task; its spec shares the host's IPC namespace (CIS Docker Benchmark 5.16)\n", ns, n)
	if r.code != 1 || r.stdout != wantOut || r.stderr != wantErr {
		t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant 1,\n%s\nand\n%s", r.code, r.stdout, r.stderr, wantOut, wantErr)
	}

	j := checkMetricsMatchJSON(t, args...)
	assertTerminalSafe(t, "JSON", j.stdout)
	recs := j.recordsIn(t, ns)
	if g := recs[h.id]; g.ClaimedPodNamespace != podNS || g.ClaimedPodName != podName || g.ClaimedContainerName != ctrName || g.PodNamespace != "" {
		t.Errorf("JSON record of %s does not give back the strings: %+v", h.id, g)
	}
	if g := recs[n]; g.Runtime != runtime {
		t.Errorf("JSON runtime of %s: %q, want %q", n, g.Runtime, runtime)
	}

	p := runAudit(t, nil, append(args, "--format", "prometheus")...)
	assertTerminalSafe(t, "metrics", p.stdout)
	mfs := parseMetrics(t, p.stdout)
	var claimed []string
	for _, m := range mfs["nsiso_audit_host_ipc_sharing"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "claimed_pod_namespace" && l.GetValue() != "" {
				claimed = append(claimed, l.GetValue())
			}
		}
	}
	if want := `team-b\x1b[2J`; len(claimed) != 1 || claimed[0] != want {
		t.Errorf("claimed_pod_namespace of the host IPC sharers: %q, want [%q]", claimed, want)
	}
}

// A containerd client labels its containers as another team's pod, in its
// own containerd namespace and in CRI's, and rewrites the labels and OCI
// annotations of a real pod's container to name that team: the team's
// `nsiso audit --pod-namespace` still passes and lists only its own pod,
// while the real pods keep the identity CRI gave them.
func TestSecurityAuditClaimedPod(t *testing.T) {
	s := setup(t)
	c := setupCRI(t)
	ctx := context.Background()
	const attackNS = "nsiso-audit-claim"

	// team-b's real pod, private, and team-c's real hostIPC pod.
	vp := pod{name: newPodName("web"), namespace: "team-b", handler: "nsiso", kubelet: true}
	vsb, err := c.runPod(t, vp)
	if err != nil {
		t.Fatal(err)
	}
	vapp := c.startContainer(t, vsb, vp, "app", nil)
	cp := pod{name: newPodName("tools"), namespace: "team-c", handler: "runc", ipc: runtimeapi.NamespaceMode_NODE, kubelet: true}
	csb, err := c.runPod(t, cp)
	if err != nil {
		t.Fatal(err)
	}
	capp := c.startContainer(t, csb, cp, "app", nil)

	// ctr, as the attacker runs it: flags, then the image.
	ctr := func(ns string, args ...string) string {
		t.Helper()
		id := newID("claim")
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		args = append(append([]string{"--namespace", ns, "run", "-d", "--null-io", "--fifo-dir", c.ctd.FIFODir()}, args...), id, "sleep", "3600")
		cmd := c.ctd.Ctr(cctx, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t.Cleanup(func() { removeByID(t, c, ns, id) })
		if err := cmd.Run(); err != nil {
			t.Fatalf("ctr %v: %v\n%s", cmd.Args, err, out.String())
		}
		return id
	}
	claimLabels := []string{
		"--label", labelPodNamespace + "=team-b", "--label", labelPodName + "=" + vp.name,
		"--label", labelContainerName + "=app", "--label", labelCRIKind + "=container",
	}
	// In its own containerd namespace, host IPC under nsiso with a lenient
	// policy of its own (a client may hand the shim any config).
	actx, err := c.ctd.Namespace(ctx, attackNS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.ImportImage(actx, c.ctd.Client(), s.imageTar); err != nil {
		t.Fatal(err)
	}
	lenient, err := s.h.WritePolicy("claim-lenient.toml", c.runcRoot, "disallow_sharing_host_ipc_namespace = false\n")
	if err != nil {
		t.Fatal(err)
	}
	own := ctr(attackNS, append(append([]string{"--runtime", nsisoRuntime, "--runtime-config-path", lenient,
		"--annotation", specmod.AnnotationIPCMode + "=share-parent"}, claimLabels...), imageRef)...)
	// In CRI's namespace, with the plain client: runc.v2 in the host's IPC
	// namespace, with CRI's own labels and annotations naming team-b's pod
	// and sandbox.
	kctx, err := c.ctd.Namespace(ctx, criNS)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.ctd.Client()
	img, err := cl.GetImage(kctx, criAppImage)
	if err != nil {
		t.Fatal(err)
	}
	inCRI := newID("claim")
	t.Cleanup(func() { removeByID(t, c, criNS, inCRI) })
	fake, err := cl.NewContainer(kctx, inCRI, client.WithImage(img), client.WithNewSnapshot(inCRI+"-snap", img),
		client.WithRuntime(runcRuntime, c.ctd.RuncOptions()),
		client.WithContainerLabels(map[string]string{labelPodNamespace: "team-b", labelPodName: vp.name, labelContainerName: "app", labelCRIKind: "container"}),
		client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "3600"), oci.WithHostNamespace(specs.IPCNamespace),
			oci.WithAnnotations(ann(specmod.AnnotationCRISandboxNamespace, "team-b", specmod.AnnotationCRISandboxName, vp.name,
				specmod.AnnotationCRIContainerName, "app", specmod.AnnotationCRIContainerType, "container", specmod.AnnotationCRISandboxID, vsb))))
	if err != nil {
		t.Fatal(err)
	}
	tk, err := fake.NewTask(kctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Start(kctx); err != nil {
		t.Fatal(err)
	}
	// team-c's real container, relabelled through the containerd API.
	rec, err := cl.LoadContainer(kctx, capp)
	if err != nil {
		t.Fatal(err)
	}
	err = rec.Update(kctx, func(_ context.Context, _ *client.Client, r *containers.Container) error {
		var sp specs.Spec
		if err := json.Unmarshal(r.Spec.GetValue(), &sp); err != nil {
			return err
		}
		sp.Annotations[specmod.AnnotationCRISandboxNamespace] = "team-b"
		sp.Annotations[specmod.AnnotationCRISandboxName] = vp.name
		a, err := typeurl.MarshalAny(&sp)
		if err != nil {
			return err
		}
		r.Spec = a
		r.Labels[labelPodNamespace], r.Labels[labelPodName] = "team-b", vp.name
		return nil
	})
	if err != nil {
		t.Fatalf("relabel %s: %v", capp, err)
	}

	if got := c.ns(t, capp, "ipc"); got != hostNS(t, "ipc") {
		t.Fatalf("team-c's hostIPC pod in IPC namespace %s, host's %s", got, hostNS(t, "ipc"))
	}
	addr := []string{"audit", "--address", c.ctd.Address()}
	podLine := func(id, ipc, pid, shm, runtime, podName, ctrName string) string {
		return fmt.Sprintf("%s/%s: IpcMode=%s PidMode=%s ShmSize=%s Runtime=%s Pod=%s Container=%s", criNS, id, ipc, pid, shm, runtime, podName, ctrName)
	}

	t.Run("the victim team", func(t *testing.T) {
		r := runAudit(t, nil, append(addr, "--pod-namespace", "team-b")...)
		want := sortedLines(map[string]string{
			vsb:  podLine(vsb, "private", "private", "256Mi", nsisoRuntime, "team-b/"+vp.name, "(sandbox)"),
			vapp: podLine(vapp, "container:"+vsb, "container:"+vsb, "256Mi", nsisoRuntime, "team-b/"+vp.name, "app"),
		})
		notCounted := func(ns, id string) string {
			return fmt.Sprintf("nsiso audit: %s/%s (claimed pod team-b/%s, container app) is not counted: containerd's CRI plugin did not make it\n", ns, id, vp.name)
		}
		wantErr := notCounted(criNS, inCRI) + notCounted(attackNS, own)
		if r.code != 0 || r.stdout != want || r.stderr != wantErr {
			t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant 0,\n%s\nand\n%s", r.code, r.stdout, r.stderr, want, wantErr)
		}
		p := runAudit(t, nil, append(addr, "--pod-namespace", "team-b", "--format", "prometheus")...)
		if v := familyValues(parseMetrics(t, p.stdout), "nsiso_audit_findings")["{}"]; p.code != 0 || v != 0 {
			t.Errorf("metrics of team-b: exit %d, findings %v; want 0 and 0", p.code, v)
		}
	})

	t.Run("the real pods keep their identity", func(t *testing.T) {
		r := runAudit(t, nil, append(addr, "--pod-namespace", "team-c")...)
		pid := "container:" + csb
		want := sortedLines(map[string]string{
			csb:  podLine(csb, "host", "private", "host", runcRuntime, "team-c/"+cp.name, "(sandbox)"),
			capp: podLine(capp, "host", pid, "host", runcRuntime, "team-c/"+cp.name, "app"),
		})
		if r.code != 1 || r.stdout != want || strings.Count(r.stderr, "(pod team-c/"+cp.name+", ") != 2 {
			t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant 1, both of team-c's containers named as its pod's, and\n%s", r.code, r.stdout, r.stderr, want)
		}

		j := checkMetricsMatchJSON(t, addr...)
		if j.code != 1 {
			t.Errorf("the whole node: exit %d, want 1 (the attackers and team-c share the host's IPC namespace)", j.code)
		}
		recs := j.allRecords(t)
		byID := map[string]auditRecord{}
		for _, r := range recs {
			byID[r.Namespace+"/"+r.ID] = r
		}
		for _, id := range []string{attackNS + "/" + own, criNS + "/" + inCRI} {
			if g := byID[id]; g.PodNamespace != "" || g.PodName != "" || g.Sandbox || g.ClaimedPodNamespace != "team-b" ||
				g.ClaimedPodName != vp.name || g.ClaimedContainerName != "app" || g.IPCMode != "host" {
				t.Errorf("record of %s: %+v; want host IPC, no pod, a claim to team-b's", id, g)
			}
		}
		if g := byID[criNS+"/"+capp]; g.PodNamespace != "team-c" || g.PodName != cp.name || g.ClaimedPodNamespace != "" {
			t.Errorf("record of team-c's relabelled container: %+v", g)
		}
		for _, id := range []string{vsb, vapp} {
			if g := byID[criNS+"/"+id]; g.PodNamespace != "team-b" || g.PodName != vp.name || g.ClaimedPodNamespace != "" {
				t.Errorf("record of team-b's %s: %+v", id, g)
			}
		}
	})

	t.Run("without CRI there is no pod namespace", func(t *testing.T) {
		r := runAudit(t, nil, "audit", "--address", s.ctd.Address(), "--pod-namespace", "team-b")
		if want := "nsiso audit: --pod-namespace: containerd's CRI plugin does not answer at " + s.ctd.Address(); r.code != 2 || !strings.HasPrefix(r.stderr, want) {
			t.Errorf("exit %d, stderr %q; want 2 and %q…", r.code, r.stderr, want)
		}
	})
}

// sortedLines is a report of these lines, by container ID.
func sortedLines(byID map[string]string) string {
	var out string
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		out += byID[id] + "\n"
	}
	return out
}

// removeByID kills and deletes a container that ctr made.
func removeByID(t *testing.T, c *criSuite, ns, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nctx, err := c.ctd.Namespace(ctx, ns)
	if err != nil {
		t.Error(err)
		return
	}
	cont, err := c.ctd.Client().LoadContainer(nctx, id)
	if errdefs.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("load %s: %v", id, err)
		return
	}
	if tk, err := cont.Task(nctx, nil); err == nil {
		_ = tk.Kill(nctx, syscall.SIGKILL)
		if _, err := tk.Delete(nctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("delete task %s: %v", id, err)
		}
	}
	if err := cont.Delete(nctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("delete container %s: %v", id, err)
	}
}

// A client's container that never ran names a pod sandbox that does not
// exist, and joins the host's IPC namespace by the path of a host process
// (this test's). The audit's rule for a pod's container whose sandbox is
// gone (it reads as its sandbox's, since its path may name anything by
// now) is for containers CRI made; this one reads as what starting it
// would do.
func TestSecurityAuditForgedSandboxParent(t *testing.T) {
	s := setup(t)
	const ns = "nsiso-audit-parent"
	as := s.inNamespace(t, ns)
	id := newID("fake-child")
	hostIPC := fmt.Sprintf("/proc/%d/ns/ipc", os.Getpid())
	as.forge(t, id, spec{runtime: runcRuntime,
		ann:  ann(specmod.AnnotationCRIContainerType, "container", specmod.AnnotationCRISandboxID, "ghost-sandbox"),
		opts: []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: hostIPC})}})
	r := runAudit(t, nil, "audit", "--address", s.ctd.Address(), "--namespace", ns)
	want := fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=- Runtime=%s (from spec)\n", ns, id, runcRuntime)
	wantErr := fmt.Sprintf("nsiso audit: %s/%s has no running task; its spec shares the host's IPC namespace (CIS Docker Benchmark 5.16)\n", ns, id)
	if r.code != 1 || r.stdout != want || r.stderr != wantErr {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, %q, %q", r.code, r.stdout, r.stderr, want, wantErr)
	}
}
