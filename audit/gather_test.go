package audit

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/specmod"
)

func TestCreatesNamespace(t *testing.T) {
	withNS := func(ann map[string]string, ns ...specs.LinuxNamespace) *specs.Spec {
		return &specs.Spec{Annotations: ann, Linux: &specs.Linux{Namespaces: ns}}
	}
	newIPC := specs.LinuxNamespace{Type: specs.IPCNamespace}
	joinIPC := specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		want bool
	}{
		{"new namespace, top-level", withNS(nil, newIPC), true},
		{"joins a path", withNS(nil, joinIPC), false},
		{"no entry is the host's", withNS(nil), false},
		{"nil spec", nil, false},
		{"no linux section", &specs.Spec{}, false},
		{"names an nsiso parent", withNS(map[string]string{specmod.AnnotationParent: "p"}, newIPC), false},
		{"a pod's container names its sandbox", withNS(map[string]string{
			specmod.AnnotationCRIContainerType: "container", specmod.AnnotationCRISandboxID: "sb"}, newIPC), false},
		{"a pod sandbox creates", withNS(map[string]string{
			specmod.AnnotationCRIContainerType: "sandbox", specmod.AnnotationCRISandboxID: "sb"}, newIPC), true},
		{"other types do not count", withNS(nil, specs.LinuxNamespace{Type: specs.PIDNamespace}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CreatesNamespace(tc.spec, specs.IPCNamespace); got != tc.want {
				t.Errorf("CreatesNamespace = %v, want %v", got, tc.want)
			}
		})
	}
}
