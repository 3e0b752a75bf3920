// Package deploy holds the Kubernetes manifests that install nsiso on
// every node (nsiso.yaml, kustomization.yaml), those that remove it
// (uninstall/), and the installer image's builder (image/). This test
// decodes every manifest strictly into the Kubernetes API types and checks
// that the pieces agree: the RuntimeClass's handler is the one the
// installer registers, it selects on the label the installer sets, and
// the image is the one `make image` builds.
package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nsiso/nsiso/nodeinstall"
)

// objects are the decoded manifests of one file.
type objects struct {
	namespaces  []corev1.Namespace
	accounts    []corev1.ServiceAccount
	roles       []rbacv1.ClusterRole
	bindings    []rbacv1.ClusterRoleBinding
	policies    []admissionv1.ValidatingAdmissionPolicy
	policyBinds []admissionv1.ValidatingAdmissionPolicyBinding
	daemonSets  []appsv1.DaemonSet
	classes     []nodev1.RuntimeClass
}

func strict(t *testing.T, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatalf("%v in\n%s", err, doc)
	}
}

func decode(t *testing.T, path string) objects {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var o objects
	for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(data), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		if tm.Kind == "" {
			if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) != "" {
				t.Fatalf("%s: a document without kind:\n%s", path, doc)
			}
			continue
		}
		b := []byte(doc)
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			var x corev1.Namespace
			strict(t, b, &x)
			o.namespaces = append(o.namespaces, x)
		case "v1 ServiceAccount":
			var x corev1.ServiceAccount
			strict(t, b, &x)
			o.accounts = append(o.accounts, x)
		case "rbac.authorization.k8s.io/v1 ClusterRole":
			var x rbacv1.ClusterRole
			strict(t, b, &x)
			o.roles = append(o.roles, x)
		case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
			var x rbacv1.ClusterRoleBinding
			strict(t, b, &x)
			o.bindings = append(o.bindings, x)
		case "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy":
			var x admissionv1.ValidatingAdmissionPolicy
			strict(t, b, &x)
			o.policies = append(o.policies, x)
		case "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding":
			var x admissionv1.ValidatingAdmissionPolicyBinding
			strict(t, b, &x)
			o.policyBinds = append(o.policyBinds, x)
		case "apps/v1 DaemonSet":
			var x appsv1.DaemonSet
			strict(t, b, &x)
			o.daemonSets = append(o.daemonSets, x)
		case "node.k8s.io/v1 RuntimeClass":
			var x nodev1.RuntimeClass
			strict(t, b, &x)
			o.classes = append(o.classes, x)
		default:
			t.Fatalf("%s: unexpected %s %s", path, tm.APIVersion, tm.Kind)
		}
	}
	return o
}

// Installer is the DaemonSet's container that runs nsiso, its flags
// parsed by nsiso's own parser, and its host root volume.
type Installer struct {
	DaemonSet *appsv1.DaemonSet
	Container corev1.Container
	Options   nodeinstall.Options
}

// FindInstaller returns the init container of ds that runs `nsiso
// <command>`, with its flags parsed as nsiso parses them.
func FindInstaller(t *testing.T, ds *appsv1.DaemonSet, command string) Installer {
	t.Helper()
	for _, c := range ds.Spec.Template.Spec.InitContainers {
		if len(c.Command) == 2 && c.Command[0] == "/usr/local/bin/nsiso" && c.Command[1] == command {
			o, err := nodeinstall.ParseFlags(command == "uninstall", c.Args, os.Stderr)
			if err != nil {
				t.Fatalf("%s: %s %v: %v", ds.Name, command, c.Args, err)
			}
			return Installer{DaemonSet: ds, Container: c, Options: o}
		}
	}
	t.Fatalf("%s: no init container runs nsiso %s", ds.Name, command)
	return Installer{}
}

func makefileImage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^INSTALLER_IMAGE \?= (\S+)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("no INSTALLER_IMAGE in the Makefile")
	}
	return string(m[1])
}

// checkNodeAgent checks what both DaemonSets need to work on a node.
func checkNodeAgent(t *testing.T, in Installer, image string) {
	t.Helper()
	spec := in.DaemonSet.Spec.Template.Spec
	if !spec.HostPID {
		t.Errorf("%s: without hostPID the installer cannot see the host's shims", in.DaemonSet.Name)
	}
	if sc := in.Container.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("%s: the installer must be privileged to write the host's files and chroot into it", in.DaemonSet.Name)
	}
	var hostVolume string
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/" {
			hostVolume = v.Name
		}
	}
	mounted := false
	for _, m := range in.Container.VolumeMounts {
		if m.Name == hostVolume && hostVolume != "" && m.MountPath == in.Options.Root {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s: --root %s is not the host's / (volumes %v)", in.DaemonSet.Name, in.Options.Root, spec.Volumes)
	}
	if in.Options.KubeNode != "$(NODE_NAME)" {
		t.Errorf("%s: --kube-node %q, want $(NODE_NAME)", in.DaemonSet.Name, in.Options.KubeNode)
	}
	nodeName := false
	for _, e := range in.Container.Env {
		nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}
	if !nodeName {
		t.Errorf("%s: NODE_NAME is not the pod's node", in.DaemonSet.Name)
	}
	if !in.Options.Restart {
		t.Errorf("%s: without --restart containerd does not see the change", in.DaemonSet.Name)
	}
	if spec.ServiceAccountName != "nsiso-installer" {
		t.Errorf("%s: service account %q", in.DaemonSet.Name, spec.ServiceAccountName)
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if c.Image != image {
			t.Errorf("%s/%s: image %q, but make image builds %q", in.DaemonSet.Name, c.Name, c.Image, image)
		}
	}
}

func TestManifestsAgree(t *testing.T) {
	o := decode(t, "nsiso.yaml")
	u := decode(t, "uninstall/nsiso-uninstall.yaml")
	image := makefileImage(t)
	if len(o.daemonSets) != 1 || len(o.classes) != 1 || len(u.daemonSets) != 1 {
		t.Fatalf("want one installer, one RuntimeClass and one uninstaller: %d %d %d", len(o.daemonSets), len(o.classes), len(u.daemonSets))
	}
	in := FindInstaller(t, &o.daemonSets[0], "install")
	un := FindInstaller(t, &u.daemonSets[0], "uninstall")
	checkNodeAgent(t, in, image)
	checkNodeAgent(t, un, image)

	rc := o.classes[0]
	if !slices.Contains(in.Options.Handlers, rc.Handler) {
		t.Errorf("RuntimeClass handler %q; the installer registers %v", rc.Handler, in.Options.Handlers)
	}
	key, value, _ := strings.Cut(in.Options.NodeLabel, "=")
	if rc.Scheduling == nil || len(rc.Scheduling.NodeSelector) != 1 || rc.Scheduling.NodeSelector[key] != value {
		t.Errorf("RuntimeClass schedules on %v; the installer labels %s", rc.Scheduling, in.Options.NodeLabel)
	}
	if un.Options.NodeLabel != in.Options.NodeLabel {
		t.Errorf("the uninstaller removes %s, the installer sets %s", un.Options.NodeLabel, in.Options.NodeLabel)
	}

	// Least privilege: patch nodes and nothing else, narrowed by the
	// admission policy to the label and the pod's own node.
	if len(o.roles) != 1 || len(o.roles[0].Rules) != 1 {
		t.Fatalf("roles: %+v", o.roles)
	}
	r := o.roles[0].Rules[0]
	if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Resources, []string{"nodes"}) || !slices.Equal(r.Verbs, []string{"patch"}) {
		t.Errorf("the installer's role: %+v", r)
	}
	sa := in.DaemonSet.Namespace
	if len(o.accounts) != 1 || o.accounts[0].Namespace != sa || len(o.namespaces) != 1 || o.namespaces[0].Name != sa {
		t.Errorf("service account %+v, namespaces %+v", o.accounts, o.namespaces)
	}
	// Privileged pods with hostPID are refused by Pod Security Admission
	// in a namespace that does not allow them.
	if len(o.namespaces) == 1 && o.namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s does not allow privileged pods: %v", sa, o.namespaces[0].Labels)
	}
	if len(o.bindings) != 1 || o.bindings[0].RoleRef.Name != o.roles[0].Name || len(o.bindings[0].Subjects) != 1 ||
		o.bindings[0].Subjects[0].Name != "nsiso-installer" || o.bindings[0].Subjects[0].Namespace != sa {
		t.Errorf("binding: %+v", o.bindings)
	}
	if len(o.policies) != 1 || len(o.policyBinds) != 1 || o.policyBinds[0].Spec.PolicyName != o.policies[0].Name ||
		!slices.Contains(o.policyBinds[0].Spec.ValidationActions, admissionv1.Deny) {
		t.Fatalf("admission policy and binding: %+v %+v", o.policies, o.policyBinds)
	}
	p := o.policies[0].Spec
	user := "system:serviceaccount:" + sa + ":nsiso-installer"
	if len(p.MatchConditions) != 1 || !strings.Contains(p.MatchConditions[0].Expression, "'"+user+"'") {
		t.Errorf("the policy does not match the installer's user %s: %+v", user, p.MatchConditions)
	}
	var all bytes.Buffer
	for _, v := range p.Validations {
		all.WriteString(v.Expression)
	}
	if !strings.Contains(all.String(), "'"+key+"'") || !strings.Contains(all.String(), "'"+value+"'") ||
		!strings.Contains(all.String(), "'authentication.kubernetes.io/node-name'") {
		t.Errorf("the policy does not pin the label %s and the node name:\n%s", in.Options.NodeLabel, all.String())
	}
	if p.FailurePolicy == nil || *p.FailurePolicy != admissionv1.Fail {
		t.Error("the policy must fail closed")
	}
}

func TestKustomizations(t *testing.T) {
	for _, dir := range []string{".", "uninstall"} {
		var k struct {
			APIVersion string   `json:"apiVersion"`
			Kind       string   `json:"kind"`
			Resources  []string `json:"resources"`
		}
		data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		strict(t, data, &k)
		if k.Kind != "Kustomization" || len(k.Resources) == 0 {
			t.Errorf("%s: %+v", dir, k)
		}
		for _, r := range k.Resources {
			if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
				t.Errorf("%s: resource %s: %v", dir, r, err)
			}
		}
	}
}
