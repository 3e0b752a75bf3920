package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsiso/nsiso/internal/podcases"
	"github.com/nsiso/nsiso/testenv"
)

// podTable is specmod/testdata/pod-cases.json, the table the policy
// engine and the admission policy are unit-tested on; here its rows run
// as real pods through the kubelet and through the live admission policy.
type podTable struct{ podcases.Table }

func loadPodCases(t *testing.T) podTable {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := podcases.Load(filepath.Join(root, "specmod", "testdata", "pod-cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	return podTable{pc}
}

// podFor is row i of the table as a pod on the nsiso RuntimeClass.
func (pc podTable) podFor(i int) podSpec {
	c := pc.Cases[i]
	return podSpec{
		name: fmt.Sprintf("case-%02d", i), namespace: c.PodNamespace(), runtimeClass: "nsiso",
		annotations: c.Annotations, containers: c.ContainerNames(), initContainers: c.InitContainers,
		hostIPC: c.HostIPC, hostPID: c.HostPID, shareProcessNS: c.ShareProcessNamespace,
		sysctls: c.Sysctls, labels: map[string]string{"e2e": "pod-cases"},
	}
}

// namespaces creates the Kubernetes namespaces the table's rows name.
func (pc podTable) namespaces(ctx context.Context, t *testing.T) []string {
	seen := map[string]bool{"default": true}
	all := []string{"default"}
	for _, c := range pc.Cases {
		if ns := c.PodNamespace(); !seen[ns] {
			seen[ns] = true
			all = append(all, ns)
			apply(ctx, t, fmt.Sprintf(`{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": %q}}`, ns))
		}
	}
	return all
}

// testPodCasesOnNode creates every row's pod at once (no admission policy
// yet) and checks what the node does: runs it, or refuses it naming the
// row's key (and value) in the kubelet's event or container status.
func testPodCasesOnNode(t *testing.T) {
	ctx := context.Background()
	pc := loadPodCases(t)
	nss := pc.namespaces(ctx, t)
	defer func() {
		for _, ns := range nss {
			deletePods(ctx, t, ns, "e2e=pod-cases")
		}
	}()
	var run []int
	for i, c := range pc.Cases {
		if c.InvalidInKubernetes {
			continue
		}
		apply(ctx, t, pc.podFor(i).manifest())
		run = append(run, i)
	}
	// The kubelet works on many pods at once; so does this.
	var wg sync.WaitGroup
	results := make([]string, len(pc.Cases))
	errs := make([]error, len(pc.Cases))
	sem := make(chan struct{}, 8)
	for _, i := range run {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p := pc.podFor(i)
			results[i], errs[i] = waitOutcome(ctx, p.namespace, p.name, 180*time.Second)
		}()
	}
	wg.Wait()
	for _, i := range run {
		c := pc.Cases[i]
		t.Run(c.Name, func(t *testing.T) {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			why := results[i]
			if c.Node == "" {
				if why != "" {
					t.Fatalf("the node refuses the pod: %s", why)
				}
				return
			}
			if why == "" {
				t.Fatalf("the pod runs; want the node to refuse it naming %s", c.Node)
			}
			named := " " + c.Node + "="
			if v, ok := c.Annotations[c.Node]; ok {
				named += strconv.Quote(v)
			} else if c.NodeValue != "" {
				named += strconv.Quote(c.NodeValue)
			}
			// Another container may have been refused first.
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(why, named) && time.Now().Before(deadline); {
				time.Sleep(time.Second)
				p := pc.podFor(i)
				why += "\n" + refusals(ctx, p.namespace, p.name)
			}
			if !strings.Contains(why, "nsiso: container") || !strings.Contains(why, named) {
				t.Fatalf("the node's refusal must name%s:\n%s", named, why)
			}
		})
	}
}

// testAdmission applies deploy/admission as docs/admission.md says, with
// the table's limits, and checks every row at `kubectl create`: admitted
// or refused naming the row's key and message, exactly as the admission
// module's unit test expects from the API server's own plugin.
func testAdmission(t *testing.T) {
	ctx := context.Background()
	pc := loadPodCases(t)
	pc.namespaces(ctx, t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	limits := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]string{"name": "nsiso-shm-limits", "namespace": "nsiso-system"},
		"data":     pc.Limits,
	}
	b, _ := json.Marshal(limits)
	apply(ctx, t, string(b))
	policy := filepath.Join(root, "deploy", "admission", "policy.yaml")
	if out, err := cluster.Kubectl(ctx, "apply", "-f", policy); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer func() {
		if out, err := cluster.Kubectl(ctx, "delete", "-f", policy, "--ignore-not-found"); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}()
	// The API server compiles a new policy and binding asynchronously:
	// wait until a row the policy refuses is refused.
	waitPolicyLive(ctx, t, pc)
	for i, c := range pc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			out, err := cluster.KubectlIn(ctx, pc.podFor(i).manifest(), "create", "--dry-run=server", "-f", "-")
			if c.InvalidInKubernetes {
				if err == nil || !strings.Contains(err.Error(), "Invalid value") {
					t.Fatalf("the API server accepts the annotation keys: %v %s", err, out)
				}
				return
			}
			if c.Admission == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("admitted; want a refusal naming %s", c.Admission)
			}
			named := "denied request: nsiso: " + c.Admission + "="
			if v, ok := c.Annotations[c.Admission]; ok {
				named += strconv.Quote(v)
			}
			if !strings.Contains(err.Error(), named) || !strings.Contains(err.Error(), c.Message) {
				t.Fatalf("the refusal must name %s and say %q:\n%v", named, c.Message, err)
			}
		})
	}
	t.Run("hostIPC refused at kubectl apply", func(t *testing.T) {
		p := podSpec{name: "host-ipc-admission", runtimeClass: "nsiso", hostIPC: true}
		_, err := cluster.KubectlIn(ctx, p.manifest(), "apply", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "spec.hostIPC") || !strings.Contains(err.Error(), "Forbidden") {
			t.Fatalf("want a Forbidden refusal naming spec.hostIPC, got %v", err)
		}
		t.Log(err)
	})
}

// waitPolicyLive waits until the API server enforces the policy.
func waitPolicyLive(ctx context.Context, t *testing.T, pc podTable) {
	t.Helper()
	p := podSpec{name: "probe", runtimeClass: "nsiso", hostIPC: true}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := cluster.KubectlIn(ctx, p.manifest(), "create", "--dry-run=server", "-f", "-")
		if err != nil && strings.Contains(err.Error(), "denied request: nsiso") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy is not enforced after 60s: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
