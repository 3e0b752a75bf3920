package audit

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
)

func TestPodOf(t *testing.T) {
	// What containerd's CRI plugin writes into a spec, and what the
	// kubelet puts in labels.
	criSandbox := map[string]string{
		specmod.AnnotationCRISandboxNamespace: "team-x", specmod.AnnotationCRISandboxName: "hostipc-pod",
		specmod.AnnotationCRIContainerType: "sandbox", specmod.AnnotationCRISandboxID: "0f57",
	}
	criContainer := map[string]string{
		specmod.AnnotationCRISandboxNamespace: "team-x", specmod.AnnotationCRISandboxName: "hostipc-pod",
		specmod.AnnotationCRIContainerType: "container", specmod.AnnotationCRIContainerName: "app", specmod.AnnotationCRISandboxID: "0f57",
	}
	kubeletSandbox := map[string]string{LabelPodNamespace: "team-x", LabelPodName: "hostipc-pod", LabelCRIKind: "sandbox"}
	kubeletContainer := map[string]string{LabelPodNamespace: "team-x", LabelPodName: "hostipc-pod", LabelContainerName: "app", LabelCRIKind: "container"}
	sandbox := Pod{Namespace: "team-x", Name: "hostipc-pod", Kind: KindSandbox}
	container := Pod{Namespace: "team-x", Name: "hostipc-pod", Container: "app", Kind: KindContainer}
	for _, tc := range []struct {
		name        string
		ann, labels map[string]string
		want        Pod
		str, ctr    string
	}{
		{"not in a pod", map[string]string{"nsiso/ipc-mode": "private"}, map[string]string{"app": "db"}, Pod{}, "", ""},
		{"sandbox from the spec", criSandbox, nil, sandbox, "team-x/hostipc-pod", "(sandbox)"},
		{"container from the spec", criContainer, nil, container, "team-x/hostipc-pod", "app"},
		{"sandbox from the labels", nil, kubeletSandbox, sandbox, "team-x/hostipc-pod", "(sandbox)"},
		{"container from the labels", nil, kubeletContainer, container, "team-x/hostipc-pod", "app"},
		{"the spec wins over labels", criContainer, map[string]string{LabelPodNamespace: "other", LabelPodName: "x", LabelContainerName: "y"},
			container, "team-x/hostipc-pod", "app"},
		{"a label fills what the spec lacks", map[string]string{specmod.AnnotationCRISandboxName: "p"}, map[string]string{LabelPodNamespace: "ns"},
			Pod{Namespace: "ns", Name: "p"}, "ns/p", ""},
		{"a container name alone is no pod", map[string]string{specmod.AnnotationCRIContainerName: "app"}, nil, Pod{}, "", ""},
		{"names that are not plain are quoted", map[string]string{specmod.AnnotationCRISandboxNamespace: "a/b", specmod.AnnotationCRISandboxName: "x\ny",
			specmod.AnnotationCRIContainerName: "\x1b[2J"}, nil,
			Pod{Namespace: "a/b", Name: "x\ny", Container: "\x1b[2J"}, `"a/b"/"x\ny"`, `"\x1b[2J"`},
		{"a sandbox has no container name", map[string]string{specmod.AnnotationCRISandboxNamespace: "a", specmod.AnnotationCRISandboxName: "b",
			specmod.AnnotationCRIContainerType: "sandbox", specmod.AnnotationCRIContainerName: "stray"}, nil,
			Pod{Namespace: "a", Name: "b", Kind: KindSandbox}, "a/b", "(sandbox)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PodOf(tc.ann, tc.labels)
			if got != tc.want {
				t.Errorf("PodOf = %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.str || got.ContainerText() != tc.ctr || got.IsZero() != (tc.want == Pod{}) {
				t.Errorf("String %q, ContainerText %q, IsZero %v; want %q, %q", got.String(), got.ContainerText(), got.IsZero(), tc.str, tc.ctr)
			}
		})
	}
}

func TestRecordPod(t *testing.T) {
	for _, tc := range []struct {
		r    Record
		want Pod
	}{
		{Record{}, Pod{}},
		{Record{PodNamespace: "n", PodName: "p", Sandbox: true}, Pod{Namespace: "n", Name: "p", Kind: KindSandbox}},
		{Record{PodNamespace: "n", PodName: "p", ContainerName: "c"}, Pod{Namespace: "n", Name: "p", Container: "c", Kind: KindContainer}},
	} {
		if got := tc.r.Pod(); got != tc.want {
			t.Errorf("%+v.Pod() = %+v, want %+v", tc.r, got, tc.want)
		}
	}
}

func TestInPodNamespace(t *testing.T) {
	recs := []Record{{ID: "a", PodNamespace: "team-x"}, {ID: "b"}, {ID: "c", PodNamespace: "team-y"}, {ID: "d", PodNamespace: "team-x"}}
	got := InPodNamespace(recs, "team-x")
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "d" {
		t.Errorf("InPodNamespace = %+v, want a and d", got)
	}
	if got := InPodNamespace(recs, "nope"); len(got) != 0 {
		t.Errorf("no match: %+v", got)
	}
}

func criSandbox(id, ns, name string) *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{Id: id, Metadata: &runtimeapi.PodSandboxMetadata{Namespace: ns, Name: name, Uid: name + "-uid"}}
}

func criContainer(id, sandbox, name string) *runtimeapi.Container {
	return &runtimeapi.Container{Id: id, PodSandboxId: sandbox, Metadata: &runtimeapi.ContainerMetadata{Name: name}}
}

// Only what CRI knows makes a container a pod's; labels and annotations
// are a claim, and a sandbox parent counts only for what CRI made.
func TestAttribute(t *testing.T) {
	cri := NewCRI(
		[]*runtimeapi.PodSandbox{criSandbox("sb", "team-b", "web"), criSandbox("sb2", "team-c", "tools")},
		[]*runtimeapi.Container{criContainer("app", "sb", "app"), criContainer("tool", "sb2", "tool"),
			// Its sandbox was removed between CRI's two answers.
			criContainer("orphan", "gone", "x")},
	)
	claimB := Pod{Namespace: "team-b", Name: "web", Container: "app", Kind: KindContainer}
	parent := func(id string, fromSandbox bool) *SpecFacts {
		return &SpecFacts{IPC: SpecNS{Kind: SpecPath, Path: "/proc/1/ns/ipc"}, Parent: id, ParentIsSandbox: fromSandbox}
	}
	for _, tc := range []struct {
		name       string
		cri        *CRI
		in         Facts
		pod, claim Pod
		spec       *SpecFacts
	}{
		{"a sandbox CRI made", cri, Facts{Namespace: "k8s.io", ID: "sb", Claim: Pod{Namespace: "x", Name: "y", Kind: KindSandbox}},
			Pod{Namespace: "team-b", Name: "web", Kind: KindSandbox}, Pod{}, nil},
		{"a container CRI made, relabelled as another team's", cri,
			Facts{Namespace: "k8s.io", ID: "tool", Runtime: "io.containerd.runc.v2", Claim: claimB, Spec: parent("sb", true)},
			Pod{Namespace: "team-c", Name: "tools", Container: "tool", Kind: KindContainer}, Pod{}, parent("sb2", true)},
		{"a container CRI made whose annotations name no sandbox", cri,
			Facts{Namespace: "k8s.io", ID: "app", Runtime: "io.containerd.runc.v2", Spec: parent("", false)},
			claimB, Pod{}, parent("sb", true)},
		{"nsiso reads the annotation itself", cri,
			Facts{Namespace: "k8s.io", ID: "app", Runtime: NSISORuntime, Spec: parent("other", true)},
			claimB, Pod{}, parent("other", true)},
		{"the same ID in another containerd namespace", cri,
			Facts{Namespace: "default", ID: "app", Runtime: "io.containerd.runc.v2", Claim: claimB, Spec: parent("sb", true)},
			Pod{}, claimB, parent("", false)},
		{"a client's container in k8s.io", cri, Facts{Namespace: "k8s.io", ID: "fake", Claim: claimB}, Pod{}, claimB, nil},
		{"a container without its sandbox", cri, Facts{Namespace: "k8s.io", ID: "orphan"}, Pod{}, Pod{}, nil},
		{"nsiso/parent is no sandbox", cri,
			Facts{Namespace: "default", ID: "kid", Runtime: "io.containerd.runc.v2", Spec: parent("p", false)},
			Pod{}, Pod{}, parent("p", false)},
		{"no CRI", nil, Facts{Namespace: "k8s.io", ID: "sb", Claim: claimB}, Pod{}, claimB, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := []Facts{tc.in}
			Attribute(fs, tc.cri)
			if fs[0].Pod != tc.pod || fs[0].Claim != tc.claim {
				t.Errorf("pod %+v, claim %+v; want %+v, %+v", fs[0].Pod, fs[0].Claim, tc.pod, tc.claim)
			}
			if tc.spec != nil && *fs[0].Spec != *tc.spec {
				t.Errorf("spec %+v, want %+v", *fs[0].Spec, *tc.spec)
			}
		})
	}
}

func TestClaimingPodNamespace(t *testing.T) {
	recs := []Record{
		{ID: "real", PodNamespace: "team-b"},
		{ID: "fake", ClaimedPodNamespace: "team-b"},
		{ID: "other", ClaimedPodNamespace: "team-c"},
	}
	if got := InPodNamespace(recs, "team-b"); len(got) != 1 || got[0].ID != "real" {
		t.Errorf("InPodNamespace = %+v, want only the real one", got)
	}
	if got := ClaimingPodNamespace(recs, "team-b"); len(got) != 1 || got[0].ID != "fake" {
		t.Errorf("ClaimingPodNamespace = %+v, want only the fake one", got)
	}
}
