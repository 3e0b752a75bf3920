package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
)

// auditShmUsage is one IPC namespace of `nsiso audit --shm --format json`,
// decoded by field name as a consumer would.
type auditShmUsage struct {
	IPCNamespace uint64       `json:"ipcNamespace"`
	Host         bool         `json:"host"`
	Owner        *auditRecord `json:"owner"`
	Containers   []string     `json:"containers"`
	ShmSource    string       `json:"shmSource"`
	ShmSize      int64        `json:"shmSize"`
	ShmUsed      int64        `json:"shmUsed"`
	SysV         *struct {
		Segments        int64  `json:"segments"`
		Bytes           uint64 `json:"bytes"`
		MaxBytes        uint64 `json:"maxBytes"`
		MaxSegmentBytes uint64 `json:"maxSegmentBytes"`
		MaxSegments     uint64 `json:"maxSegments"`
	} `json:"sysv"`
}

// shmUsages runs the audit with --shm --format json and returns its IPC
// namespaces by inode; a namespace listed twice fails the test.
func shmUsages(t *testing.T, args ...string) (map[uint64]auditShmUsage, auditResult) {
	t.Helper()
	r := runAudit(t, nil, append(args, "--shm", "--format", "json")...)
	var us []auditShmUsage
	if err := json.Unmarshal([]byte(r.stdout), &us); err != nil {
		t.Fatalf("decode %q (stderr %q): %v", r.stdout, r.stderr, err)
	}
	m := map[uint64]auditShmUsage{}
	for _, u := range us {
		if _, dup := m[u.IPCNamespace]; dup {
			t.Errorf("IPC namespace %d reported twice", u.IPCNamespace)
		}
		m[u.IPCNamespace] = u
	}
	return m, r
}

// shmMetrics runs the audit with --format prometheus and returns each
// series' value by family name and container ID (the owner's "id" label).
func shmMetrics(t *testing.T, args ...string) (map[string]map[string]float64, auditResult) {
	t.Helper()
	r := runAudit(t, nil, append(args, "--format", "prometheus")...)
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(r.stdout))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, r.stdout)
	}
	out := map[string]map[string]float64{}
	for name, mf := range mfs {
		out[name] = map[string]float64{}
		for _, m := range mf.GetMetric() {
			id := labelOf(m, "id")
			if _, dup := out[name][id]; dup && id != "" {
				t.Errorf("%s: two series for container %s", name, id)
			}
			out[name][id] = m.GetGauge().GetValue()
		}
	}
	return out, r
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// mustSegment makes a System V segment of size bytes, every page touched.
func mustSegment(t *testing.T, seg segmenter, size string) {
	t.Helper()
	if e := seg(t, size); e != "" {
		t.Fatalf("ipcmk -M %s: %s", size, e)
	}
}

// fillCmd writes pages of 4 KiB of zeros into /dev/shm/fill inside a
// container.
func fillCmd(pages int) []string {
	return []string{"dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=4096", "count=" + strconv.Itoa(pages)}
}

// ninetyPercent is the number of 4 KiB pages that fill 90 % of size.
func ninetyPercent(size int64) int {
	return int((size*9/10 + 4095) / 4096)
}

// checkUsed compares the bytes the audit reports in use on a /dev/shm with
// what the container wrote: tmpfs counts whole pages, so the report is the
// written bytes rounded up, plus at most a few pages the runtime's own
// files (none today) take.
func checkUsed(t *testing.T, what string, got, written, size int64) {
	t.Helper()
	if got < written || got > written+16*4096 {
		t.Errorf("%s: %d bytes in use reported, the container wrote %d", what, got, written)
	}
	if float64(got)/float64(size) < 0.9 {
		t.Errorf("%s: %d of %d bytes is under 90 %%", what, got, size)
	}
}

// withoutShmMount drops the spec's /dev/shm mount, so that /dev/shm is a
// path on the container's /dev tmpfs, which its root can replace.
func withoutShmMount(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	mounts := s.Mounts[:0]
	for _, m := range s.Mounts {
		if m.Destination != "/dev/shm" {
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	return nil
}

// Containers started by a containerd client under nsiso and runc.v2: the
// bytes on /dev/shm match what each wrote, a System V segment is counted in
// its namespace, a parent and its child are one namespace, and a /dev/shm
// that a container replaced by a symlink is not followed.
func TestAuditShmUsageCtr(t *testing.T) {
	s := setup(t)
	const nsisoShm = 32 << 20
	// nsiso: a parent filling 90 % of its /dev/shm and a child sharing its
	// IPC namespace and /dev/shm, which holds a System V segment.
	parent := s.start(t, newID("shm-parent"), spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "32Mi")})
	kid := s.start(t, newID("shm-kid"), spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, parent.id)})
	pages := ninetyPercent(nsisoShm)
	s.exec(t, parent, fillCmd(pages)...)
	mustSegment(t, s.segmenter(kid), "1048576")
	// runc.v2 (ctr's 64Mi /dev/shm): the same in one container.
	rc := s.start(t, newID("shm-runc"), spec{runtime: runcRuntime})
	rcPages := ninetyPercent(64 << 20)
	s.exec(t, rc, fillCmd(rcPages)...)
	mustSegment(t, s.segmenter(rc), "65537") // 17 pages
	// Symlinks where /dev/shm was: to the path that is the host's /dev/shm
	// when resolved from the host, and to a host-looking directory.
	linkSelf := s.start(t, newID("shm-link-self"), spec{runtime: runcRuntime, opts: []oci.SpecOpts{withoutShmMount}})
	s.exec(t, linkSelf, "ln", "-s", "/dev/shm", "/dev/shm")
	linkEtc := s.start(t, newID("shm-link-etc"), spec{runtime: runcRuntime, opts: []oci.SpecOpts{withoutShmMount}})
	s.exec(t, linkEtc, "ln", "-s", "/etc", "/dev/shm")

	ipcOf := func(x *task) uint64 { return inodeOf(t, s.ns(t, x, "ipc")) }
	args := []string{"audit", "--address", s.ctd.Address(), "--namespace", testNS}
	us, r := shmUsages(t, args...)
	if r.code != 0 {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}

	t.Run("nsiso parent and child, counted once", func(t *testing.T) {
		u, ok := us[ipcOf(parent)]
		if !ok {
			t.Fatalf("parent's IPC namespace not reported: %+v", us)
		}
		if u.Owner == nil || u.Owner.ID != parent.id || u.Host {
			t.Errorf("owner %+v, want %s", u.Owner, parent.id)
		}
		if want := []string{testNS + "/" + kid.id, testNS + "/" + parent.id}; strings.Join(u.Containers, ",") != strings.Join(want, ",") {
			t.Errorf("containers %q, want %q", u.Containers, want)
		}
		if u.ShmSource != "own" || u.ShmSize != nsisoShm {
			t.Errorf("/dev/shm %s of %d bytes, want own, %d", u.ShmSource, u.ShmSize, nsisoShm)
		}
		checkUsed(t, "nsiso parent", u.ShmUsed, int64(pages)*4096, nsisoShm)
		if u.SysV == nil || u.SysV.Segments != 1 || u.SysV.Bytes != 1<<20 {
			t.Errorf("System V %+v, want 1 segment of 1Mi", u.SysV)
		} else if u.SysV.MaxBytes != nsisoShm || u.SysV.MaxSegmentBytes != nsisoShm || u.SysV.MaxSegments != 4096 {
			// The limits nsiso set, as the kernel reports them inside.
			t.Errorf("System V limits %+v, want the namespace's 32Mi budget", u.SysV)
		}
		if got := strings.TrimSpace(s.exec(t, kid, "cat", "/proc/sys/kernel/shmall")); got != strconv.Itoa(nsisoShm/4096) {
			t.Errorf("kernel.shmall inside = %s", got)
		}
	})

	t.Run("runc.v2", func(t *testing.T) {
		u, ok := us[ipcOf(rc)]
		if !ok || u.Owner == nil || u.Owner.ID != rc.id {
			t.Fatalf("runc.v2 container's namespace: %+v", u)
		}
		checkUsed(t, "runc.v2", u.ShmUsed, int64(rcPages)*4096, 64<<20)
		if u.SysV == nil || u.SysV.Segments != 1 || u.SysV.Bytes != 17*4096 {
			t.Errorf("System V %+v, want 1 segment of 17 pages", u.SysV)
		}
	})

	t.Run("symlinked /dev/shm not followed", func(t *testing.T) {
		for _, x := range []*task{linkSelf, linkEtc} {
			u, ok := us[ipcOf(x)]
			if !ok {
				t.Fatalf("%s not reported", x.id)
			}
			if u.ShmSource != "unknown" || u.ShmSize != 0 || u.ShmUsed != 0 {
				t.Errorf("%s: /dev/shm %s, %d of %d bytes; want unknown, nothing read", x.id, u.ShmSource, u.ShmUsed, u.ShmSize)
			}
			if u.SysV == nil {
				t.Errorf("%s: System V not read", x.id)
			}
			note := fmt.Sprintf("nsiso audit: note: %s/%s: /dev/shm is a symlink; not followed", testNS, x.id)
			if !strings.Contains(r.stderr, note) {
				t.Errorf("stderr %q lacks %q", r.stderr, note)
			}
		}
		// Followed from the host, "/dev/shm" is the host's: the container
		// must not read as sharing it.
		tr := runAudit(t, nil, args...)
		got := tr.lines(t, testNS, linkSelf.id, linkEtc.id)
		for _, x := range []*task{linkSelf, linkEtc} {
			want := fmt.Sprintf("%s/%s: IpcMode=private PidMode=private ShmSize=unknown Runtime=%s", testNS, x.id, runcRuntime)
			if got[x.id] != want {
				t.Errorf("line %q, want %q", got[x.id], want)
			}
		}
		if tr.code != 0 {
			t.Errorf("exit %d, stderr %q; a symlink is no host /dev/shm", tr.code, tr.stderr)
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		m, r := shmMetrics(t, args...)
		if r.code != 0 {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		checkUsed(t, "nsiso gauge", int64(m["nsiso_audit_shm_used_bytes"][parent.id]), int64(pages)*4096, nsisoShm)
		checkUsed(t, "runc.v2 gauge", int64(m["nsiso_audit_shm_used_bytes"][rc.id]), int64(rcPages)*4096, 64<<20)
		for name, want := range map[string]map[string]float64{
			"nsiso_audit_shm_size_bytes":           {parent.id: nsisoShm, rc.id: 64 << 20},
			"nsiso_audit_sysv_shm_segments":        {parent.id: 1, rc.id: 1, linkSelf.id: 0},
			"nsiso_audit_sysv_shm_bytes":           {parent.id: 1 << 20, rc.id: 17 * 4096},
			"nsiso_audit_sysv_shm_limit_bytes":     {parent.id: nsisoShm},
			"nsiso_audit_ipc_namespace_containers": {parent.id: 2, rc.id: 1},
		} {
			for id, v := range want {
				if got, ok := m[name][id]; !ok || got != v {
					t.Errorf("%s{id=%s} = %v (present %v), want %v", name, id, got, ok, v)
				}
			}
		}
		// The child is in its parent's series, not one of its own; the
		// symlinked /dev/shm has no size.
		for _, name := range []string{"nsiso_audit_shm_used_bytes", "nsiso_audit_sysv_shm_segments"} {
			if _, ok := m[name][kid.id]; ok {
				t.Errorf("%s has a series for the child", name)
			}
		}
		if _, ok := m["nsiso_audit_shm_size_bytes"][linkSelf.id]; ok {
			t.Error("a symlinked /dev/shm has a size series")
		}
	})
}

// Pods under both handlers: the pod is one IPC namespace, labelled as its
// sandbox and pod, with the bytes a container wrote on the pod's /dev/shm
// and a segment another container holds.
func TestAuditShmUsageCRI(t *testing.T) {
	c := setupCRI(t)
	for _, tc := range []struct {
		handler, runtime string
		ann              map[string]string
		size             int64
	}{
		{"nsiso", nsisoRuntime, ann(specmod.AnnotationShmSize, "32Mi"), 32 << 20},
		{"runc", runcRuntime, nil, 64 << 20},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			p := pod{name: newPodName("shm"), handler: tc.handler, ann: tc.ann}
			sb, err := c.runPod(t, p)
			if err != nil {
				t.Fatal(err)
			}
			a := c.startContainer(t, sb, p, "a", nil)
			b := c.startContainer(t, sb, p, "b", nil)
			pages := ninetyPercent(tc.size)
			c.exec(t, a, fillCmd(pages)...)
			mustSegment(t, c.segmenter(b), "1048576")
			ipc := inodeOf(t, c.ns(t, a, "ipc"))
			args := []string{"audit", "--address", c.ctd.Address(), "--namespace", criNS}

			us, r := shmUsages(t, args...)
			if r.code != 0 {
				t.Errorf("exit %d, stderr %q", r.code, r.stderr)
			}
			u, ok := us[ipc]
			if !ok || u.Owner == nil {
				t.Fatalf("pod's IPC namespace %d not reported: %+v", ipc, us)
			}
			if u.Owner.ID != sb || !u.Owner.Sandbox || u.Owner.PodName != p.name || u.Owner.Runtime != tc.runtime {
				t.Errorf("owner %+v, want the sandbox %s of pod %s", u.Owner, sb, p.name)
			}
			if len(u.Containers) != 3 {
				t.Errorf("containers %q, want the sandbox, a and b", u.Containers)
			}
			if u.ShmSize != tc.size {
				t.Errorf("/dev/shm of %d bytes, want %d", u.ShmSize, tc.size)
			}
			checkUsed(t, "pod", u.ShmUsed, int64(pages)*4096, tc.size)
			if u.SysV == nil || u.SysV.Segments != 1 || u.SysV.Bytes != 1<<20 {
				t.Errorf("System V %+v, want 1 segment of 1Mi", u.SysV)
			}

			m, r := shmMetrics(t, args...)
			if r.code != 0 {
				t.Errorf("exit %d, stderr %q", r.code, r.stderr)
			}
			checkUsed(t, "gauge", int64(m["nsiso_audit_shm_used_bytes"][sb]), int64(pages)*4096, tc.size)
			if got := m["nsiso_audit_shm_size_bytes"][sb]; got != float64(tc.size) {
				t.Errorf("size gauge %v, want %d", got, tc.size)
			}
			if got := m["nsiso_audit_sysv_shm_bytes"][sb]; got != 1<<20 {
				t.Errorf("System V gauge %v, want 1Mi", got)
			}
			for _, id := range []string{a, b} {
				if _, ok := m["nsiso_audit_shm_used_bytes"][id]; ok {
					t.Errorf("container %s has a series of its own; the pod is one namespace", id)
				}
			}
		})
	}
}

// A full node: NSISO_AUDIT_NODE_PODS pods (the kubelet's default maximum
// is 110), alternately under nsiso and runc, each a sandbox and a
// container that wrote to the pod's /dev/shm. Every pod must be one IPC
// namespace with its gauges; the audit's run time with and without the
// shared memory reads is logged for docs/audit.md (measured, not asserted).
// Skipped unless the variable is set: filling a node takes minutes.
func TestAuditShmUsageNode(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("NSISO_AUDIT_NODE_PODS"))
	if n <= 0 {
		t.Skip("set NSISO_AUDIT_NODE_PODS=110 to fill a node")
	}
	c := setupCRI(t)
	type made struct{ sb, ctr, handler string }
	pods := make([]made, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, 4)
	t0 := time.Now()
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			mu.Lock()
			p := pod{name: newPodName("node"), handler: []string{"nsiso", "runc"}[i%2]}
			mu.Unlock()
			sb, err := c.runPod(t, p)
			if err != nil {
				t.Errorf("pod %d: %v", i, err)
				return
			}
			id, err := c.createContainer(sb, p, "app", nil)
			if err == nil {
				_, err = c.rt.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id})
			}
			if err != nil {
				t.Errorf("container of pod %d: %v", i, err)
				return
			}
			// Not c.exec: FailNow is for the test's own goroutine.
			resp, err := c.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: fillCmd(i + 1), Timeout: 60})
			if err != nil || resp.ExitCode != 0 {
				t.Errorf("fill /dev/shm of pod %d: %v %s", i, err, resp.GetStderr())
				return
			}
			pods[i] = made{sb, id, p.handler}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d pods made in %v", n, time.Since(t0).Round(time.Second))

	args := []string{"audit", "--address", c.ctd.Address(), "--namespace", criNS}
	m, _ := shmMetrics(t, args...)
	for i, p := range pods {
		if got, want := int64(m["nsiso_audit_shm_used_bytes"][p.sb]), int64(i+1)*4096; got < want || got > want+16*4096 {
			t.Errorf("%s pod %s: %d bytes in use reported, its container wrote %d", p.handler, p.sb, got, want)
		}
		if got := m["nsiso_audit_ipc_namespace_containers"][p.sb]; got != 2 {
			t.Errorf("pod %s: %v containers in its IPC namespace, want 2", p.sb, got)
		}
		if _, ok := m["nsiso_audit_sysv_shm_segments"][p.sb]; !ok {
			t.Errorf("pod %s: no System V series", p.sb)
		}
	}

	// Alternate the two so that a slower moment of the node hits both.
	const rounds = 7
	var without, with, prom []time.Duration
	for range rounds {
		for _, v := range []struct {
			into  *[]time.Duration
			extra []string
		}{{&without, nil}, {&with, []string{"--shm"}}, {&prom, []string{"--format", "prometheus"}}} {
			start := time.Now()
			r := runAudit(t, nil, append(args, v.extra...)...)
			*v.into = append(*v.into, time.Since(start))
			if r.code != 0 {
				t.Fatalf("audit %v: exit %d, stderr %q", v.extra, r.code, r.stderr)
			}
		}
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	t.Logf("audit of %d pods (%d containers), median of %d runs: text %v, --shm %v, prometheus %v",
		n, 2*n, rounds, median(without).Round(time.Millisecond), median(with).Round(time.Millisecond), median(prom).Round(time.Millisecond))
}
