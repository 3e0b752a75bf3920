package admission

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/version"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/kubernetes/scheme"
)

// installerPolicy decodes deploy/nsiso.yaml strictly and returns its
// ValidatingAdmissionPolicy (the installer's own-node-label policy) and
// that policy's binding.
func installerPolicy(t *testing.T) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	data, err := os.ReadFile("../nsiso.yaml")
	if err != nil {
		t.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var policy *admissionregistrationv1.ValidatingAdmissionPolicy
	var binding *admissionregistrationv1.ValidatingAdmissionPolicyBinding
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("nsiso.yaml: document %d: %v", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("nsiso.yaml: document %d: %v", i, err)
		}
		switch o := obj.(type) {
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			policy = o
		case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
			binding = o
		}
	}
	if policy == nil || binding == nil || binding.Spec.PolicyName != policy.Name {
		t.Fatal("nsiso.yaml must hold the installer's ValidatingAdmissionPolicy and its binding")
	}
	return policy, binding
}

// The installer's policy, run by the API server's own plugin on node
// updates from the installer's service account: it may set one label on
// its own node, and every refusal is a 403 that says what is wrong, also
// for a token without extra fields (a legacy Secret token), which once got
// a bare CEL error ("no such key: extra") as a 422.
func TestInstallerPolicy(t *testing.T) {
	policy, binding := installerPolicy(t)
	s := newAPIServer(t, policy, binding)
	const installer = "system:serviceaccount:nsiso-system:nsiso-installer"
	onNode := func(nodes ...string) map[string][]string {
		return map[string][]string{
			"authentication.kubernetes.io/node-name":        nodes,
			"authentication.kubernetes.io/pod-name":         {"nsiso-installer-x"},
			"authentication.kubernetes.io/credential-id":    {"JTI=1"},
			"authentication.kubernetes.io/pod-uid":          {"0d6e4c1e-1e3a-4b0c-9a43-6f5c1b0e0a11"},
			"authentication.kubernetes.io/node-uid":         {"7b0f0a53-4d7e-4f8e-8f5b-2f7c2e1a9c22"},
			"authentication.kubernetes.io/service-account":  {"nsiso-installer"},
			"authentication.kubernetes.io/pod-namespace":    {"nsiso-system"},
			"authentication.kubernetes.io/token-expiration": {"3600"},
		}
	}
	node := func(name string, edit func(*corev1.Node)) *corev1.Node {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Labels:      map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
				Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
			},
			Spec: corev1.NodeSpec{PodCIDR: "10.0.0.0/24"},
		}
		if edit != nil {
			edit(n)
		}
		return n
	}
	labelled := func(n *corev1.Node) { n.Labels["nsiso.io/runtime"] = "installed" }
	for _, tc := range []struct {
		name     string
		who      user.Info
		old, new *corev1.Node
		// refused is "" when admitted, else the message after "denied
		// request: ".
		refused string
	}{
		{name: "label its own node", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-a")},
			old: node("node-a", nil), new: node("node-a", labelled)},
		{name: "unlabel its own node", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-a")},
			old: node("node-a", labelled), new: node("node-a", nil)},
		{name: "label its own node without a spec", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-a")},
			old: node("node-a", func(n *corev1.Node) { n.Spec = corev1.NodeSpec{} }),
			new: node("node-a", func(n *corev1.Node) { n.Spec = corev1.NodeSpec{}; labelled(n) })},
		{name: "a legacy Secret token: no extra", who: &user.DefaultInfo{Name: installer, Groups: []string{"system:serviceaccounts"}},
			old: node("node-a", nil), new: node("node-a", labelled),
			refused: "the nsiso installer's token does not name the node its pod runs on (no authentication.kubernetes.io/node-name in its user info): " +
				"it must use the service account token Kubernetes 1.30 or newer projects into its pod, not a long-lived Secret token"},
		{name: "a token without the node name", who: &user.DefaultInfo{Name: installer,
			Extra: map[string][]string{"authentication.kubernetes.io/pod-name": {"nsiso-installer-x"}}},
			old: node("node-a", nil), new: node("node-a", labelled), refused: "the nsiso installer's token does not name the node its pod runs on"},
		{name: "a token with an empty node name list", who: &user.DefaultInfo{Name: installer, Extra: onNode()},
			old: node("node-a", nil), new: node("node-a", labelled), refused: "the nsiso installer's token does not name the node its pod runs on"},
		{name: "label another node", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-b")},
			old: node("node-a", nil), new: node("node-a", labelled),
			refused: "the nsiso installer may change only the node its pod runs on, node-b, not node-a"},
		{name: "another value", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-a")},
			old: node("node-a", nil), new: node("node-a", func(n *corev1.Node) { n.Labels["nsiso.io/runtime"] = "yes" }),
			refused: `the nsiso installer may set nsiso.io/runtime only to "installed"`},
		{name: "another label", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-a")},
			old: node("node-a", nil), new: node("node-a", func(n *corev1.Node) { n.Labels["kubernetes.io/os"] = "windows" }),
			refused: "the nsiso installer may change only the node label nsiso.io/runtime"},
		{name: "cordon its own node", who: &user.DefaultInfo{Name: installer, Extra: onNode("node-a")},
			old: node("node-a", nil), new: node("node-a", func(n *corev1.Node) { n.Spec.Unschedulable = true }),
			refused: "the nsiso installer may change only the node label nsiso.io/runtime"},
		{name: "a legacy token cordoning another node: the token is named first", who: &user.DefaultInfo{Name: installer},
			old: node("node-b", nil), new: node("node-b", func(n *corev1.Node) { n.Spec.Unschedulable = true }),
			refused: "the nsiso installer's token does not name the node its pod runs on"},
		{name: "someone else, without extra", who: &user.DefaultInfo{Name: "system:node:node-b"},
			old: node("node-b", nil), new: node("node-b", func(n *corev1.Node) { n.Spec.Unschedulable = true })},
		{name: "a user without a name", who: &user.DefaultInfo{},
			old: node("node-b", nil), new: node("node-b", func(n *corev1.Node) { n.Spec.Unschedulable = true })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.admitAs(t, tc.who, admission.Update, tc.new, tc.old)
			if tc.refused == "" {
				if err != nil {
					t.Errorf("%s", describe(err))
				}
				return
			}
			want := "ValidatingAdmissionPolicy '" + policy.Name + "' with binding '" + binding.Name + "' denied request: " + tc.refused
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s\nwant: %s", describe(err), want)
			}
			var status apierrors.APIStatus
			if !errors.As(err, &status) || status.Status().Code != 403 || status.Status().Reason != metav1.StatusReasonForbidden {
				t.Errorf("%s: want HTTP 403 Forbidden, got %+v", describe(err), status)
			}
		})
	}
}

// The installer's policy, like the pods policy, only uses CEL that a
// Kubernetes 1.30 API server accepts in a new policy: nsiso.yaml says it
// needs 1.30.
func TestInstallerPolicyCompilesForKubernetes130(t *testing.T) {
	policy, _ := installerPolicy(t)
	var conditions, messages []plugincel.ExpressionAccessor
	for i := range policy.Spec.MatchConditions {
		conditions = append(conditions, (*matchconditions.MatchCondition)(&policy.Spec.MatchConditions[i]))
	}
	for _, v := range policy.Spec.Validations {
		conditions = append(conditions, &validating.ValidationCondition{Expression: v.Expression})
		if v.MessageExpression != "" {
			messages = append(messages, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
		}
	}
	if len(conditions) == 0 || len(messages) == 0 {
		t.Fatal("the installer's policy has no expressions?")
	}
	for _, err := range compileErrors(t, version.MajorMinor(1, 29), nil, conditions, messages) {
		t.Error(err)
	}
}
