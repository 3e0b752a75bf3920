package audit

import (
	"testing"

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
