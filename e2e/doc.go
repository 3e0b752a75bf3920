// Package e2e runs nsiso where its users run it: a one-node Kubernetes
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
// and kube-proxy, pinned in e2e/tools) on the project's own containerd.
//
// `make e2e` builds what is missing (scripts/install-e2e-deps.sh) and runs
// the test binary, which re-executes itself in a new network and mount
// namespace: the node's address, bridge and iptables rules, the tmpfs it
// lays over the fixed paths its components write (hostPaths) and the
// sysctl values the kubelet insists on all vanish with it. The cluster's
// files live under one temporary directory; the kubelet's cgroups under
// /nsiso-e2e are removed at the end.
//
// TestNode is the life of nsiso on the node, in order: the DaemonSet of
// deploy/ installs it (restarting containerd through this binary, which
// acts as the node's service manager), pods run on it and are measured
// from inside, specmod/testdata/pod-cases.json runs as real pods and
// through the live admission policy, `nsiso audit` reads the node, pod
// start-up is timed against the runc RuntimeClass, and deploy/uninstall/
// restores containerd's config byte for byte.
package e2e
