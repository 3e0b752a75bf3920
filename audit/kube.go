package audit

import (
	"context"
	"fmt"

	clabels "github.com/containerd/containerd/v2/pkg/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
)

// Labels the kubelet puts on every pod sandbox and container it asks CRI
// for (k8s.io/kubelet/pkg/types); containerd's CRI plugin copies them onto
// the containerd container record.
const (
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodName       = "io.kubernetes.pod.name"
	LabelContainerName = "io.kubernetes.container.name"
)

// LabelCRIKind is the label containerd's CRI plugin itself puts on every
// container it makes: "sandbox" for a pod's pause container, "container"
// for the others. Images cannot set it (the prefix is reserved); any
// containerd client can.
const LabelCRIKind = clabels.CRIContainerdPrefix + ".kind"

// Values of Pod.Kind.
const (
	KindSandbox   = "sandbox"
	KindContainer = "container"
)

// CRINamespace is the containerd namespace in which containerd's CRI plugin
// makes every pod sandbox and container, and the only one it uses.
const CRINamespace = "k8s.io"

// Pod names the Kubernetes pod a container belongs to; the zero value is a
// container that is not in one.
type Pod struct {
	// Namespace and Name are the pod's, as in team-x/web-0.
	Namespace, Name string
	// Container is the container's name in the pod; empty for a sandbox.
	Container string
	// Kind is KindSandbox, KindContainer, or empty when unknown.
	Kind string
}

// IsZero tells whether the container is in no pod.
func (p Pod) IsZero() bool { return p == Pod{} }

// String is "team-x/web-0", or "" outside a pod; a name that is not plain
// is quoted (see Quote), and so is one with a '/'.
func (p Pod) String() string {
	if p.Namespace == "" && p.Name == "" {
		return ""
	}
	return quoteName(p.Namespace) + "/" + quoteName(p.Name)
}

// ContainerText is the container's name for a person: its name in the pod
// (quoted when it is not plain), "(sandbox)" for the pause container.
func (p Pod) ContainerText() string {
	if p.Kind == KindSandbox {
		return "(sandbox)"
	}
	return quoteName(p.Container)
}

// PodOf reads the pod a container claims to be part of from its OCI spec's
// annotations and its labels. containerd's CRI plugin writes the pod's
// namespace and name and the container's name and kind into every spec it
// makes, and the kubelet puts the same names in labels; the labels fill
// in what the spec lacks. Any containerd client can write both, in any
// containerd namespace, and change them on an existing container, so
// they are a claim: only what CRI itself knows (Attribute) is a pod's
// identity.
func PodOf(annotations, labels map[string]string) Pod {
	pick := func(ann, label string) string {
		if v := annotations[ann]; v != "" {
			return v
		}
		return labels[label]
	}
	p := Pod{
		Namespace: pick(specmod.AnnotationCRISandboxNamespace, LabelPodNamespace),
		Name:      pick(specmod.AnnotationCRISandboxName, LabelPodName),
		Container: pick(specmod.AnnotationCRIContainerName, LabelContainerName),
		Kind:      pick(specmod.AnnotationCRIContainerType, LabelCRIKind),
	}
	if p.Kind == KindSandbox {
		p.Container = ""
	}
	if p.Namespace == "" && p.Name == "" {
		// A container name or kind alone names no pod to report.
		return Pod{}
	}
	return p
}

// CRI is what containerd's CRI plugin knows of the pods it made, from its
// own store rather than from the containerd records, which any client of
// CRINamespace can rewrite.
type CRI struct {
	// byID holds every sandbox and container CRI made, by containerd ID
	// in CRINamespace.
	byID map[string]criMade
}

type criMade struct {
	pod Pod
	// sandbox is a container's pod sandbox ID; empty for a sandbox.
	sandbox string
}

// AskCRI asks containerd's CRI plugin, over the connection to containerd
// (it serves the Kubernetes runtime API on the same socket), for every pod
// sandbox and container it made. A daemon without the plugin answers
// Unimplemented: AskCRI returns nil then, and no container is a pod's.
func AskCRI(ctx context.Context, conn grpc.ClientConnInterface) (*CRI, error) {
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ask containerd's CRI plugin for its pods: %w", err)
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, fmt.Errorf("ask containerd's CRI plugin for its containers: %w", err)
	}
	return NewCRI(sbs.GetItems(), ctrs.GetContainers()), nil
}

// NewCRI indexes CRI's answer: each sandbox is its pod's, each container
// is its sandbox's pod's under its own name. A container whose sandbox CRI
// does not list (removed between the two questions) is left out.
func NewCRI(sandboxes []*runtimeapi.PodSandbox, containers []*runtimeapi.Container) *CRI {
	c := &CRI{byID: map[string]criMade{}}
	for _, sb := range sandboxes {
		md := sb.GetMetadata()
		c.byID[sb.GetId()] = criMade{pod: Pod{Namespace: md.GetNamespace(), Name: md.GetName(), Kind: KindSandbox}}
	}
	for _, ctr := range containers {
		sb, ok := c.byID[ctr.GetPodSandboxId()]
		if !ok || sb.pod.Kind != KindSandbox {
			continue
		}
		p := sb.pod
		p.Container, p.Kind = ctr.GetMetadata().GetName(), KindContainer
		c.byID[ctr.GetId()] = criMade{pod: p, sandbox: ctr.GetPodSandboxId()}
	}
	return c
}

// Attribute gives each container the pod CRI made it for (Facts.Pod) and
// keeps what the others' labels and annotations say as a claim
// (Facts.Claim). cri is nil when the daemon serves no CRI; then every
// container's pod is a claim.
//
// The sandbox a pod's container names decides how it reads without a live
// task (a stale /proc path in its spec reads as its sandbox's). Under
// runtimes other than nsiso that rule is CRI's behaviour, so it holds only
// for containers CRI made, with the sandbox CRI knows; a container that
// merely names a sandbox reads as its spec's paths do now. Under nsiso
// the shim itself reads the annotation, and the audit reads it as the shim
// would (ReadSpec).
func Attribute(facts []Facts, cri *CRI) {
	for i := range facts {
		f := &facts[i]
		var made criMade
		ok := false
		if cri != nil && f.Namespace == CRINamespace {
			made, ok = cri.byID[f.ID]
		}
		if ok {
			f.Pod, f.Claim = made.pod, Pod{}
		} else {
			f.Pod = Pod{}
		}
		if f.Spec == nil || f.Runtime == NSISORuntime {
			continue
		}
		switch {
		case ok && made.sandbox != "":
			f.Spec.Parent, f.Spec.ParentIsSandbox = made.sandbox, true
		case f.Spec.ParentIsSandbox:
			f.Spec.Parent, f.Spec.ParentIsSandbox = "", false
		}
	}
}

// InPodNamespace keeps the records of containers that CRI made for pods in
// the Kubernetes namespace ns. It filters the report, not the analysis:
// owners of shared namespaces are chosen among all containers.
func InPodNamespace(recs []Record, ns string) []Record {
	var out []Record
	for _, r := range recs {
		if r.PodNamespace == ns {
			out = append(out, r)
		}
	}
	return out
}

// ClaimingPodNamespace keeps the records of containers that claim a pod in
// the Kubernetes namespace ns without CRI having made them.
func ClaimingPodNamespace(recs []Record, ns string) []Record {
	var out []Record
	for _, r := range recs {
		if r.ClaimedPodNamespace == ns && r.PodNamespace == "" {
			out = append(out, r)
		}
	}
	return out
}
