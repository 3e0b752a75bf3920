package admission

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"
)

func nsisoPod(namespace string, annotations map[string]string, hostIPC bool) *corev1.Pod {
	rc := "nsiso"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "trainer", Namespace: namespace, Annotations: annotations},
		Spec: corev1.PodSpec{RuntimeClassName: &rc, HostIPC: hostIPC,
			Containers: []corev1.Container{{Name: "worker", Image: "registry.example.com/trainer:1"}}},
	}
}

type podCheck struct {
	name        string
	namespace   string
	annotations map[string]string
	hostIPC     bool
	// refused is "" when the pod must be admitted, else a part of the
	// message.
	refused string
}

func (c podCheck) run(t *testing.T, s *apiServer) {
	t.Helper()
	err := s.admit(t, admission.Create, nsisoPod(c.namespace, c.annotations, c.hostIPC), nil)
	switch {
	case c.refused == "" && err != nil:
		t.Errorf("%s: %s", c.name, describe(err))
	case c.refused != "" && err == nil:
		t.Errorf("%s: admitted; want a refusal saying %q", c.name, c.refused)
	case c.refused != "" && !strings.Contains(err.Error(), c.refused):
		t.Errorf("%s: the refusal must say %q:\n%v", c.name, c.refused, err)
	}
}

// The shipped limits (limits.yaml: 1Gi by default, 16Gi for ml-training):
// a pod asking for 8Gi is admitted in ml-training and refused elsewhere,
// with the limit, its key and its ConfigMap in the message.
func TestPerNamespaceLimits(t *testing.T) {
	m := loadManifests(t)
	if got := m.limitsConfigMap(t).Data; got["max-shm-size"] != "1Gi" || got["max-shm-size.ml-training"] != "16Gi" {
		t.Fatalf("limits.yaml is the example docs/admission.md describes; got %v", got)
	}
	s := newAPIServer(t, m.objects(t, nil, false, "ml-training", "team-a")...)
	const rule = `the limit of namespace "team-a", max-shm-size="1Gi" in ConfigMap nsiso-system/nsiso-shm-limits`
	for _, c := range []podCheck{
		{name: "8Gi pod /dev/shm under a 16Gi override", namespace: "ml-training",
			annotations: map[string]string{"nsiso/shm-size": "8Gi"}},
		{name: "8Gi pod /dev/shm under the 1Gi default", namespace: "team-a",
			annotations: map[string]string{"nsiso/shm-size": "8Gi"},
			refused:     `nsiso: nsiso/shm-size="8Gi": the pod's /dev/shm is over ` + rule},
		{name: "8Gi container /dev/shm under a 16Gi override", namespace: "ml-training",
			annotations: map[string]string{"nsiso/ipc-mode.worker": "private", "nsiso/shm-size.worker": "8Gi"}},
		{name: "8Gi container /dev/shm under the 1Gi default", namespace: "team-a",
			annotations: map[string]string{"nsiso/ipc-mode.worker": "private", "nsiso/shm-size.worker": "8Gi"},
			refused:     `nsiso: nsiso/shm-size.worker="8Gi": /dev/shm is over ` + rule},
		{name: "exactly the default", namespace: "team-a", annotations: map[string]string{"nsiso/shm-size": "1024Mi"}},
		{name: "512m is MiB, not milli", namespace: "team-a", annotations: map[string]string{"nsiso/shm-size": "2048m"},
			refused: `nsiso/shm-size="2048m": the pod's /dev/shm is over`},
		{name: "16Gi is the override", namespace: "ml-training", annotations: map[string]string{"nsiso/shm-size": "17Gi"},
			refused: `max-shm-size.ml-training="16Gi"`},
		{name: "no size asks for nothing", namespace: "team-a", annotations: map[string]string{"nsiso/ipc-mode": "private"}},
	} {
		c.run(t, s)
	}
}

func TestLimitsConfigMapVariants(t *testing.T) {
	m := loadManifests(t)
	for _, tc := range []struct {
		name   string
		limits map[string]string
		drop   bool
		checks []podCheck
	}{
		{name: "an override below the default", limits: map[string]string{"max-shm-size": "8Gi", "max-shm-size.team-a": "512Mi"},
			checks: []podCheck{
				{name: "team-a", namespace: "team-a", annotations: map[string]string{"nsiso/shm-size": "1Gi"}, refused: `max-shm-size.team-a="512Mi"`},
				{name: "elsewhere", namespace: "default", annotations: map[string]string{"nsiso/shm-size": "1Gi"}},
			}},
		{name: "overrides only: no default", limits: map[string]string{"max-shm-size.team-a": "1Gi"},
			checks: []podCheck{
				{name: "team-a", namespace: "team-a", annotations: map[string]string{"nsiso/shm-size": "2Gi"}, refused: `max-shm-size.team-a="1Gi"`},
				{name: "elsewhere: no admission limit", namespace: "default", annotations: map[string]string{"nsiso/shm-size": "1Ti"}},
			}},
		{name: "a limit in the shim's grammar", limits: map[string]string{"max-shm-size": " 1.5g "},
			checks: []podCheck{
				{name: "under", namespace: "default", annotations: map[string]string{"nsiso/shm-size": "1536Mi"}},
				{name: "over", namespace: "default", annotations: map[string]string{"nsiso/shm-size": "1537Mi"}, refused: `max-shm-size=" 1.5g "`},
			}},
		// Fail closed: a limit that does not parse refuses the namespace's
		// nsiso pods, naming the key to fix; other namespaces and other
		// runtimes are untouched.
		{name: "a malformed limit", limits: map[string]string{"max-shm-size": "8Gi", "max-shm-size.team-a": "1 parsec"},
			checks: []podCheck{
				{name: "team-a", namespace: "team-a", annotations: nil,
					refused: `nsiso: ConfigMap nsiso-system/nsiso-shm-limits: max-shm-size.team-a="1 parsec": size "1 parsec" has unknown unit "parsec"`},
				{name: "elsewhere", namespace: "default", annotations: map[string]string{"nsiso/shm-size": "1Gi"}},
				{name: "a node rule is named first", namespace: "team-a", hostIPC: true, refused: "spec.hostIPC=true"},
			}},
		// Without the ConfigMap the limits binding is skipped (its
		// parameterNotFoundAction is Allow) and there is no admission limit,
		// but the binding without params still checks the node's rules.
		{name: "no ConfigMap", drop: true,
			checks: []podCheck{
				{name: "any size", namespace: "team-a", annotations: map[string]string{"nsiso/shm-size": "1Ti"}},
				{name: "hostIPC", namespace: "team-a", hostIPC: true, refused: "spec.hostIPC=true: shares the host's IPC namespace"},
				{name: "bad mode", namespace: "team-a", annotations: map[string]string{"nsiso/ipc-mode": "host"}, refused: `nsiso/ipc-mode="host": unknown mode`},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAPIServer(t, m.objects(t, tc.limits, tc.drop, "team-a")...)
			for _, c := range tc.checks {
				c.run(t, s)
			}
		})
	}
}

// A malformed annotation is an invalid object (HTTP 422, kubectl: "The pods
// "x" is invalid"); a rule or a limit forbids a valid one (HTTP 403,
// kubectl: "Error from server (Forbidden)").
func TestRefusalStatus(t *testing.T) {
	m := loadManifests(t)
	s := newAPIServer(t, m.objects(t, nil, false, "team-a")...)
	for _, tc := range []struct {
		ann     map[string]string
		hostIPC bool
		code    int32
	}{
		{ann: map[string]string{"nsiso/ipc-mode": "host"}, code: 422},
		{ann: map[string]string{"nsiso/shm-size": "lots"}, code: 422},
		{ann: map[string]string{"nsiso/parent": "x"}, code: 422},
		{hostIPC: true, code: 403},
		{ann: map[string]string{"nsiso/shm-size.worker": "1Gi"}, code: 403},
		{ann: map[string]string{"nsiso/shm-size": "2Gi"}, code: 403},
	} {
		err := s.admit(t, admission.Create, nsisoPod("team-a", tc.ann, tc.hostIPC), nil)
		var status apierrors.APIStatus
		if !errors.As(err, &status) || status.Status().Code != tc.code {
			t.Errorf("%v hostIPC=%v: %s; want HTTP %d", tc.ann, tc.hostIPC, describe(err), tc.code)
		}
	}
}
