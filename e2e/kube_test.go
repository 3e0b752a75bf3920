package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// podSpec is the part of a pod the tests vary.
type podSpec struct {
	name, namespace string
	runtimeClass    string // "" for the cluster's default (runc)
	annotations     map[string]string
	containers      []string
	initContainers  []string
	hostIPC         bool
	hostPID         bool
	shareProcessNS  bool
	sysctls         map[string]string
	labels          map[string]string
}

// manifest returns the pod as JSON (which kubectl reads as YAML). Every
// container prints nothing and sleeps; the tests look inside with exec.
func (p podSpec) manifest() string {
	ctr := func(name string, sleep string) map[string]any {
		return map[string]any{
			"name": name, "image": appImage, "imagePullPolicy": "Never",
			"command": []string{"/bin/sh", "-c", sleep},
		}
	}
	containers := []any{}
	names := p.containers
	if len(names) == 0 {
		names = []string{"app"}
	}
	for _, n := range names {
		containers = append(containers, ctr(n, "exec sleep 3600"))
	}
	spec := map[string]any{
		"containers":                    containers,
		"terminationGracePeriodSeconds": 0,
		"hostIPC":                       p.hostIPC,
		"hostPID":                       p.hostPID,
		"shareProcessNamespace":         p.shareProcessNS,
		"automountServiceAccountToken":  false,
		"enableServiceLinks":            false,
	}
	if p.runtimeClass != "" {
		spec["runtimeClassName"] = p.runtimeClass
	}
	if len(p.initContainers) > 0 {
		var inits []any
		for _, n := range p.initContainers {
			inits = append(inits, ctr(n, "true"))
		}
		spec["initContainers"] = inits
	}
	if len(p.sysctls) > 0 {
		var s []any
		for k, v := range p.sysctls {
			s = append(s, map[string]string{"name": k, "value": v})
		}
		spec["securityContext"] = map[string]any{"sysctls": s}
	}
	ns := p.namespace
	if ns == "" {
		ns = "default"
	}
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": p.name, "namespace": ns, "annotations": p.annotations, "labels": p.labels},
		"spec":     spec,
	}
	b, _ := json.Marshal(pod)
	return string(b)
}

// containerStatus is what the tests read of a container's status.
type containerStatus struct {
	Name  string `json:"name"`
	State struct {
		Running *struct{} `json:"running"`
		Waiting *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"waiting"`
		Terminated *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"terminated"`
	} `json:"state"`
	LastState struct {
		Terminated *struct {
			Message string `json:"message"`
		} `json:"terminated"`
	} `json:"lastState"`
}

// podStatus is what the tests read of a pod.
type podStatus struct {
	Status struct {
		Phase                 string            `json:"phase"`
		Reason                string            `json:"reason"`
		Message               string            `json:"message"`
		InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
		ContainerStatuses     []containerStatus `json:"containerStatuses"`
	} `json:"status"`
}

// refusal is the node's refusal of a container as the kubelet reports
// it: CRI's CreateContainer only records the container, the shim sees it
// at StartContainer, so a refusal is a start error (the container then
// waits in CrashLoopBackOff with the message, or shows it as its last
// termination).
func (c containerStatus) refusal() string {
	for _, m := range []string{waitingMessage(c), terminatedMessage(c), lastMessage(c)} {
		if strings.Contains(m, "nsiso: ") {
			return m
		}
	}
	return ""
}

func waitingMessage(c containerStatus) string {
	if w := c.State.Waiting; w != nil {
		return w.Message
	}
	return ""
}

func terminatedMessage(c containerStatus) string {
	if t := c.State.Terminated; t != nil {
		return t.Message
	}
	return ""
}

func lastMessage(c containerStatus) string {
	if t := c.LastState.Terminated; t != nil {
		return t.Message
	}
	return ""
}

// waitOutcome waits until every container of the pod runs (returns "")
// or the node refuses it: a container's start error, or the pod's
// FailedCreatePodSandBox event. A pod the kubelet rejects (phase Failed)
// is an error.
func waitOutcome(ctx context.Context, ns, name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		out, err := cluster.Kubectl(ctx, "-n", ns, "get", "pod", name, "-o", "json")
		if err != nil {
			return "", err
		}
		var st podStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return "", err
		}
		if st.Status.Phase == "Failed" {
			return "", fmt.Errorf("pod %s/%s failed: %s: %s", ns, name, st.Status.Reason, st.Status.Message)
		}
		all := append(append([]containerStatus{}, st.Status.InitContainerStatuses...), st.Status.ContainerStatuses...)
		for _, c := range all {
			if why := c.refusal(); why != "" {
				return why, nil
			}
		}
		running := len(st.Status.ContainerStatuses) > 0
		for _, c := range st.Status.ContainerStatuses {
			running = running && c.State.Running != nil
		}
		if st.Status.Phase == "Running" && running {
			return "", nil
		}
		ev, err := cluster.Kubectl(ctx, "-n", ns, "get", "events", "--field-selector",
			"involvedObject.name="+name+",reason=FailedCreatePodSandBox", "-o", "jsonpath={.items[*].message}")
		if err == nil && ev != "" {
			return ev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("pod %s/%s neither runs nor fails after %s: %s", ns, name, timeout, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// refusals is every container's refusal, one per line: the kubelet goes
// on to start a pod's other containers after one is refused.
func refusals(ctx context.Context, ns, name string) string {
	out, err := cluster.Kubectl(ctx, "-n", ns, "get", "pod", name, "-o", "json")
	if err != nil {
		return ""
	}
	var st podStatus
	if json.Unmarshal([]byte(out), &st) != nil {
		return ""
	}
	var all []string
	for _, c := range append(st.Status.InitContainerStatuses, st.Status.ContainerStatuses...) {
		if why := c.refusal(); why != "" {
			all = append(all, why)
		}
	}
	return strings.Join(all, "\n")
}

// execIn runs sh -c script in a container of a running pod.
func execIn(ctx context.Context, t *testing.T, ns, pod, container, script string) string {
	t.Helper()
	out, err := cluster.Kubectl(ctx, "-n", ns, "exec", pod, "-c", container, "--", "/bin/sh", "-c", script)
	if err != nil {
		t.Fatalf("exec in %s/%s %s: %v", ns, pod, container, err)
	}
	return out
}

// shmBytes is the size of /dev/shm as statfs reports it inside.
func shmBytes(ctx context.Context, t *testing.T, ns, pod, container string) int64 {
	t.Helper()
	out := execIn(ctx, t, ns, pod, container, "stat -f -c '%b %S' /dev/shm")
	var blocks, size int64
	if _, err := fmt.Sscan(out, &blocks, &size); err != nil {
		t.Fatalf("stat -f /dev/shm in %s: %q: %v", pod, out, err)
	}
	return blocks * size
}

// deletePods deletes the pods matching selector in ns and waits until
// they are gone.
func deletePods(ctx context.Context, t *testing.T, ns, selector string) {
	t.Helper()
	if _, err := cluster.Kubectl(ctx, "-n", ns, "delete", "pods", "-l", selector, "--wait=true", "--timeout=120s"); err != nil {
		t.Errorf("delete pods: %v", err)
	}
}

func apply(ctx context.Context, t *testing.T, manifest string) {
	t.Helper()
	if out, err := cluster.KubectlIn(ctx, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
