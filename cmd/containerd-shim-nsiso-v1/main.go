//go:build linux

// Command containerd-shim-nsiso-v1 is the containerd shim of the runtime
// io.containerd.nsiso.v1: runc.v2's shim with nsiso's IPC/PID/shm policy
// applied to every task's spec before runc creates it.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	nsiso "github.com/nsiso/nsiso/shim"
)

func main() {
	shim.Run(context.Background(), nsiso.NewManager())
}
