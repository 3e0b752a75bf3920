package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moby/sys/mountinfo"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/specmod"
)

// The node benchmark fills a node with pods under nsiso, as many as the
// kubelet allows by default, every fifth with a private container besides
// (whose /dev/shm is a tmpfs on the host), and asks whether one more pod
// costs more on the full node than on an empty one, under either handler:
// a per-container cost that grows with the node (a longer mount table to
// copy or scan, more shims) would show as a ratio that drifts.

// nodeResult is the node benchmark.
type nodeResult struct {
	Pods        int     `json:"pods"`
	PrivatePods int     `json:"pods_with_private_container"`
	FillSeconds float64 `json:"fill_s"`
	// Empty and Full time one more pod's creation (RunPodSandbox,
	// CreateContainer, StartContainer) at 0 and at Pods pods.
	Empty *pairedResult `json:"empty"`
	Full  *pairedResult `json:"full"`
	// Drift is the median ratio nsiso/runc at Pods over the one at 0.
	Drift float64 `json:"ratio_drift"`
	// The host's mount table (this process's mountinfo) empty and full,
	// and how many of the full one's mounts nsiso made.
	MountsEmpty int `json:"host_mounts_empty"`
	MountsFull  int `json:"host_mounts_full"`
	NsisoMounts int `json:"nsiso_mounts_full"`
	// The shims serving the full node's pods, one per pod.
	Shims      int     `json:"shims"`
	ShimRSSMiB float64 `json:"shim_vm_rss_total_mib"`
	ShimPssMiB float64 `json:"shim_pss_total_mib"`
}

// privateEvery makes every privateEvery-th pod of the full node carry a
// private container besides its main one.
const privateEvery = 5

// fillParallelism bounds how many pods are made or removed at once.
const fillParallelism = 4

var nodeStages = []string{"RunPodSandbox", "CreateContainer", "StartContainer"}

// createLatency times one more pod's creation under handler, then removes
// it again untimed.
func (c *criEnv) createLatency(ctx context.Context, handler string) (stageSample, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	pd, ctrID, s, err := c.runPod(ctx, podSpec{handler: handler})
	if ctrID != "" {
		c.forget(ctrID)
	}
	if pd.id != "" {
		if rerr := c.removePod(ctx, pd); err == nil {
			err = rerr
		}
		c.forget(pd.id)
	}
	return s, err
}

func (c *criEnv) pairedCreate(ctx context.Context, name, what string, n, warmup int) (*pairedResult, error) {
	handlers := []string{"nsiso", "runc"}
	return runPaired(ctx, name, what, nodeStages, handlers, n, warmup, func(ctx context.Context, side, _ int) (stageSample, error) {
		return c.createLatency(ctx, handlers[side])
	})
}

// addContainer creates and starts one more long-running container in a
// pod.
func (c *criEnv) addContainer(ctx context.Context, pd pod, name string, ann map[string]string) error {
	ctr, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pd.id,
		Config: &runtimeapi.ContainerConfig{
			Metadata:    &runtimeapi.ContainerMetadata{Name: name},
			Image:       &runtimeapi.ImageSpec{Image: criAppImage},
			Command:     []string{"sleep", "2147483647"},
			LogPath:     name + ".log",
			Annotations: ann,
		},
		SandboxConfig: pd.cfg,
	})
	if err != nil {
		return fmt.Errorf("CreateContainer %s: %w", name, err)
	}
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		return fmt.Errorf("StartContainer %s: %w", name, err)
	}
	return nil
}

// benchNode is the node benchmark: one more pod's creation under either
// handler on an empty node and on one holding pods nsiso pods, with the
// full node's mounts and shim memory.
func benchNode(ctx context.Context, s criSetup, pods, n, warmup int) (_ *nodeResult, retErr error) {
	c, err := startCRI(ctx, s)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := c.close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	res := &nodeResult{Pods: pods}
	if res.Empty, err = c.pairedCreate(ctx, "node empty", "one more pod (sandbox, container created and started) on an empty node", n, warmup); err != nil {
		return nil, err
	}
	if res.MountsEmpty, _, err = countMounts(); err != nil {
		return nil, err
	}
	full := make([]pod, pods)
	defer func() {
		if err := c.removePods(ctx, full); err != nil && retErr == nil {
			retErr = err
		}
	}()
	t0 := time.Now()
	res.PrivatePods, err = c.fill(ctx, full)
	res.FillSeconds = time.Since(t0).Seconds()
	if err != nil {
		return nil, err
	}
	if res.MountsFull, res.NsisoMounts, err = countMounts(); err != nil {
		return nil, err
	}
	if res.Shims, res.ShimRSSMiB, res.ShimPssMiB, err = shimMemory(s.nsisoShim); err != nil {
		return nil, err
	}
	if res.Full, err = c.pairedCreate(ctx, fmt.Sprintf("node %d pods", pods), fmt.Sprintf("one more pod on the node holding %d nsiso pods", pods), n, warmup); err != nil {
		return nil, err
	}
	e := res.Empty.comparison("nsiso", "runc")
	f := res.Full.comparison("nsiso", "runc")
	if e != nil && f != nil {
		res.Drift = f.Ratio.Median / e.Ratio.Median
	}
	return res, nil
}

// fill runs a long-running nsiso pod into each slot of full, a few at a
// time, every privateEvery-th with a private container besides; it
// returns how many have one.
func (c *criEnv) fill(ctx context.Context, full []pod) (int, error) {
	fmt.Fprintf(os.Stderr, "  node: filling with %d nsiso pods\n", len(full))
	errs := make([]error, len(full))
	var private atomic.Int64
	parallel(len(full), fillParallelism, func(i int) {
		if errs[i] = ctx.Err(); errs[i] != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		pd, _, _, err := c.runPod(pctx, podSpec{handler: "nsiso", cmd: []string{"sleep", "2147483647"}})
		full[i] = pd
		if err == nil && i%privateEvery == 0 {
			err = c.addContainer(pctx, pd, "private", map[string]string{
				specmod.AnnotationIPCMode: string(specmod.ModePrivate), specmod.AnnotationShmSize: shmSizeBench})
			private.Add(1)
		}
		errs[i] = err
	})
	return int(private.Load()), errors.Join(errs...)
}

// removePods removes the pods of full that were made, a few at a time.
func (c *criEnv) removePods(ctx context.Context, full []pod) error {
	fmt.Fprintf(os.Stderr, "  node: removing %d pods\n", len(full))
	errs := make([]error, len(full))
	parallel(len(full), fillParallelism, func(i int) {
		if full[i].id != "" {
			errs[i] = c.removePod(ctx, full[i])
		}
	})
	return errors.Join(errs...)
}

// countMounts counts the mounts of this process's mount namespace (the
// host's), and those nsiso made: a private container's /dev/shm under its
// bundle's nsiso directory, and parent pins.
func countMounts() (all, nsiso int, err error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range infos {
		if isNsisoMount(m.Mountpoint) {
			nsiso++
		}
	}
	return len(infos), nsiso, nil
}

// isNsisoMount tells whether a mount point is one nsiso makes under a
// bundle: a private container's /dev/shm or a pin of a parent's.
func isNsisoMount(point string) bool {
	dir, name := filepath.Split(point)
	return filepath.Base(dir) == "nsiso" && (name == "shm" || strings.HasPrefix(name, "parent-"))
}

// shimMemory sums the VmRSS and Pss of every running process of the shim
// binary at path.
func shimMemory(path string) (n int, rss, pss float64, err error) {
	pids, err := procfs.PIDs()
	if err != nil {
		return 0, 0, 0, err
	}
	for _, pid := range pids {
		exe, err := os.Readlink(filepath.Join("/proc", fmt.Sprint(pid), "exe"))
		if err != nil || exe != path {
			continue
		}
		r, err := procfs.ReadKB(pid, "status", "VmRSS")
		if err != nil {
			continue // exited meanwhile
		}
		p, err := procfs.ReadKB(pid, "smaps_rollup", "Pss")
		if err != nil {
			continue
		}
		n++
		rss += float64(r) / 1024
		pss += float64(p) / 1024
	}
	return n, rss, pss, nil
}
