package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
)

// auditRecord is one object of `nsiso audit --format json`, decoded
// strictly so that a renamed or added field fails the test: the names are
// the command's interface.
type auditRecord struct {
	Namespace    string `json:"namespace"`
	ID           string `json:"id"`
	IPCMode      string `json:"ipcMode"`
	PIDMode      string `json:"pidMode"`
	ShmSize      int64  `json:"shmSize"`
	ShmSource    string `json:"shmSource"`
	Runtime      string `json:"runtime"`
	Pid          uint32 `json:"pid"`
	IPCNamespace uint64 `json:"ipcNamespace"`
	PIDNamespace uint64 `json:"pidNamespace"`
	Status       string `json:"status"`
}

type auditResult struct {
	stdout, stderr string
	code           int
}

// nsisoBinary finds the nsiso command that `make build` put next to the
// shim.
func nsisoBinary(t *testing.T) string {
	t.Helper()
	dir, err := shimBinDir()
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
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var recs []auditRecord
	if err := dec.Decode(&recs); err != nil {
		t.Fatalf("decode JSON report: %v\n%s", err, r.stdout)
	}
	m := map[string]auditRecord{}
	for _, rec := range recs {
		if rec.Namespace == testNS {
			m[rec.ID] = rec
		}
	}
	return m
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
	line(st.id, "stopped", "stopped", "-", nsisoRuntime)
	nt := &task{id: newID("aud-notask")}
	nt.c = s.newContainer(t, nt.id, spec{runtime: runcRuntime})
	t.Cleanup(func() { s.remove(t, nt) })
	line(nt.id, "stopped", "stopped", "-", runcRuntime)

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
				Runtime: runtime, Pid: x.t.Pid(), IPCNamespace: ipcNS, PIDNamespace: pidNS, Status: "running"}
		}
		wantRecs := []auditRecord{
			running(rc, "private", "private", 64<<20, "own", runcRuntime, ipcOf(rc), pidOf(rc)),
			running(np, "private", "private", 128<<20, "own", nsisoRuntime, ipcOf(np), pidOf(np)),
			running(sc, "container:"+np.id, "container:"+np.id, 128<<20, "container:"+np.id, nsisoRuntime, ipcOf(np), pidOf(np)),
			running(uk, "container:"+rc.id, "private", 96<<20, "own", nsisoRuntime, ipcOf(rc), pidOf(uk)),
			running(jn, "container:"+rc.id, "private", 64<<20, "own", runcRuntime, ipcOf(rc), pidOf(jn)),
			{Namespace: testNS, ID: cr.id, IPCMode: "private", PIDMode: "private", ShmSize: 64 << 20, ShmSource: "own", Runtime: runcRuntime,
				Pid: cr.t.Pid(), IPCNamespace: nsInode(t, cr.t.Pid(), "ipc"), PIDNamespace: nsInode(t, cr.t.Pid(), "pid"), Status: "created"},
			{Namespace: testNS, ID: st.id, IPCMode: "stopped", PIDMode: "stopped", Runtime: nsisoRuntime, Status: "stopped"},
			{Namespace: testNS, ID: nt.id, IPCMode: "stopped", PIDMode: "stopped", Runtime: runcRuntime, Status: "stopped"},
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

	t.Run("compliant again", func(t *testing.T) {
		r := s.audit(t, "--pid")
		assertLines(t, r, want)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("exit %d, stderr %q; want 0", r.code, r.stderr)
		}
	})

	t.Run("errors", func(t *testing.T) {
		r := runAudit(t, nil, "audit", "--address", filepath.Join(t.TempDir(), "none.sock"))
		if r.code != 2 || !strings.Contains(r.stderr, "no such file or directory") {
			t.Errorf("missing socket: exit %d, stderr %q; want 2 and the reason", r.code, r.stderr)
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
			want := map[string]string{
				sb: fmt.Sprintf("%s/%s: IpcMode=private PidMode=private ShmSize=%s Runtime=%s", criNS, sb, tc.shm, tc.runtime),
				a:  fmt.Sprintf("%s/%s: IpcMode=container:%s PidMode=%s ShmSize=%s Runtime=%s", criNS, a, sb, kidPID, tc.shm, tc.runtime),
				b:  fmt.Sprintf("%s/%s: IpcMode=container:%s PidMode=%s ShmSize=%s Runtime=%s", criNS, b, sb, kidPID, tc.shm, tc.runtime),
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
