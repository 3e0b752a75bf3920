// Package examples holds the configuration an operator copies: containerd's
// runtime handlers, nsiso.toml and a Kubernetes RuntimeClass. The
// integration suite runs the first two as they are; this test keeps the
// third consistent with them.
package examples

import (
	"bytes"
	"os"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"

	"github.com/nsiso/nsiso/shim"
	"github.com/nsiso/nsiso/specmod"
)

func TestNsisoTomlParses(t *testing.T) {
	data, err := os.ReadFile("nsiso.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := shim.ParseConfig("nsiso.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policy(); !p.DisallowHostIPC || !p.DisallowHostPID {
		t.Errorf("the example must show the CIS defaults: %+v", p)
	}
}

// The RuntimeClass names a handler the containerd snippet defines, and the
// pod's annotations are valid for the sandbox and for every container.
func TestRuntimeClassMatchesConfig(t *testing.T) {
	var cfg struct {
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]struct {
					RuntimeType    string         `toml:"runtime_type"`
					PodAnnotations []string       `toml:"pod_annotations"`
					Options        map[string]any `toml:"options"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	data, err := os.ReadFile("containerd/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	runtimes := cfg.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes
	for name, rt := range runtimes {
		if rt.RuntimeType != shim.RuntimeName {
			t.Errorf("handler %s: runtime_type %q", name, rt.RuntimeType)
		}
		if len(rt.PodAnnotations) == 0 || rt.PodAnnotations[0] != "nsiso/*" {
			t.Errorf("handler %s must pass nsiso/* pod annotations", name)
		}
		if _, ok := rt.Options["ConfigPath"]; !ok {
			// Inline options are the policy itself.
			body, _ := toml.Marshal(rt.Options)
			if _, err := shim.ParseConfig(name, body); err != nil {
				t.Errorf("handler %s inline options: %v", name, err)
			}
		}
	}

	manifests, err := os.ReadFile("kubernetes/runtimeclass.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var handler string
	for _, doc := range bytes.Split(manifests, []byte("\n---\n")) {
		var obj struct {
			Kind     string `json:"kind"`
			Handler  string `json:"handler"`
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				RuntimeClassName string `json:"runtimeClassName"`
				Containers       []struct {
					Name string `json:"name"`
				} `json:"containers"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		switch obj.Kind {
		case "RuntimeClass":
			handler = obj.Handler
			if _, ok := runtimes[handler]; !ok {
				t.Errorf("RuntimeClass handler %q is not a runtime in containerd/config.toml", handler)
			}
		case "Pod":
			// What CRI hands the shim: the pod's annotations on the sandbox
			// and on each container, with CRI's own.
			sandbox := map[string]string{specmod.AnnotationCRIContainerType: "sandbox"}
			for k, v := range obj.Metadata.Annotations {
				sandbox[k] = v
			}
			if r, err := specmod.ParseRequest("sandbox", sandbox); err != nil || r.ShmSize == 0 {
				t.Errorf("pod annotations on the sandbox: %+v, %v", r, err)
			}
			for _, c := range obj.Spec.Containers {
				spec := map[string]string{specmod.AnnotationCRIContainerType: "container", specmod.AnnotationCRISandboxID: "sandbox", specmod.AnnotationCRIContainerName: c.Name}
				for k, v := range obj.Metadata.Annotations {
					spec[k] = v
				}
				if _, err := specmod.ParseRequest(c.Name, spec); err != nil {
					t.Errorf("pod annotations on container %s: %v", c.Name, err)
				}
			}
		}
	}
	if handler == "" {
		t.Error("no RuntimeClass in kubernetes/runtimeclass.yaml")
	}
}
