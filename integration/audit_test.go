package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// auditRecord is one object of `nsiso audit --format json`, decoded
// strictly so that a renamed or added field fails the test: the names are
// the command's interface.
type auditRecord struct {
	Namespace     string `json:"namespace"`
	ID            string `json:"id"`
	IPCMode       string `json:"ipcMode"`
	PIDMode       string `json:"pidMode"`
	ShmSize       int64  `json:"shmSize"`
	ShmSource     string `json:"shmSource"`
	Runtime       string `json:"runtime"`
	Pid           uint32 `json:"pid"`
	IPCNamespace  uint64 `json:"ipcNamespace"`
	PIDNamespace  uint64 `json:"pidNamespace"`
	Status        string `json:"status"`
	Source        string `json:"source"`
	PodNamespace  string `json:"podNamespace"`
	PodName       string `json:"podName"`
	ContainerName string `json:"containerName"`
	Sandbox       bool   `json:"sandbox"`
	// What the labels and annotations of a container CRI did not make
	// say about its pod: a claim, not an identity.
	ClaimedPodNamespace  string `json:"claimedPodNamespace"`
	ClaimedPodName       string `json:"claimedPodName"`
	ClaimedContainerName string `json:"claimedContainerName"`
	ClaimedSandbox       bool   `json:"claimedSandbox"`
}

type auditResult struct {
	stdout, stderr string
	code           int
}

// nsisoBinary finds the nsiso command that `make build` put next to the
// shim.
func nsisoBinary(t *testing.T) string {
	t.Helper()
	dir, err := testenv.FindShimDir()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "nsiso")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("nsiso not built (run `make build`): %v", err)
	}
	return p
}

// audit runs `nsiso audit` against the suite's daemon and namespace.
func (s *suite) audit(t *testing.T, args ...string) auditResult {
	t.Helper()
	return runAudit(t, nil, append([]string{"audit", "--address", s.ctd.Address(), "--namespace", testNS}, args...)...)
}

func runAudit(t *testing.T, cred *syscall.Credential, args ...string) auditResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nsisoBinary(t), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := auditResult{stdout: out.String(), stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("nsiso %v: %v", args, err)
	}
	return r
}

// lines returns the text report's line of each id in containerd namespace
// ns, keyed by id; other tests' containers are ignored.
func (r auditResult) lines(t *testing.T, ns string, ids ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		for _, id := range ids {
			if strings.HasPrefix(line, ns+"/"+id+":") {
				if _, dup := got[id]; dup {
					t.Errorf("%s reported twice", id)
				}
				got[id] = line
			}
		}
	}
	return got
}

func (r auditResult) records(t *testing.T) map[string]auditRecord {
	t.Helper()
	return r.recordsIn(t, testNS)
}

// recordsIn returns the records of containerd namespace ns by ID.
func (r auditResult) recordsIn(t *testing.T, ns string) map[string]auditRecord {
	t.Helper()
	m := map[string]auditRecord{}
	for _, rec := range r.allRecords(t) {
		if rec.Namespace == ns {
			m[rec.ID] = rec
		}
	}
	return m
}

func (r auditResult) allRecords(t *testing.T) []auditRecord {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var recs []auditRecord
	if err := dec.Decode(&recs); err != nil {
		t.Fatalf("decode JSON report: %v\n%s", err, r.stdout)
	}
	return recs
}

// nsInode is the inode of a process's namespace, as the host sees it.
func nsInode(t *testing.T, pid uint32, kind string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// inodeOf parses a namespace link such as "ipc:[4026532281]".
func inodeOf(t *testing.T, link string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(strings.TrimSuffix(link[strings.IndexByte(link, '[')+1:], "]"), 10, 64)
	if err != nil {
		t.Fatalf("namespace link %q: %v", link, err)
	}
	return n
}

// The audit reports every container as the kernel sees it, whatever runtime
// started it: owners of shared namespaces, /dev/shm sizes, stopped
// containers; and fails exactly when the host's IPC namespace or /dev/shm
// (with --pid, the PID namespace) is shared.
func TestAudit(t *testing.T) {
	s := setup(t)
	want := map[string]string{} // id → expected text line
	line := func(id, ipc, pid, shm, runtime string) {
		want[id] = fmt.Sprintf("%s/%s: IpcMode=%s PidMode=%s ShmSize=%s Runtime=%s", testNS, id, ipc, pid, shm, runtime)
	}
	specLine := func(id, ipc, pid, shm, runtime string) {
		line(id, ipc, pid, shm, runtime)
		want[id] += " (from spec)"
	}

	// The owners' IDs sort after their members' so that an owner chosen by
	// ID rather than by the rules shows.
	rc := s.start(t, newID("aud-runc"), spec{runtime: runcRuntime})
	line(rc.id, "private", "private", "64Mi", runcRuntime)
	np := s.start(t, newID("aud-parent"), spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "128Mi",
		specmod.AnnotationPIDMode, "private")})
	line(np.id, "private", "private", "128Mi", nsisoRuntime)
	sc := s.start(t, newID("aud-kid"), spec{ann: ann(specmod.AnnotationIPCMode, "share-parent",
		specmod.AnnotationPIDMode, "share-parent", specmod.AnnotationParent, np.id)})
	line(sc.id, "container:"+np.id, "container:"+np.id, "128Mi", nsisoRuntime)
	// Unset mode under a runc.v2 parent: its IPC namespace, own /dev/shm of
	// the node's default size, its own PID namespace.
	uk := s.start(t, newID("aud-legacy"), spec{ann: ann(specmod.AnnotationParent, rc.id)})
	line(uk.id, "container:"+rc.id, "private", "96Mi", nsisoRuntime)
	// A runc.v2 container that joins by path, as CRI's containers join
	// their sandbox: the spec names no parent, the kernel tells.
	jn := s.start(t, newID("aud-join"), spec{runtime: runcRuntime, opts: []oci.SpecOpts{oci.WithLinuxNamespace(
		specs.LinuxNamespace{Type: specs.IPCNamespace, Path: fmt.Sprintf("/proc/%d/ns/ipc", rc.t.Pid())})}})
	line(jn.id, "container:"+rc.id, "private", "64Mi", runcRuntime)

	// A created task has an init (waiting in runc) and its namespaces.
	cr := &task{id: newID("aud-created")}
	cr.c = s.newContainer(t, cr.id, spec{runtime: runcRuntime})
	tk, err := cr.c.NewTask(s.ctx, cio.NullIO)
	if err != nil {
		s.remove(t, cr)
		t.Fatalf("create task %s: %v", cr.id, err)
	}
	cr.t = tk
	t.Cleanup(func() { s.remove(t, cr) })
	line(cr.id, "private", "private", "64Mi", runcRuntime)

	st := s.start(t, newID("aud-stopped"), spec{args: []string{"true"}})
	waitFor(t, "container to stop", func() bool {
		ts, err := st.t.Status(s.ctx)
		return err == nil && ts.Status == "stopped"
	})
	specLine(st.id, "private", "private", "-", nsisoRuntime)
	nt := &task{id: newID("aud-notask")}
	nt.c = s.newContainer(t, nt.id, spec{runtime: runcRuntime})
	t.Cleanup(func() { s.remove(t, nt) })
	specLine(nt.id, "private", "private", "-", runcRuntime)
	// A child whose parent is running, never started: its spec joins the
	// parent, as nsiso would make it.
	nk := &task{id: newID("aud-kid-notask")}
	nk.c = s.newContainer(t, nk.id, spec{ann: ann(specmod.AnnotationIPCMode, "share-parent",
		specmod.AnnotationPIDMode, "share-parent", specmod.AnnotationParent, np.id)})
	t.Cleanup(func() { s.remove(t, nk) })
	specLine(nk.id, "container:"+np.id, "container:"+np.id, "-", nsisoRuntime)

	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	assertLines := func(t *testing.T, r auditResult, want map[string]string) {
		t.Helper()
		got := r.lines(t, testNS, ids...)
		for id, w := range want {
			if got[id] != w {
				t.Errorf("line of %s:\n got %q\nwant %q", id, got[id], w)
			}
		}
		if t.Failed() {
			t.Logf("full report:\n%s", r.stdout)
		}
	}

	t.Run("text", func(t *testing.T) {
		r := s.audit(t)
		assertLines(t, r, want)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
		}
		// Sorted by namespace, then ID.
		var order []string
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			order = append(order, l[:strings.IndexByte(l, ':')])
		}
		for i := 1; i < len(order); i++ {
			if order[i-1] >= order[i] {
				t.Errorf("report not sorted: %q before %q", order[i-1], order[i])
			}
		}
		if r := s.audit(t, "--pid"); r.code != 0 {
			t.Errorf("--pid without host PID sharers: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("all namespaces", func(t *testing.T) {
		r := runAudit(t, nil, "audit", "--address", s.ctd.Address())
		assertLines(t, r, want)
		if r.code != 0 {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("json", func(t *testing.T) {
		r := s.audit(t, "--format", "json")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		recs := r.records(t)
		ipcOf := func(x *task) uint64 { return inodeOf(t, s.ns(t, x, "ipc")) }
		pidOf := func(x *task) uint64 { return inodeOf(t, s.ns(t, x, "pid")) }
		running := func(x *task, ipcMode, pidMode string, shm int64, src, runtime string, ipcNS, pidNS uint64) auditRecord {
			return auditRecord{Namespace: testNS, ID: x.id, IPCMode: ipcMode, PIDMode: pidMode, ShmSize: shm, ShmSource: src,
				Runtime: runtime, Pid: x.t.Pid(), IPCNamespace: ipcNS, PIDNamespace: pidNS, Status: "running", Source: "kernel"}
		}
		wantRecs := []auditRecord{
			running(rc, "private", "private", 64<<20, "own", runcRuntime, ipcOf(rc), pidOf(rc)),
			running(np, "private", "private", 128<<20, "own", nsisoRuntime, ipcOf(np), pidOf(np)),
			running(sc, "container:"+np.id, "container:"+np.id, 128<<20, "container:"+np.id, nsisoRuntime, ipcOf(np), pidOf(np)),
			running(uk, "container:"+rc.id, "private", 96<<20, "own", nsisoRuntime, ipcOf(rc), pidOf(uk)),
			running(jn, "container:"+rc.id, "private", 64<<20, "own", runcRuntime, ipcOf(rc), pidOf(jn)),
			{Namespace: testNS, ID: cr.id, IPCMode: "private", PIDMode: "private", ShmSize: 64 << 20, ShmSource: "own", Runtime: runcRuntime,
				Pid: cr.t.Pid(), IPCNamespace: nsInode(t, cr.t.Pid(), "ipc"), PIDNamespace: nsInode(t, cr.t.Pid(), "pid"), Status: "created", Source: "kernel"},
			{Namespace: testNS, ID: st.id, IPCMode: "private", PIDMode: "private", ShmSource: "own", Runtime: nsisoRuntime, Status: "stopped", Source: "spec"},
			{Namespace: testNS, ID: nt.id, IPCMode: "private", PIDMode: "private", ShmSource: "own", Runtime: runcRuntime, Status: "stopped", Source: "spec"},
			{Namespace: testNS, ID: nk.id, IPCMode: "container:" + np.id, PIDMode: "container:" + np.id, ShmSource: "container:" + np.id,
				Runtime: nsisoRuntime, Status: "stopped", Source: "spec"},
		}
		for _, w := range wantRecs {
			if got := recs[w.ID]; got != w {
				t.Errorf("record of %s:\n got %+v\nwant %+v", w.ID, got, w)
			}
		}
		if ipcOf(sc) != ipcOf(np) || ipcOf(uk) != ipcOf(rc) || ipcOf(jn) != ipcOf(rc) {
			t.Error("the containers do not share the namespaces the test set up")
		}
	})

	// Host sharers live only in this sub-test, so that every other check
	// of the package's shared daemon sees none.
	t.Run("host sharing", func(t *testing.T) {
		hi := s.start(t, newID("aud-hostipc"), spec{config: s.lenient, ann: ann(specmod.AnnotationIPCMode, "share-parent")})
		hp := s.start(t, newID("aud-hostpid"), spec{config: s.lenient, ann: ann(specmod.AnnotationPIDMode, "share-parent")})
		ids = append(ids, hi.id, hp.id)
		hostWant := map[string]string{
			hi.id: fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=host Runtime=%s", testNS, hi.id, nsisoRuntime),
			hp.id: fmt.Sprintf("%s/%s: IpcMode=private PidMode=host ShmSize=64Mi Runtime=%s", testNS, hp.id, nsisoRuntime),
		}
		ipcOffender := fmt.Sprintf("nsiso audit: %s/%s shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)\n", testNS, hi.id)
		pidOffender := fmt.Sprintf("nsiso audit: %s/%s shares the host's PID namespace (CIS Docker Benchmark 5.15)\n", testNS, hp.id)

		r := s.audit(t)
		assertLines(t, r, hostWant)
		assertLines(t, r, want)
		if r.code != 1 || r.stderr != ipcOffender {
			t.Errorf("with a host IPC sharer: exit %d, stderr %q; want 1, %q", r.code, r.stderr, ipcOffender)
		}
		r = s.audit(t, "--pid")
		if r.code != 1 || r.stderr != ipcOffender+pidOffender {
			t.Errorf("--pid with host sharers: exit %d, stderr %q; want 1, %q", r.code, r.stderr, ipcOffender+pidOffender)
		}

		r = s.audit(t, "--format", "json")
		recs := r.records(t)
		if got := recs[hi.id]; got.IPCMode != "host" || got.ShmSource != "host" || got.ShmSize != 0 || got.IPCNamespace != nsInode(t, uint32(os.Getpid()), "ipc") {
			t.Errorf("host IPC sharer: %+v", got)
		}
		if got := recs[hp.id]; got.PIDMode != "host" || got.ShmSource != "own" || got.PIDNamespace != nsInode(t, uint32(os.Getpid()), "pid") {
			t.Errorf("host PID sharer: %+v", got)
		}
		if r.code != 1 {
			t.Errorf("JSON with a host IPC sharer: exit %d", r.code)
		}

		s.remove(t, hi)
		hi.t = nil
		r = s.audit(t)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("host PID sharer without --pid: exit %d, stderr %q; want 0", r.code, r.stderr)
		}
		r = s.audit(t, "--pid")
		if r.code != 1 || r.stderr != pidOffender {
			t.Errorf("host PID sharer with --pid: exit %d, stderr %q; want 1, %q", r.code, r.stderr, pidOffender)
		}
		s.remove(t, hp)
		hp.t = nil
	})

	// What a container without a live task would share counts like what a
	// running one shares: the benchmark checks `docker ps --all`.
	t.Run("host IPC running, stopped and never started", func(t *testing.T) {
		hostIPC := spec{runtime: runcRuntime, opts: []oci.SpecOpts{oci.WithHostNamespace(specs.IPCNamespace)}}
		run := s.start(t, newID("aud-hipc-run"), hostIPC)
		stop := s.start(t, newID("aud-hipc-stop"), hostIPC)
		wait, err := stop.t.Wait(s.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stop.t.Kill(s.ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-wait // the task stays, stopped
		never := &task{id: newID("aud-hipc-never")}
		never.c = s.newContainer(t, never.id, hostIPC)
		t.Cleanup(func() { s.remove(t, never) })
		// nsiso's share-parent at the top level is the host's IPC namespace
		// and /dev/shm; its task deleted, only the spec says so.
		nsh := s.start(t, newID("aud-hipc-nsiso"), spec{config: s.lenient, ann: ann(specmod.AnnotationIPCMode, "share-parent")})
		if _, err := nsh.t.Delete(s.ctx, client.WithProcessKill); err != nil {
			t.Fatal(err)
		}
		nsh.t = nil
		ids = append(ids, run.id, stop.id, never.id, nsh.id)
		hostWant := map[string]string{
			run.id:   fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=64Mi Runtime=%s", testNS, run.id, runcRuntime),
			stop.id:  fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=- Runtime=%s (from spec)", testNS, stop.id, runcRuntime),
			never.id: fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=- Runtime=%s (from spec)", testNS, never.id, runcRuntime),
			nsh.id:   fmt.Sprintf("%s/%s: IpcMode=host PidMode=private ShmSize=host Runtime=%s (from spec)", testNS, nsh.id, nsisoRuntime),
		}
		offenders := map[string]string{
			run.id:   "shares the host's IPC namespace (CIS Docker Benchmark 5.16)",
			stop.id:  "has no running task; its spec shares the host's IPC namespace (CIS Docker Benchmark 5.16)",
			never.id: "has no running task; its spec shares the host's IPC namespace (CIS Docker Benchmark 5.16)",
			nsh.id:   "has no running task; its spec shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)",
		}
		var wantErr string
		for _, id := range slices.Sorted(maps.Keys(offenders)) {
			wantErr += fmt.Sprintf("nsiso audit: %s/%s %s\n", testNS, id, offenders[id])
		}

		r := s.audit(t)
		assertLines(t, r, hostWant)
		assertLines(t, r, want)
		if r.code != 1 || r.stderr != wantErr {
			t.Errorf("exit %d, stderr:\n%s\nwant 1 and:\n%s", r.code, r.stderr, wantErr)
		}

		j := checkMetricsMatchJSON(t, "audit", "--address", s.ctd.Address(), "--namespace", testNS)
		recs := j.records(t)
		for _, w := range []auditRecord{
			{Namespace: testNS, ID: stop.id, IPCMode: "host", PIDMode: "private", ShmSource: "own", Runtime: runcRuntime, Status: "stopped", Source: "spec"},
			{Namespace: testNS, ID: never.id, IPCMode: "host", PIDMode: "private", ShmSource: "own", Runtime: runcRuntime, Status: "stopped", Source: "spec"},
			{Namespace: testNS, ID: nsh.id, IPCMode: "host", PIDMode: "private", ShmSource: "host", Runtime: nsisoRuntime, Status: "stopped", Source: "spec"},
		} {
			if got := recs[w.ID]; got != w {
				t.Errorf("record of %s:\n got %+v\nwant %+v", w.ID, got, w)
			}
		}
		if got := recs[run.id]; got.IPCMode != "host" || got.Source != "kernel" || got.IPCNamespace != nsInode(t, uint32(os.Getpid()), "ipc") {
			t.Errorf("running host IPC sharer: %+v", got)
		}

		mfs := checkOutputFile(t, 1, "audit", "--address", s.ctd.Address(), "--namespace", testNS)
		if got := familyValues(mfs, "nsiso_audit_host_ipc_sharing"); len(got) != 4 {
			t.Errorf("--output file lists %d host IPC sharers, want 4: %v", len(got), got)
		}

		for _, x := range []*task{run, stop, never, nsh} {
			s.remove(t, x)
			x.t = nil
		}
		if r := s.audit(t, "--pid"); r.code != 0 || r.stderr != "" {
			t.Errorf("all removed: exit %d, stderr %q; want 0", r.code, r.stderr)
		}
	})

	t.Run("compliant again", func(t *testing.T) {
		r := s.audit(t, "--pid")
		assertLines(t, r, want)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("exit %d, stderr %q; want 0", r.code, r.stderr)
		}
	})

	t.Run("errors", func(t *testing.T) {
		none := filepath.Join(t.TempDir(), "none.sock")
		r := runAudit(t, nil, "audit", "--address", none)
		if r.code != 2 || !strings.Contains(r.stderr, "no such file or directory") {
			t.Errorf("missing socket: exit %d, stderr %q; want 2 and the reason", r.code, r.stderr)
		}
		// Monitoring sees the failure in the file, not the last good one.
		mfs := checkOutputFile(t, 2, "audit", "--address", none)
		if got := familyValues(mfs, "nsiso_audit_success"); got["{}"] != 0 || len(mfs) != 3 {
			t.Errorf("failed audit: success %v and %d families, want 0 and 3 (success, time, duration)", got, len(mfs))
		}
		r = s.audit(t) // a valid namespace, for contrast with a typo
		if r.code != 0 {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		r = runAudit(t, nil, "audit", "--address", s.ctd.Address(), "--namespace", testNS+"-typo")
		if want := `nsiso audit: containerd namespace "` + testNS + `-typo" does not exist (there are: `; r.code != 2 || !strings.HasPrefix(r.stderr, want) {
			t.Errorf("unknown namespace: exit %d, stderr %q; want 2, %q…", r.code, r.stderr, want)
		}
		// Usage needs no root and no daemon.
		r = runAudit(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "help", "audit")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: nsiso audit") {
			t.Errorf("help as nobody: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
		r = runAudit(t, nobody, "audit", "--address", s.ctd.Address(), "--namespace", testNS)
		if r.code != 2 || !strings.Contains(r.stderr, "(containerd's socket needs root)") {
			t.Errorf("audit as nobody: exit %d, stderr %q; want 2 and a hint about root", r.code, r.stderr)
		}
		// Past the socket, the kernel refuses another user's /proc/<pid>/ns.
		// The socket and its directory are opened to all for this one run.
		restore := func(path string, mode os.FileMode) func() {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := os.Chmod(path, fi.Mode().Perm()); err != nil {
					t.Error(err)
				}
			}
		}
		undoDir := restore(filepath.Dir(s.ctd.Address()), 0o711)
		undoSock := restore(s.ctd.Address(), 0o666)
		r = runAudit(t, nobody, "audit", "--address", s.ctd.Address(), "--namespace", testNS)
		undoSock()
		undoDir()
		if r.code != 2 || !strings.Contains(r.stderr, ": permission denied (reading another process's namespaces and /dev/shm needs root)") {
			t.Errorf("audit as nobody with access to the socket: exit %d, stderr %q; want 2 and a hint about root", r.code, r.stderr)
		}
	})
}

// Kubernetes pods through CRI: the sandbox creates the pod's IPC namespace
// and /dev/shm (and, with a pod-wide PID namespace, is its pid 1); every
// container of the pod names it, under nsiso as under runc.v2.
func TestAuditCRIPods(t *testing.T) {
	c := setupCRI(t)
	for _, tc := range []struct {
		handler, runtime, shm string
		pid                   runtimeapi.NamespaceMode
	}{
		{"nsiso", nsisoRuntime, "256Mi", runtimeapi.NamespaceMode_POD},
		{"runc", runcRuntime, "64Mi", runtimeapi.NamespaceMode_CONTAINER},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			p := pod{name: newPodName("audit"), handler: tc.handler, pid: tc.pid}
			sb, err := c.runPod(t, p)
			if err != nil {
				t.Fatal(err)
			}
			a := c.startContainer(t, sb, p, "a", nil)
			b := c.startContainer(t, sb, p, "b", nil)
			kidPID := "private"
			if tc.pid == runtimeapi.NamespaceMode_POD {
				kidPID = "container:" + sb
			}
			podName := "default/" + p.name
			want := map[string]string{
				sb: fmt.Sprintf("%s/%s: IpcMode=private PidMode=private ShmSize=%s Runtime=%s Pod=%s Container=(sandbox)", criNS, sb, tc.shm, tc.runtime, podName),
				a:  fmt.Sprintf("%s/%s: IpcMode=container:%s PidMode=%s ShmSize=%s Runtime=%s Pod=%s Container=a", criNS, a, sb, kidPID, tc.shm, tc.runtime, podName),
				b:  fmt.Sprintf("%s/%s: IpcMode=container:%s PidMode=%s ShmSize=%s Runtime=%s Pod=%s Container=b", criNS, b, sb, kidPID, tc.shm, tc.runtime, podName),
			}
			r := runAudit(t, nil, "audit", "--address", c.ctd.Address(), "--namespace", criNS, "--pid")
			got := r.lines(t, criNS, sb, a, b)
			for id, w := range want {
				if got[id] != w {
					t.Errorf("line of %s:\n got %q\nwant %q", id, got[id], w)
				}
			}
			if r.code != 0 || r.stderr != "" {
				t.Errorf("exit %d, stderr %q; want 0", r.code, r.stderr)
			}
			if t.Failed() {
				t.Logf("full report:\n%s", r.stdout)
			}
		})
	}
}

// A hostIPC pod is flagged running, stopped, and with a container created
// and never started, by its Kubernetes names; a private pod never is.
func TestAuditCRIHostIPCPod(t *testing.T) {
	c := setupCRI(t)
	ctx := context.Background()
	// The plain runc handler: nsiso's example policy refuses hostIPC, and
	// the audit covers every runtime. It is labelled as the kubelet does;
	// the private pod (nsiso's handler) carries only what containerd's CRI
	// writes into its specs, as from crictl.
	hp := pod{name: newPodName("hostipc-pod"), namespace: "team-x", handler: "runc", ipc: runtimeapi.NamespaceMode_NODE, kubelet: true}
	pp := pod{name: newPodName("private-pod"), namespace: "team-y", handler: "nsiso"}
	hsb, err := c.runPod(t, hp)
	if err != nil {
		t.Fatal(err)
	}
	happ := c.startContainer(t, hsb, hp, "app", nil)
	hidle, err := c.createContainer(hsb, hp, "idle", nil)
	if err != nil {
		t.Fatal(err)
	}
	psb, err := c.runPod(t, pp)
	if err != nil {
		t.Fatal(err)
	}
	papp := c.startContainer(t, psb, pp, "app", nil)
	pidle, err := c.createContainer(psb, pp, "idle", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ns(t, happ, "ipc"); got != hostNS(t, "ipc") {
		t.Fatalf("hostIPC pod's container in IPC namespace %s, host's %s", got, hostNS(t, "ipc"))
	}

	hpod, ppod := "team-x/"+hp.name, "team-y/"+pp.name
	// Both pods have a pod-wide PID namespace (Kubernetes' default is
	// CRI's POD mode), which the sandbox owns.
	ln := func(id, ipc, shm, runtime, podName, ctr string, fromSpec bool) string {
		pid := "private"
		if ctr != "(sandbox)" {
			pid = "container:" + map[string]string{hpod: hsb, ppod: psb}[podName]
		}
		l := fmt.Sprintf("%s/%s: IpcMode=%s PidMode=%s ShmSize=%s Runtime=%s Pod=%s Container=%s", criNS, id, ipc, pid, shm, runtime, podName, ctr)
		if fromSpec {
			l += " (from spec)"
		}
		return l
	}
	hostLines := func(appRunning, sbRunning bool) map[string]string {
		return map[string]string{
			hsb:   ln(hsb, "host", "host", runcRuntime, hpod, "(sandbox)", !sbRunning),
			happ:  ln(happ, "host", "host", runcRuntime, hpod, "app", !appRunning),
			hidle: ln(hidle, "host", "host", runcRuntime, hpod, "idle", true),
		}
	}
	offenders := func(appRunning, sbRunning bool) string {
		msg := map[string]string{
			hsb:   fmt.Sprintf("%s/%s (pod %s, sandbox) ", criNS, hsb, hpod),
			happ:  fmt.Sprintf("%s/%s (pod %s, container app) ", criNS, happ, hpod),
			hidle: fmt.Sprintf("%s/%s (pod %s, container idle) ", criNS, hidle, hpod),
		}
		running := map[string]bool{hsb: sbRunning, happ: appRunning}
		var out string
		for _, id := range slices.Sorted(maps.Keys(msg)) {
			if !running[id] {
				msg[id] += "has no running task; its spec "
			}
			out += "nsiso audit: " + msg[id] + "shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)\n"
		}
		return out
	}
	check := func(t *testing.T, want map[string]string, wantErr string, wantCode int, args ...string) auditResult {
		t.Helper()
		r := runAudit(t, nil, append([]string{"audit", "--address", c.ctd.Address(), "--namespace", criNS}, args...)...)
		ids := slices.Collect(maps.Keys(want))
		got := r.lines(t, criNS, ids...)
		for id, w := range want {
			if got[id] != w {
				t.Errorf("line of %s:\n got %q\nwant %q", id, got[id], w)
			}
		}
		if r.code != wantCode || r.stderr != wantErr {
			t.Errorf("exit %d, stderr:\n%s\nwant %d and:\n%s", r.code, r.stderr, wantCode, wantErr)
		}
		t.Logf("nsiso audit %s:\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
		return r
	}

	t.Run("running", func(t *testing.T) {
		sbShm := "256Mi" // examples/nsiso.toml's default_container_shm_size
		want := hostLines(true, true)
		want[psb] = ln(psb, "private", sbShm, nsisoRuntime, ppod, "(sandbox)", false)
		want[papp] = ln(papp, "container:"+psb, sbShm, nsisoRuntime, ppod, "app", false)
		want[pidle] = ln(pidle, "container:"+psb, "-", nsisoRuntime, ppod, "idle", true)
		check(t, want, offenders(true, true), 1)

		// --pod-namespace filters the report, not the analysis: the idle
		// container still names its sandbox.
		check(t, map[string]string{psb: want[psb], papp: want[papp], pidle: want[pidle]}, "", 0, "--pod-namespace", "team-y")
		r := check(t, hostLines(true, true), offenders(true, true), 1, "--pod-namespace", "team-x")
		if strings.Contains(r.stdout, pp.name) {
			t.Errorf("--pod-namespace team-x reports team-y's pod:\n%s", r.stdout)
		}
		r = runAudit(t, nil, "audit", "--address", c.ctd.Address(), "--pod-namespace", "team-z")
		if r.code != 0 || r.stdout != "" || r.stderr != "nsiso audit: no container of a pod in Kubernetes namespace \"team-z\"\n" {
			t.Errorf("--pod-namespace without pods: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}

		j := checkMetricsMatchJSON(t, "audit", "--address", c.ctd.Address(), "--namespace", criNS)
		recs := j.recordsIn(t, criNS)
		for id, w := range map[string]auditRecord{
			hsb:   {PodNamespace: "team-x", PodName: hp.name, Sandbox: true, Source: "kernel", IPCMode: "host", ShmSource: "host"},
			happ:  {PodNamespace: "team-x", PodName: hp.name, ContainerName: "app", Source: "kernel", IPCMode: "host", ShmSource: "host"},
			hidle: {PodNamespace: "team-x", PodName: hp.name, ContainerName: "idle", Source: "spec", IPCMode: "host", ShmSource: "host"},
			psb:   {PodNamespace: "team-y", PodName: pp.name, Sandbox: true, Source: "kernel", IPCMode: "private", ShmSource: "own"},
			papp:  {PodNamespace: "team-y", PodName: pp.name, ContainerName: "app", Source: "kernel", IPCMode: "container:" + psb, ShmSource: "container:" + psb},
			pidle: {PodNamespace: "team-y", PodName: pp.name, ContainerName: "idle", Source: "spec", IPCMode: "container:" + psb, ShmSource: "container:" + psb},
		} {
			got := recs[id]
			if got.PodNamespace != w.PodNamespace || got.PodName != w.PodName || got.ContainerName != w.ContainerName ||
				got.Sandbox != w.Sandbox || got.Source != w.Source || got.IPCMode != w.IPCMode || got.ShmSource != w.ShmSource {
				t.Errorf("record of %s:\n got %+v\nwant %+v", id, got, w)
			}
		}
	})

	t.Run("container stopped", func(t *testing.T) {
		for _, id := range []string{happ, papp} {
			if _, err := c.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		}
		want := hostLines(false, true)
		want[papp] = ln(papp, "container:"+psb, "-", nsisoRuntime, ppod, "app", true)
		check(t, want, offenders(false, true), 1)
	})

	t.Run("pod stopped", func(t *testing.T) {
		for _, id := range []string{hsb, psb} {
			if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
				t.Fatal(err)
			}
		}
		// The private pod's containers still name their sandbox, whatever
		// process has its old pid now.
		want := hostLines(false, false)
		want[psb] = ln(psb, "private", "-", nsisoRuntime, ppod, "(sandbox)", true)
		want[papp] = ln(papp, "container:"+psb, "-", nsisoRuntime, ppod, "app", true)
		want[pidle] = ln(pidle, "container:"+psb, "-", nsisoRuntime, ppod, "idle", true)
		check(t, want, offenders(false, false), 1)
		check(t, map[string]string{psb: want[psb], papp: want[papp], pidle: want[pidle]}, "", 0, "--pod-namespace", "team-y")
		checkMetricsMatchJSON(t, "audit", "--address", c.ctd.Address(), "--namespace", criNS)
	})
}
