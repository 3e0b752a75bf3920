// Package shim is nsiso's containerd shim: containerd's runc.v2 shim,
// wrapped so that every task Create first rewrites the bundle's OCI spec by
// nsiso policy (package specmod) and carries out the plan it returns, with
// the parent container's namespaces pinned so they cannot change between
// lookup and clone.
//
// The task service wraps Create (policy, pins, mounts, spec) and Delete
// (unpin, unmount); the manager wraps Stop, so that `shim delete` after a
// shim died cleans up too, and Info, which translates nsiso's options into
// runc's. Everything else is runc.v2's behaviour, unchanged.
//
// The files: service.go (the task service), manager.go (the shim manager),
// options.go and config.go (runtime options and nsiso.toml), tasks.go
// (asking containerd for a parent's task), parent.go (finding and pinning
// a parent), nspaths.go (holding the namespace files
// a client names), mounts.go (what nsiso mounts, resizes and cleans up),
// bundle.go (reading and writing config.json).
package shim
