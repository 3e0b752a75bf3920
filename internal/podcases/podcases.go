// Package podcases reads specmod/testdata/pod-cases.json: Kubernetes pods
// on the nsiso RuntimeClass and what each layer (the node's policy engine,
// the admission policy) does with them. specmod's tests run the rows
// through the policy engine on the specs CRI makes, e2e through a real
// kubelet and API server. deploy/admission, a module of its own that must
// not depend on this one, decodes the file with its own copy of the types.
package podcases

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Table is the whole file.
type Table struct {
	Comment []string `json:"comment"`
	// NodeMaxShmSize is the node's max_container_shm_size the rows'
	// node outcomes assume (with the default node rules and no default
	// size).
	NodeMaxShmSize string `json:"nodeMaxShmSize"`
	// Limits is the admission policy's params ConfigMap data.
	Limits map[string]string `json:"limits"`
	Cases  []Case            `json:"cases"`
}

// Case is one pod and the outcome at each layer.
type Case struct {
	Name string `json:"name"`
	// Namespace is the pod's Kubernetes namespace; "" is "default".
	Namespace             string            `json:"namespace"`
	Annotations           map[string]string `json:"annotations"`
	HostIPC               bool              `json:"hostIPC"`
	HostPID               bool              `json:"hostPID"`
	ShareProcessNamespace bool              `json:"shareProcessNamespace"`
	InitContainers        []string          `json:"initContainers"`
	// Containers are the pod's containers; none is ["app"].
	Containers []string `json:"containers"`
	// Sysctls is the pod's securityContext.sysctls, which CRI puts in the
	// sandbox's spec.
	Sysctls map[string]string `json:"sysctls"`
	// Admission and Node are the keys each layer names when it refuses
	// the pod; "" when it admits it.
	Admission string `json:"admission"`
	Node      string `json:"node"`
	// NodeValue, when set, is the value the node's refusal names (to tell
	// linux.namespaces "no ipc entry" from "no pid entry").
	NodeValue string `json:"nodeValue"`
	// Message is a part of the admission policy's message.
	Message string `json:"message"`
	// Why says why the layers differ, exactly where they do.
	Why string `json:"why"`
	// InvalidInKubernetes marks annotation keys the API server itself
	// refuses, before any admission.
	InvalidInKubernetes bool `json:"invalidInKubernetes"`
}

// Load reads the table at path strictly: an unknown field is an error, so
// a row cannot say something no reader checks.
func Load(path string) (Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Table{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t Table
	if err := dec.Decode(&t); err != nil {
		return Table{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(t.Cases) == 0 {
		return Table{}, errors.New(path + ": no cases")
	}
	return t, nil
}

// PodNamespace is the pod's Kubernetes namespace.
func (c Case) PodNamespace() string {
	if c.Namespace == "" {
		return "default"
	}
	return c.Namespace
}

// ContainerNames are the pod's containers, "app" when it names none.
func (c Case) ContainerNames() []string {
	if len(c.Containers) == 0 {
		return []string{"app"}
	}
	return c.Containers
}
