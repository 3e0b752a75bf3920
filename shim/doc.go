// Package shim is nsiso's containerd shim: containerd's runc task service,
// wrapped so that every task Create first rewrites the bundle's OCI spec by
// nsiso policy (see package specmod), with the parent container's namespaces
// pinned so they cannot change between lookup and clone.
//
// Everything but Create and Delete is runc.v2's behaviour, unchanged.
package shim
