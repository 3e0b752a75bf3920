package admission

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
)

// podCasesFile is the table specmod's pod tests run on the node's policy
// engine; this test runs the same rows through the admission policy.
const podCasesFile = "../../specmod/testdata/pod-cases.json"

// podCases mirrors internal/podcases of the main module (the modules do not
// import each other, so that the API server's dependencies stay here).
type podCases struct {
	Comment        []string          `json:"comment"`
	NodeMaxShmSize string            `json:"nodeMaxShmSize"`
	Limits         map[string]string `json:"limits"`
	Cases          []podCase         `json:"cases"`
}

type podCase struct {
	Name                  string            `json:"name"`
	Namespace             string            `json:"namespace"`
	Annotations           map[string]string `json:"annotations"`
	HostIPC               bool              `json:"hostIPC"`
	HostPID               bool              `json:"hostPID"`
	ShareProcessNamespace bool              `json:"shareProcessNamespace"`
	InitContainers        []string          `json:"initContainers"`
	Containers            []string          `json:"containers"`
	Sysctls               map[string]string `json:"sysctls"`
	Admission             string            `json:"admission"`
	Node                  string            `json:"node"`
	NodeValue             string            `json:"nodeValue"`
	Message               string            `json:"message"`
	Why                   string            `json:"why"`
	InvalidInKubernetes   bool              `json:"invalidInKubernetes"`
}

func loadPodCases(t *testing.T) podCases {
	t.Helper()
	data, err := os.ReadFile(podCasesFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var pc podCases
	if err := dec.Decode(&pc); err != nil {
		t.Fatalf("%s: %v", podCasesFile, err)
	}
	if len(pc.Cases) == 0 {
		t.Fatalf("%s: no cases", podCasesFile)
	}
	return pc
}

func (c podCase) namespace() string {
	if c.Namespace == "" {
		return "default"
	}
	return c.Namespace
}

// podTemplate is the row as Kubernetes writes a pod: metadata and spec.
func (c podCase) podTemplate(runtimeClass string) corev1.PodTemplateSpec {
	containers := func(names []string) []corev1.Container {
		var cs []corev1.Container
		for _, n := range names {
			cs = append(cs, corev1.Container{Name: n, Image: "registry.example.com/" + n + ":1"})
		}
		return cs
	}
	names := c.Containers
	if len(names) == 0 {
		names = []string{"app"}
	}
	var sc *corev1.PodSecurityContext
	if len(c.Sysctls) > 0 {
		sc = &corev1.PodSecurityContext{}
		for _, k := range slices.Sorted(maps.Keys(c.Sysctls)) {
			sc.Sysctls = append(sc.Sysctls, corev1.Sysctl{Name: k, Value: c.Sysctls[k]})
		}
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: c.Annotations, Labels: map[string]string{"app": "pc"}},
		Spec: corev1.PodSpec{
			RuntimeClassName:      &runtimeClass,
			HostIPC:               c.HostIPC,
			HostPID:               c.HostPID,
			ShareProcessNamespace: &c.ShareProcessNamespace,
			SecurityContext:       sc,
			InitContainers:        containers(c.InitContainers),
			Containers:            containers(names),
		},
	}
}

// workload wraps a pod template in an object of the given kind, with
// specPath where that object keeps the pod's spec.
func workload(kind, namespace string, tpl corev1.PodTemplateSpec) (obj runtime.Object, specPath string) {
	om := metav1.ObjectMeta{Name: "pc", Namespace: namespace}
	sel := &metav1.LabelSelector{MatchLabels: tpl.Labels}
	switch kind {
	case "Pod":
		tpl.ObjectMeta.Name, tpl.ObjectMeta.Namespace = om.Name, om.Namespace
		return &corev1.Pod{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec}, "spec"
	case "ReplicationController":
		return &corev1.ReplicationController{ObjectMeta: om, Spec: corev1.ReplicationControllerSpec{Selector: tpl.Labels, Template: &tpl}}, "spec.template.spec"
	case "Deployment":
		return &appsv1.Deployment{ObjectMeta: om, Spec: appsv1.DeploymentSpec{Selector: sel, Template: tpl}}, "spec.template.spec"
	case "ReplicaSet":
		return &appsv1.ReplicaSet{ObjectMeta: om, Spec: appsv1.ReplicaSetSpec{Selector: sel, Template: tpl}}, "spec.template.spec"
	case "StatefulSet":
		return &appsv1.StatefulSet{ObjectMeta: om, Spec: appsv1.StatefulSetSpec{Selector: sel, Template: tpl}}, "spec.template.spec"
	case "DaemonSet":
		return &appsv1.DaemonSet{ObjectMeta: om, Spec: appsv1.DaemonSetSpec{Selector: sel, Template: tpl}}, "spec.template.spec"
	case "Job":
		tpl.Spec.RestartPolicy = corev1.RestartPolicyNever
		return &batchv1.Job{ObjectMeta: om, Spec: batchv1.JobSpec{Template: tpl}}, "spec.template.spec"
	case "CronJob":
		tpl.Spec.RestartPolicy = corev1.RestartPolicyNever
		return &batchv1.CronJob{ObjectMeta: om, Spec: batchv1.CronJobSpec{Schedule: "@hourly",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tpl}}}}, "spec.jobTemplate.spec.template.spec"
	}
	panic("unknown kind " + kind)
}

// TestPodCasesAdmission runs every row of the shared table through the
// policy, as a Pod and as the pod template of every workload kind the
// policy covers: a row is refused exactly when its admission key is set,
// and the message names that key (with the value the pod gave it) first.
func TestPodCasesAdmission(t *testing.T) {
	pc := loadPodCases(t)
	m := loadManifests(t)
	var namespaces []string
	for _, c := range pc.Cases {
		namespaces = append(namespaces, c.namespace())
	}
	s := newAPIServer(t, m.objects(t, pc.Limits, false, namespaces...)...)
	for _, c := range pc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			for _, kind := range []string{"Pod", "ReplicationController", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"} {
				obj, specPath := workload(kind, c.namespace(), c.podTemplate("nsiso"))
				err := s.admit(t, admission.Create, obj, nil)
				if c.Admission == "" {
					if err != nil {
						t.Fatalf("%s: %s", kind, describe(err))
					}
					continue
				}
				if err == nil {
					t.Fatalf("%s: admitted; want a refusal naming %s", kind, c.Admission)
				}
				if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
					t.Fatalf("%s: not a policy refusal: %v", kind, err)
				}
				key := c.Admission
				if strings.HasPrefix(key, "spec.") {
					key = specPath + strings.TrimPrefix(key, "spec")
				}
				named := "denied request: nsiso: " + key + "="
				if v, ok := c.Annotations[key]; ok {
					named += strconv.Quote(v)
				}
				if !strings.Contains(err.Error(), named) {
					t.Fatalf("%s: the refusal must name %s first:\n%v", kind, named, err)
				}
				if !strings.Contains(err.Error(), strings.ReplaceAll(c.Message, "spec.host", specPath+".host")) {
					t.Fatalf("%s: the refusal must say %q:\n%v", kind, c.Message, err)
				}
			}
		})
	}
}

// Rows marked invalidInKubernetes are exactly those whose annotation keys
// the API server itself refuses (apimachinery's ValidateAnnotations, which
// runs before any validating admission): such pods never reach the policy
// or the node through Kubernetes.
func TestPodCasesInvalidInKubernetes(t *testing.T) {
	for _, c := range loadPodCases(t).Cases {
		errs := apivalidation.ValidateAnnotations(c.Annotations, field.NewPath("metadata", "annotations"))
		if (len(errs) > 0) != c.InvalidInKubernetes {
			t.Errorf("%s: invalidInKubernetes=%v, the API server's validation says %v", c.Name, c.InvalidInKubernetes, errs)
		}
	}
}

// docs/admission.md lists every row where admission and the node differ,
// by name, so the list of differences cannot go stale.
func TestPodCasesDifferencesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/admission.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range loadPodCases(t).Cases {
		if c.Why == "" {
			continue
		}
		if !bytes.Contains(doc, []byte(c.Name)) {
			t.Errorf("docs/admission.md does not list the difference %q (%s)", c.Name, c.Why)
		}
	}
}
