package admission

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/initializer"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/util/compatibility"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/component-base/featuregate"
)

// manifests is what deploy/admission/*.yaml holds.
type manifests struct {
	Policy     *admissionregistrationv1.ValidatingAdmissionPolicy
	Bindings   []*admissionregistrationv1.ValidatingAdmissionPolicyBinding
	Namespaces []*corev1.Namespace
	ConfigMaps []*corev1.ConfigMap
}

// loadManifests decodes every document of deploy/admission/*.yaml strictly,
// with the API server's own scheme: an unknown or duplicated field, or a
// kind other than those an operator is meant to apply, fails the test.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/admission")
	}
	sort.Strings(files)
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var m manifests
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			switch o := obj.(type) {
			case *admissionregistrationv1.ValidatingAdmissionPolicy:
				if m.Policy != nil {
					t.Fatalf("%s: a second ValidatingAdmissionPolicy %q", f, o.Name)
				}
				m.Policy = o
			case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
				m.Bindings = append(m.Bindings, o)
			case *corev1.Namespace:
				m.Namespaces = append(m.Namespaces, o)
			case *corev1.ConfigMap:
				m.ConfigMaps = append(m.ConfigMaps, o)
			default:
				t.Fatalf("%s: document %d: unexpected %T", f, i, obj)
			}
		}
	}
	if m.Policy == nil || len(m.Bindings) == 0 {
		t.Fatal("deploy/admission must hold a ValidatingAdmissionPolicy and its bindings")
	}
	return m
}

// limitsConfigMap returns the params ConfigMap the limits binding names.
func (m manifests) limitsConfigMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	for _, b := range m.Bindings {
		if b.Spec.ParamRef == nil {
			continue
		}
		for _, cm := range m.ConfigMaps {
			if cm.Name == b.Spec.ParamRef.Name && cm.Namespace == b.Spec.ParamRef.Namespace {
				return cm
			}
		}
		t.Fatalf("binding %s names ConfigMap %s/%s, which limits.yaml does not define", b.Name, b.Spec.ParamRef.Namespace, b.Spec.ParamRef.Name)
	}
	t.Fatal("no binding has a paramRef")
	return nil
}

// apiServer is the API server's ValidatingAdmissionPolicy admission plugin,
// as kube-apiserver builds it (validating.NewPlugin and the generic plugin
// initializer), fed by a fake clientset that holds the policy, its bindings,
// the namespaces and the params.
type apiServer struct {
	plugin *validating.Plugin
	// client is what the plugin's informers watch; dynamic is what it reads
	// a param from when its informer does not hold it (in kube-apiserver
	// both are the same store).
	client  *fake.Clientset
	dynamic *dynamicfake.FakeDynamicClient
}

// newAPIServer starts the plugin on objects (policies, bindings, namespaces,
// ConfigMaps) and waits until it has synced them.
func newAPIServer(t *testing.T, objects ...runtime.Object) *apiServer {
	t.Helper()
	client := fake.NewClientset(objects...)
	factory := informers.NewSharedInformerFactory(client, 0)
	dynamicClient := dynamicfake.NewSimpleDynamicClient(scheme.Scheme)
	mapper := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gvk   schema.GroupVersionKind
		scope meta.RESTScope
	}{
		{corev1.SchemeGroupVersion.WithKind("ConfigMap"), meta.RESTScopeNamespace},
		{corev1.SchemeGroupVersion.WithKind("Pod"), meta.RESTScopeNamespace},
		{corev1.SchemeGroupVersion.WithKind("Namespace"), meta.RESTScopeRoot},
	} {
		mapper.Add(k.gvk, k.scope)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })

	// The policy does not use the authorizer variable, so any authorizer
	// would do.
	plugin, err := validating.NewPlugin(nil)
	if err != nil {
		t.Fatal(err)
	}
	initializer.New(client, dynamicClient, factory, authorizerfactory.NewAlwaysAllowAuthorizer(), featuregate.NewFeatureGate(),
		compatibility.DefaultBuildEffectiveVersion(), stop, mapper).Initialize(plugin)
	if err := plugin.ValidateInitialization(); err != nil {
		t.Fatal(err)
	}
	factory.Start(stop)
	for typ, ok := range factory.WaitForCacheSync(stop) {
		if !ok {
			t.Fatalf("informer for %v did not sync", typ)
		}
	}
	if !plugin.WaitForReady() {
		t.Fatal("the admission plugin did not become ready")
	}
	return &apiServer{plugin: plugin, client: client, dynamic: dynamicClient}
}

// kinds maps the objects the tests admit to their resource.
var kinds = map[string]schema.GroupVersionResource{
	"Node":                  corev1.SchemeGroupVersion.WithResource("nodes"),
	"Pod":                   corev1.SchemeGroupVersion.WithResource("pods"),
	"ReplicationController": corev1.SchemeGroupVersion.WithResource("replicationcontrollers"),
	"Deployment":            appsv1.SchemeGroupVersion.WithResource("deployments"),
	"ReplicaSet":            appsv1.SchemeGroupVersion.WithResource("replicasets"),
	"StatefulSet":           appsv1.SchemeGroupVersion.WithResource("statefulsets"),
	"DaemonSet":             appsv1.SchemeGroupVersion.WithResource("daemonsets"),
	"Job":                   batchv1.SchemeGroupVersion.WithResource("jobs"),
	"CronJob":               batchv1.SchemeGroupVersion.WithResource("cronjobs"),
}

// admit runs one request of the user "tenant" through the plugin as the API
// server does after it has decoded, defaulted and validated the object: nil
// is admitted, else the error is what kubectl prints after its own prefix.
func (s *apiServer) admit(t *testing.T, op admission.Operation, obj, old runtime.Object) error {
	t.Helper()
	return s.admitAs(t, &user.DefaultInfo{Name: "tenant"}, op, obj, old)
}

// admitAs is admit for a request authenticated as who.
func (s *apiServer) admitAs(t *testing.T, who user.Info, op admission.Operation, obj, old runtime.Object) error {
	t.Helper()
	gvks, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil {
		t.Fatal(err)
	}
	gvk := gvks[0]
	gvr, ok := kinds[gvk.Kind]
	if !ok {
		t.Fatalf("no resource for %v", gvk)
	}
	acc, err := meta.Accessor(obj)
	if err != nil {
		t.Fatal(err)
	}
	var opts runtime.Object = &metav1.CreateOptions{}
	if op == admission.Update {
		opts = &metav1.UpdateOptions{}
	}
	attrs := admission.NewAttributesRecord(obj, old, gvk, acc.GetNamespace(), acc.GetName(), gvr, "", op, opts, false, who)
	return s.plugin.Validate(context.Background(), attrs, admission.NewObjectInterfacesFromScheme(scheme.Scheme))
}

// objects returns the manifests as the fake clientset's initial objects,
// with the params ConfigMap's data replaced by limits (nil: as shipped;
// dropConfigMap: without it), and the namespace "default" and the given
// ones added.
func (m manifests) objects(t *testing.T, limits map[string]string, dropConfigMap bool, namespaces ...string) []runtime.Object {
	t.Helper()
	params := m.limitsConfigMap(t)
	var objs []runtime.Object
	objs = append(objs, m.Policy.DeepCopy())
	for _, b := range m.Bindings {
		objs = append(objs, b.DeepCopy())
	}
	seen := map[string]bool{}
	for _, ns := range m.Namespaces {
		objs = append(objs, ns.DeepCopy())
		seen[ns.Name] = true
	}
	for _, name := range append([]string{"default"}, namespaces...) {
		if !seen[name] {
			objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
			seen[name] = true
		}
	}
	for _, cm := range m.ConfigMaps {
		if cm == params {
			if dropConfigMap {
				continue
			}
			if limits != nil {
				cm = cm.DeepCopy()
				cm.Data = limits
			}
		}
		objs = append(objs, cm.DeepCopy())
	}
	return objs
}

// describe is for failure messages.
func describe(err error) string {
	if err == nil {
		return "admitted"
	}
	return fmt.Sprintf("refused: %v", err)
}
