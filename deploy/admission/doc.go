// Package admission holds nsiso's Kubernetes admission layer: a
// ValidatingAdmissionPolicy (policy.yaml) that refuses at `kubectl apply`
// what the nsiso shim would refuse on the node, and per-namespace /dev/shm
// limits (limits.yaml). The package has no code: its tests run the
// manifests through the Kubernetes API server's own admission-policy
// plugin (k8s.io/apiserver), against the pod cases the shim's policy
// engine is tested on (specmod/testdata/pod-cases.json). It is a module of
// its own so that the API server's dependencies do not move those of the
// shim. See docs/admission.md.
package admission
