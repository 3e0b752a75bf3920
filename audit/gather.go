package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

// StatusNoTask is Facts.Status and Record.Status of a container without a
// task, or whose task's init exited while it was being read.
const StatusNoTask = "stopped"

// HostFacts reads the host's IPC and PID namespaces and /dev/shm through
// h (pid 1's where readable, else this process's own).
func HostFacts(h *hostns.Checker) (Host, error) {
	var host Host
	var err error
	if host.IPC, err = h.Namespace(specs.IPCNamespace); err != nil {
		return host, err
	}
	if host.PID, err = h.Namespace(specs.PIDNamespace); err != nil {
		return host, err
	}
	shm, err := h.Shm()
	// A host without /dev/shm has none to share; any other failure to
	// read it would hide a sharer, so it stops the audit.
	switch {
	case err == nil:
		host.Shm, host.HasShm = shm, true
	case !isNotExist(err):
		return host, fmt.Errorf("host /dev/shm: %w", err)
	}
	return host, nil
}

// Gather lists the containers of the given containerd namespaces (all of
// them when none is given) and reads the facts of each from containerd and,
// for those with a live task, from the kernel under /proc.
func Gather(ctx context.Context, c *client.Client, nss []string) ([]Facts, error) {
	all, err := c.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containerd namespaces: %w", err)
	}
	if len(nss) == 0 {
		nss = all
	}
	for _, ns := range nss {
		// containerd lists nothing in a namespace that does not exist, and
		// a mistyped name must not pass for a compliant node.
		if !slices.Contains(all, ns) {
			return nil, fmt.Errorf("containerd namespace %+q does not exist (there are: %s)", ns, strings.Join(all, ", "))
		}
	}
	var out []Facts
	for _, ns := range nss {
		fs, err := gatherNamespace(namespaces.WithNamespace(ctx, ns), c, ns)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

func gatherNamespace(ctx context.Context, c *client.Client, ns string) ([]Facts, error) {
	ctrs, err := c.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers in namespace %+q: %w", ns, err)
	}
	resp, err := c.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list tasks in namespace %+q: %w", ns, err)
	}
	procs := map[string]*tasktypes.Process{}
	for _, p := range resp.Tasks {
		procs[p.GetID()] = p
	}
	out := make([]Facts, 0, len(ctrs))
	for _, ctr := range ctrs {
		f := Facts{Namespace: ns, ID: ctr.ID, Runtime: ctr.Runtime.Name, Status: StatusNoTask}
		var spec *specs.Spec
		if ctr.Spec != nil {
			var s specs.Spec
			// A spec that does not decode cannot name a creator; the
			// kernel's facts still decide everything else.
			if json.Unmarshal(ctr.Spec.GetValue(), &s) == nil {
				spec = &s
				f.SpecCreatesIPC = CreatesNamespace(spec, specs.IPCNamespace)
				f.SpecCreatesPID = CreatesNamespace(spec, specs.PIDNamespace)
			}
		}
		var ann map[string]string
		if spec != nil {
			ann = spec.Annotations
		}
		// Only CRI can say that this is a pod's (Attribute).
		f.Claim = PodOf(ann, ctr.Labels)
		if p, ok := procs[ctr.ID]; ok {
			f.Status = strings.ToLower(p.GetStatus().String())
			if isLive(p.GetStatus()) && p.GetPid() != 0 {
				f.Pid = p.GetPid()
				info, err := readProc("/proc", f.Pid)
				switch {
				case errors.Is(err, errGone):
					// It exited while being read: report what a moment
					// later containerd would say too.
					f.Pid, f.Status = 0, StatusNoTask
				case err != nil:
					return nil, fmt.Errorf("container %s/%s: %w", Quote(ns), Quote(ctr.ID), err)
				default:
					f.Live = true
					f.IPC, f.PID = info.ipc, info.pid
					f.InnerPid, f.StartTime = info.innerPid, info.startTime
					f.HasShm, f.ShmDev, f.ShmSize = info.hasShm, info.shmDev, info.shmSize
					f.ShmUsed, f.ShmBounded, f.ShmSymlink = info.shmUsed, info.shmBounded, info.shmSymlink
				}
			}
		}
		if !f.Live && spec != nil {
			// Without a live init, what starting the container would do
			// is what its spec asks for (CIS: `docker ps --all`).
			sf := ReadSpec(ctr.ID, ctr.Runtime.Name, spec, hostns.Stat)
			f.Spec = &sf
		}
		out = append(out, f)
	}
	return out, nil
}

// isLive tells whether a task in this state has an init process whose
// namespaces exist: a created task's init waits in runc before exec.
func isLive(s tasktypes.Status) bool {
	switch s {
	case tasktypes.Status_CREATED, tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
		return true
	}
	return false
}

// CreatesNamespace tells whether spec asks for a new namespace of type t
// (an entry without a path) and names no parent container: neither
// nsiso/parent nor, for a container of a Kubernetes pod, the pod sandbox,
// as specmod reads them. Such a container is the likely creator of a
// namespace others share; a child's spec may ask for a new namespace that
// nsiso then replaces with its parent's, so it never counts.
func CreatesNamespace(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
	if spec == nil || spec.Linux == nil || namesParent(spec.Annotations) {
		return false
	}
	for _, n := range spec.Linux.Namespaces {
		if n.Type == t {
			return n.Path == ""
		}
	}
	return false
}

// namesParent asks specmod who the parent is. Annotations nsiso would
// refuse name none: under nsiso such a container never starts, and under
// another runtime they mean nothing.
func namesParent(ann map[string]string) bool {
	r, err := specmod.ParseRequest("", ann)
	return err == nil && r.Nested()
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
