package deploy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// asCEL turns an API object into what CEL sees of it: its JSON fields.
func asCEL(t *testing.T, obj any) map[string]any {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// admit evaluates the policy as the API server does for one node update:
// the match conditions decide whether it applies, then every validation
// must hold. It returns the message of the first that does not ("" when
// admitted).
func admit(t *testing.T, p admissionv1.ValidatingAdmissionPolicySpec, user string, extra map[string][]string, old, updated *corev1.Node) string {
	t.Helper()
	env, err := cel.NewEnv(
		cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType),
		cel.Variable("request", cel.DynType),
	)
	if err != nil {
		t.Fatal(err)
	}
	// The API server leaves extra out of userInfo when the token has none
	// (omitempty), as it does for a legacy Secret token.
	userInfo := map[string]any{"username": user}
	if extra != nil {
		extraAny := map[string]any{}
		for k, v := range extra {
			extraAny[k] = v
		}
		userInfo["extra"] = extraAny
	}
	vars := map[string]any{
		"object":    asCEL(t, updated),
		"oldObject": asCEL(t, old),
		"request":   map[string]any{"userInfo": userInfo},
	}
	eval := func(expr string) bool {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("compile %q: %v", expr, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := prg.Eval(vars)
		if err != nil {
			t.Fatalf("eval %q: %v", expr, err)
		}
		b, ok := out.Value().(bool)
		if !ok {
			t.Fatalf("%q is not a bool: %v", expr, out)
		}
		return b
	}
	for _, m := range p.MatchConditions {
		if !eval(m.Expression) {
			return ""
		}
	}
	for _, v := range p.Validations {
		if !eval(v.Expression) {
			return v.Message
		}
	}
	return ""
}

// The admission policy lets the installer change one label of its own
// node and nothing else; other users are none of its business.
func TestNodeLabelPolicy(t *testing.T) {
	o := decode(t, "nsiso.yaml")
	if len(o.policies) != 1 {
		t.Fatal("no admission policy")
	}
	p := o.policies[0].Spec
	// Every refusal is of a write the installer may not make: 403, not the
	// 422 Invalid the API server answers without a reason.
	for _, v := range p.Validations {
		if v.Reason == nil || *v.Reason != metav1.StatusReasonForbidden {
			t.Errorf("validation %q: reason %v, want Forbidden", v.Message, v.Reason)
		}
	}
	in := FindInstaller(t, &o.daemonSets[0], "install")
	key, value, _ := strings.Cut(in.Options.NodeLabel, "=")
	installer := "system:serviceaccount:" + in.DaemonSet.Namespace + ":" + in.DaemonSet.Spec.Template.Spec.ServiceAccountName
	onNode := func(n string) map[string][]string {
		return map[string][]string{"authentication.kubernetes.io/node-name": {n}, "authentication.kubernetes.io/pod-name": {"nsiso-installer-x"}}
	}
	node := func(edit func(*corev1.Node)) *corev1.Node {
		n := &corev1.Node{
			TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{
				Name:        "node-a",
				Labels:      map[string]string{"kubernetes.io/hostname": "node-a", "kubernetes.io/os": "linux"},
				Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
			},
			Spec: corev1.NodeSpec{PodCIDR: "10.0.0.0/24"},
		}
		if edit != nil {
			edit(n)
		}
		return n
	}
	labelled := func(n *corev1.Node) { n.Labels[key] = value }
	for _, tc := range []struct {
		name     string
		user     string
		extra    map[string][]string
		old, new *corev1.Node
		denied   string // a word of the message; "" admitted
	}{
		{name: "label its own node", user: installer, extra: onNode("node-a"), old: node(nil), new: node(labelled)},
		{name: "unlabel its own node", user: installer, extra: onNode("node-a"), old: node(labelled), new: node(nil)},
		{name: "label a node without labels", user: installer, extra: onNode("node-a"),
			old: node(func(n *corev1.Node) { n.Labels = nil }), new: node(func(n *corev1.Node) { n.Labels = map[string]string{key: value} })},
		{name: "label another node", user: installer, extra: onNode("node-b"), old: node(nil), new: node(labelled), denied: "only the node its pod runs on"},
		{name: "a token without extra (a legacy Secret token)", user: installer, extra: nil, old: node(nil), new: node(labelled),
			denied: "does not name the node its pod runs on"},
		{name: "a token without the node name", user: installer, extra: map[string][]string{"authentication.kubernetes.io/pod-name": {"x"}},
			old: node(nil), new: node(labelled), denied: "does not name the node its pod runs on"},
		{name: "a token with two node names", user: installer,
			extra: map[string][]string{"authentication.kubernetes.io/node-name": {"node-a", "node-b"}},
			old:   node(nil), new: node(labelled), denied: "does not name the node its pod runs on"},
		{name: "another value", user: installer, extra: onNode("node-a"), old: node(nil), new: node(func(n *corev1.Node) { n.Labels[key] = "yes" }), denied: "only to"},
		{name: "change another label", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { n.Labels["kubernetes.io/os"] = "windows" }), denied: "only the node label"},
		{name: "add another label", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { labelled(n); n.Labels["node-role.kubernetes.io/control-plane"] = "" }), denied: "only the node label"},
		{name: "remove another label", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { delete(n.Labels, "kubernetes.io/os") }), denied: "only the node label"},
		{name: "change an annotation", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { n.Annotations["x"] = "y" }), denied: "only the node label"},
		{name: "remove the annotations", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { n.Annotations = nil }), denied: "only the node label"},
		{name: "taint the node", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { n.Spec.Taints = []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}} }), denied: "only the node label"},
		{name: "cordon the node", user: installer, extra: onNode("node-a"), old: node(nil),
			new: node(func(n *corev1.Node) { n.Spec.Unschedulable = true }), denied: "only the node label"},
		{name: "someone else", user: "system:node:node-b", extra: nil, old: node(nil), new: node(func(n *corev1.Node) { n.Spec.Unschedulable = true })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := admit(t, p, tc.user, tc.extra, tc.old, tc.new)
			if tc.denied == "" && got != "" {
				t.Errorf("denied: %s", got)
			}
			if tc.denied != "" && !strings.Contains(got, tc.denied) {
				t.Errorf("got %q, want a denial about %q", got, tc.denied)
			}
		})
	}
}
