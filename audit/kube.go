package audit

import (
	clabels "github.com/containerd/containerd/v2/pkg/labels"

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
// for the others. Images cannot set it (the prefix is reserved).
const LabelCRIKind = clabels.CRIContainerdPrefix + ".kind"

// Values of Pod.Kind.
const (
	KindSandbox   = "sandbox"
	KindContainer = "container"
)

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

// String is "team-x/web-0", or "" outside a pod.
func (p Pod) String() string {
	if p.Namespace == "" && p.Name == "" {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

// ContainerText is the container's name for a person: its name in the pod,
// "(sandbox)" for the pause container.
func (p Pod) ContainerText() string {
	if p.Kind == KindSandbox {
		return "(sandbox)"
	}
	return p.Container
}

// PodOf reads the pod of a container from its OCI spec's annotations and
// its labels. containerd's CRI plugin writes the pod's namespace and name
// and the container's name and kind into every spec it makes, from the CRI
// request's metadata, whoever the CRI client is; the kubelet's labels
// carry the same names and are the fallback for a spec that could not be
// read. Neither is proof of anything: both are set by whoever creates the
// container, so the names only label the report and never change a
// verdict.
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

// InPodNamespace keeps the records of containers of pods in the Kubernetes
// namespace ns. It filters the report, not the analysis: owners of shared
// namespaces are chosen among all containers.
func InPodNamespace(recs []Record, ns string) []Record {
	var out []Record
	for _, r := range recs {
		if r.PodNamespace == ns {
			out = append(out, r)
		}
	}
	return out
}
