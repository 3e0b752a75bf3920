package admission

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
)

var workloadKinds = []string{"ReplicationController", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"}

// Only pods and templates on the nsiso RuntimeClass are checked: the same
// refused pod on runc, or without a RuntimeClass, is none of nsiso's
// business.
func TestOtherRuntimeClassesAreIgnored(t *testing.T) {
	m := loadManifests(t)
	s := newAPIServer(t, m.objects(t, nil, false)...)
	bad := podCase{HostIPC: true, HostPID: true, Annotations: map[string]string{"nsiso/ipc-mode": "host", "nsiso/shm-size": "1Ti"}}
	for _, rc := range []string{"", "runc", "nsiso-batch", "NSISO"} {
		for _, kind := range append([]string{"Pod"}, workloadKinds...) {
			tpl := bad.podTemplate(rc)
			if rc == "" {
				tpl.Spec.RuntimeClassName = nil
			}
			obj, _ := workload(kind, "default", tpl)
			if err := s.admit(t, admission.Create, obj, nil); err != nil {
				t.Errorf("runtimeClassName %q, %s: %s", rc, kind, describe(err))
			}
		}
	}
}

// A workload is checked when its pod template changes: on CREATE, and on an
// UPDATE that changes the template. An UPDATE that leaves the template as it
// was (a scale, a label, a finalizer removed during deletion) is admitted
// even when the template would now be refused: a workload admitted before
// the policy, or before its namespace's limit was lowered, must stay
// manageable; its new pods are still refused one by one.
func TestWorkloadUpdates(t *testing.T) {
	m := loadManifests(t)
	s := newAPIServer(t, m.objects(t, nil, false)...)
	good := podCase{Annotations: map[string]string{"nsiso/shm-size": "512Mi"}}
	bad := podCase{Annotations: map[string]string{"nsiso/shm-size": "4Gi"}}
	const refusal = `nsiso: nsiso/shm-size="4Gi": the pod's /dev/shm is over the limit of namespace "default"`
	for _, kind := range workloadKinds {
		t.Run(kind, func(t *testing.T) {
			goodObj, _ := workload(kind, "default", good.podTemplate("nsiso"))
			badObj, _ := workload(kind, "default", bad.podTemplate("nsiso"))
			relabelled := badObj.DeepCopyObject()
			acc := relabelled.(metav1.Object)
			acc.SetLabels(map[string]string{"tier": "batch"})
			acc.SetFinalizers(nil)

			for _, step := range []struct {
				name     string
				op       admission.Operation
				obj, old runtime.Object
				refused  bool
			}{
				{"create good", admission.Create, goodObj, nil, false},
				{"create bad", admission.Create, badObj, nil, true},
				{"update to a bad template", admission.Update, badObj, goodObj, true},
				{"update to a good template", admission.Update, goodObj, badObj, false},
				{"update a bad workload, template unchanged", admission.Update, relabelled, badObj, false},
			} {
				err := s.admit(t, step.op, step.obj, step.old)
				if !step.refused && err != nil {
					t.Errorf("%s: %s", step.name, describe(err))
				}
				if step.refused && (err == nil || !strings.Contains(err.Error(), refusal)) {
					t.Errorf("%s: %s; want a refusal saying %s", step.name, describe(err), refusal)
				}
			}
		})
	}
}

// Many containers and many keys stay within the API server's CEL cost
// budget: a cost overrun would refuse the pod with an evaluation error.
func TestLargePod(t *testing.T) {
	m := loadManifests(t)
	s := newAPIServer(t, m.objects(t, nil, false)...)
	c := podCase{Annotations: map[string]string{"nsiso/shm-size": "1Gi", "nsiso/pid-mode": "private"}}
	for i := 0; i < 40; i++ {
		name := "c" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		c.Containers = append(c.Containers, name)
		c.Annotations["nsiso/ipc-mode."+name] = "private"
		c.Annotations["nsiso/shm-size."+name] = "64Mi"
	}
	pod, _ := workload("Pod", "default", c.podTemplate("nsiso"))
	if err := s.admit(t, admission.Create, pod, nil); err != nil {
		t.Fatalf("%d containers: %s", len(c.Containers), describe(err))
	}
	// The same pod with one mistake is refused by the policy, not by a
	// failed evaluation.
	last := c.Containers[len(c.Containers)-1]
	c.Annotations["nsiso/shm-size."+last] = "64 furlongs"
	pod, _ = workload("Pod", "default", c.podTemplate("nsiso"))
	err := s.admit(t, admission.Create, pod, nil)
	if err == nil || !strings.Contains(err.Error(), `nsiso: nsiso/shm-size.`+last+`="64 furlongs": size "64 furlongs" has unknown unit "furlongs"`) {
		t.Fatalf("%s", describe(err))
	}
}
