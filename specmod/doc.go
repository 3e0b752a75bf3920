// Package specmod is nsiso's policy engine: it rewrites the IPC namespace,
// the PID namespace and the /dev/shm mount of an OCI runtime spec according
// to per-container annotations and the node's policy, and then checks the
// final spec against the node's rules.
//
// The package does no I/O of its own. Everything it needs to know about the
// running system (the parent's pinned namespaces, whether a namespace file is
// the host's) is handed to it, so every rule can be tested with plain specs.
//
// The semantics follow Apache Mesos' namespaces/ipc and namespaces/pid
// isolators: a container's "parent" is the host for a top-level container
// and the parent container for a nested one.
package specmod
