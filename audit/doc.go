// Package audit checks every container of a containerd node against the
// CIS Docker Benchmark rules "the host's IPC namespace is not shared" (5.16)
// and "the host's process namespace is not shared" (5.15), whatever runtime
// started the container (io.containerd.runc.v2, io.containerd.nsiso.v1 or
// any other runc-like runtime).
//
// It is the containerd counterpart of the benchmark's
//
//	docker ps --quiet --all | xargs docker inspect --format '{{ .Id }}: IpcMode={{ .HostConfig.IpcMode }}'
//
// and backs the command `nsiso audit`.
//
// # Where the facts come from
//
// containerd supplies the list of containers, their runtime, labels and
// OCI spec, and the init pid and status of their tasks. For a container
// with a live task everything the verdict rests on is then read from the
// kernel, not from the spec, because a spec says what a client asked for
// while a runtime shim (nsiso among them) may have rewritten it, and a path
// in a spec says nothing about whose namespace it was by the time the
// container started:
//
//   - /proc/<pid>/ns/ipc and /proc/<pid>/ns/pid of the task's init, as
//     device and inode numbers, compared with the host's (pid 1's where
//     readable, else the auditing process's own; see package hostns) and
//     with every other container's;
//   - /dev/shm, opened beneath /proc/<pid>/root without following
//     symlinks (a container can make its /dev/shm a symlink, whose
//     absolute target would resolve against the auditor's root): its size
//     and bytes in use (fstatfs) and its device number, which tells the
//     host's /dev/shm and a tmpfs that another container has apart from
//     one of its own; a symlink reads as "unknown", with a note;
//   - NSpid in /proc/<pid>/status and the start time in /proc/<pid>/stat,
//     which choose the owner of a namespace several containers share.
//
// For a running container the spec is consulted only to choose that owner
// (see Analyze).
//
// A container without a live task (stopped, or created and never started)
// has no namespaces to look at, yet starting it would share whatever its
// spec asks for; the benchmark's `docker ps --all` checks it too. Its
// record is then what the spec asks for (ReadSpec): no ipc or pid entry is
// the host's namespace, an entry with a path is whatever that path names
// now (the host's, a live container's, or nothing), and /dev/shm is the
// host's when the spec binds /dev/shm or any path on the host's /dev/shm
// file system, or runs on the host's root with nothing mounted there. Under
// nsiso the spec is first rewritten by specmod as the shim would rewrite it,
// so nsiso/ipc-mode=share-parent on a top-level container is the host's.
// A pod's container whose sandbox is not running reads as its sandbox's:
// the /proc/<pid> path in its spec may name another process by now.
//
// # Kubernetes
//
// A container's pod is what containerd's CRI plugin knows: the audit asks
// it (the Kubernetes runtime API, served on containerd's own socket) for
// the sandboxes and containers it made in containerd namespace k8s.io, and
// their pods (AskCRI, Attribute). containerd's records also carry the
// pod's names, in the labels the kubelet sets (io.kubernetes.pod.namespace,
// io.kubernetes.pod.name, io.kubernetes.container.name) and the annotations
// CRI writes into each spec, but any containerd client can write those on
// any container and rewrite them on an existing one; for a container CRI
// did not make they are reported as a claim (ClaimedPod), which
// --pod-namespace never counts as that namespace's (see PodOf).
//
// # Untrusted text
//
// Names, labels, annotations and runtime names are a client's choice, any
// bytes. The text report and stderr print a value that is not plain (ASCII
// letters, digits, '.', '_', '-', ':', '/') Go-quoted in ASCII (Quote), so
// that a record is one line and no control character reaches a terminal;
// JSON carries the exact strings with every non-printable character as a
// \u escape; metric labels show non-printable characters as Go escapes.
//
// The auditing process must run in the host's PID namespace, as root:
// containerd reports init pids as the host numbers them, and reading
// another process's /proc/<pid>/ns and /proc/<pid>/root needs the right to
// ptrace it. It must also run in the host's mount namespace, where
// /dev/shm is the host's: on the node itself (cron, a systemd timer), or
// from a privileged hostPID pod through nsenter --target 1 --mount.
//
// What is inspected is the process containerd names as the task's init.
// For runc-based runtimes that is the container's first process; for a
// runtime that runs containers in a VM or a user-space kernel it is that
// runtime's process on the host, and the report describes it instead.
//
// # Output
//
// One Record per container, sorted by containerd namespace, then ID. As
// text (WriteText) each is a line in the benchmark's style:
//
//	default/web: IpcMode=private PidMode=private ShmSize=64Mi Runtime=io.containerd.nsiso.v1
//	k8s.io/0f57…: IpcMode=host PidMode=private ShmSize=host Runtime=io.containerd.runc.v2 Pod=team-x/hostipc-pod Container=(sandbox) (from spec)
//	default/fake: IpcMode=host PidMode=private ShmSize=host Runtime=io.containerd.runc.v2 ClaimedPod=team-x/"web\n" ClaimedContainer=app
//
// IpcMode and PidMode are "host", "private" (a namespace of its own, or the
// owner of one that others share), "container:<id>" (the owner of the
// shared namespace; "container:<namespace>/<id>" when the owner is in
// another containerd namespace) or "unknown" (a container without a live
// task whose spec cannot be read or names a path that does not exist).
// ShmSize is the size of the container's /dev/shm in binary units, "host"
// when it is the host's /dev/shm, "none" when the container has no
// /dev/shm, and "-" for the size a spec does not tell. Pod and Container
// name the Kubernetes pod CRI made the container for, ClaimedPod and
// ClaimedContainer the pod another container's labels claim; "(from
// spec)" marks a container without a live task.
//
// As JSON (WriteJSON) the output is an array of Record objects. Their field
// names are stable:
//
//	namespace     containerd namespace
//	id            container ID
//	ipcMode       as IpcMode above
//	pidMode       as PidMode above
//	shmSize       bytes of /dev/shm; 0 when unknown (host's, none, spec)
//	shmSource     "own", "host", "container:<id>" (a tmpfs another
//	              container owns), "none", or "unknown"
//	runtime       the container's runtime, e.g. io.containerd.runc.v2
//	pid           the task's init pid on the host; 0 without a live task
//	ipcNamespace  inode number of the IPC namespace; 0 without a live task
//	pidNamespace  inode number of the PID namespace; 0 without a live task
//	status        containerd's task status (running, created, paused,
//	              pausing, stopped, unknown); stopped without a task
//	source        "kernel" (a live task) or "spec" (what its spec asks for)
//	podNamespace  the Kubernetes pod's namespace, as CRI knows it; ""
//	              outside a pod
//	podName       the pod's name
//	containerName the container's name in the pod; "" for the sandbox
//	sandbox       true for the pod's sandbox (pause) container
//	claimedPodNamespace, claimedPodName, claimedContainerName,
//	claimedSandbox
//	              the same, as the labels and annotations of a container
//	              CRI did not make claim them; a claim is never a pod
//
// As Prometheus metrics (WritePrometheus, through expfmt), for
// node_exporter's textfile collector, the counts by mode, runtime and
// source, one series per host sharer, the shared memory of each IPC
// namespace, and whether the audit succeeded; WriteFileAtomic replaces a
// file so that the collector never reads half of one.
//
// # Shared memory
//
// With --shm (text, JSON) and always in the metrics, the audit reports each
// IPC namespace of a live container once (ShmUsage): the containers in it,
// its owner and pod, the bytes on its /dev/shm, and its System V segments
// and limits (kernel.shmmax, shmall, shmmni), which the kernel tells only
// from inside the namespace; ReadSysV asks it from one discarded OS thread
// that joins the namespace. A container or namespace that goes away while
// it is read is left out with a note on stderr, never an error.
//
// # Verdict
//
// Findings lists the offending containers: those in the host's IPC
// namespace or whose /dev/shm is the host's (both are CIS 5.16: POSIX
// shared memory in /dev/shm is host IPC as much as System V segments are),
// and, when asked, those in the host's PID namespace (CIS 5.15). A
// container without a live task offends by what its spec asks for, as a
// running one does. ExitStatus turns them into the command's exit
// status: ExitCompliant (0), ExitNonCompliant (1); ExitError (2) is for an
// audit that could not be completed.
package audit
