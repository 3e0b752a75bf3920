package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// The cri and node benchmarks drive a second private containerd, with its
// CRI plugin on, through the CRI API as the kubelet does: the runtime
// handler "nsiso" (io.containerd.nsiso.v1, configured as in
// examples/containerd/config.toml) against containerd's own "runc"
// handler, which runs the stock runc.v2 shim.

const (
	criNamespace  = "k8s.io"
	criAppImage   = "docker.io/library/nsiso-busybox:bench-cri"
	criPauseImage = "docker.io/library/nsiso-pause:bench-cri"
	// criShmSize is the pod /dev/shm size the "cri shm" mode asks for.
	criShmSize = "128Mi"
)

// criSetup is what the CRI daemon is started with.
type criSetup struct {
	deps      testenv.Deps
	pathDirs  []string
	scratch   string
	runcPath  string
	nsisoShim string
	// started is told of the CRI daemon once it serves.
	started func(*testenv.Containerd)
}

// criEnv is a CRI-enabled private containerd and a CRI client of it.
type criEnv struct {
	ctd    *testenv.Containerd
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	logDir string
	seq    atomic.Int64

	mu      sync.Mutex
	stopped map[string]chan struct{} // container ID → closed when it stopped
	cancel  context.CancelFunc
	evDone  chan struct{}
}

// startCRI starts the CRI daemon with the nsiso and runc handlers, imports
// a pause image and an application image, and subscribes to container
// events (so that a container's exit is seen when containerd sees it).
func startCRI(ctx context.Context, s criSetup) (_ *criEnv, retErr error) {
	dir, cfg, err := makeCRIDir(s.scratch)
	if err != nil {
		return nil, err
	}
	ctd, err := testenv.StartContainerd(ctx, testenv.Options{
		Binary:      s.deps.Containerd,
		Dir:         dir,
		PathPrepend: s.pathDirs,
		EnableCRI:   true,
		ExtraConfig: cfg,
	})
	if err != nil {
		return nil, err
	}
	if s.started != nil {
		s.started(ctd)
	}
	c := &criEnv{ctd: ctd, logDir: filepath.Join(s.scratch, "pod-logs"), stopped: map[string]chan struct{}{}}
	defer func() {
		if retErr != nil {
			c.close()
		}
	}()
	if err := importCRIImages(ctx, ctd, s); err != nil {
		return nil, err
	}
	if c.conn, err = grpc.NewClient("unix://"+ctd.Address(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, err
	}
	c.rt = runtimeapi.NewRuntimeServiceClient(c.conn)
	if err := waitForCRIImages(ctx, runtimeapi.NewImageServiceClient(c.conn)); err != nil {
		return nil, err
	}
	if err := c.subscribe(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// makeCRIDir makes the CRI daemon's directory, with runc's root inside,
// and nsiso's policy file in scratch; it returns the directory and the
// daemon's configuration. On error nothing of it is left.
func makeCRIDir(scratch string) (dir, cfg string, err error) {
	if dir, err = os.MkdirTemp("", "nsc-"); err != nil {
		return "", "", err
	}
	runcRoot := filepath.Join(dir, "runc")
	policy := filepath.Join(scratch, "cri-nsiso.toml")
	err = os.MkdirAll(runcRoot, 0o711)
	if err == nil {
		err = os.WriteFile(policy, fmt.Appendf(nil, "root = %q\n", runcRoot), 0o644)
	}
	if err != nil {
		return "", "", errors.Join(err, os.RemoveAll(dir))
	}
	// As examples/containerd/config.toml has it, with the policy file and
	// runc root pointed into this daemon.
	cfg = fmt.Sprintf(`
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nsiso]
  runtime_type = "io.containerd.nsiso.v1"
  pod_annotations = ["nsiso/*"]
  container_annotations = ["nsiso/*"]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nsiso.options]
    ConfigPath = %q
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  Root = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
`, policy, runcRoot, criPauseImage)
	return dir, cfg, nil
}

// importCRIImages builds the application and pause images and imports
// them into CRI's namespace.
func importCRIImages(ctx context.Context, ctd *testenv.Containerd, s criSetup) error {
	nctx, err := ctd.Namespace(ctx, criNamespace)
	if err != nil {
		return err
	}
	for ref, cmd := range map[string][]string{criAppImage: {"/bin/true"}, criPauseImage: {"/bin/sleep", "2147483647"}} {
		var buf bytes.Buffer
		if err := testenv.BuildBusyboxImageWithCmd(ctx, s.deps.Busybox, nil, ref, cmd, &buf); err != nil {
			return err
		}
		p := filepath.Join(s.scratch, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return err
		}
		if _, err := testenv.ImportImage(nctx, ctd.Client(), p); err != nil {
			return err
		}
	}
	return nil
}

// waitForCRIImages waits until CRI sees both images: it learns of
// imported images from containerd's events.
func waitForCRIImages(ctx context.Context, img runtimeapi.ImageServiceClient) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, ref := range []string{criAppImage, criPauseImage} {
		for {
			st, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err == nil && st.Image != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRI does not see image %s (%v)", ref, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// subscribe reads CRI's container events and closes a container's stopped
// channel when its CONTAINER_STOPPED_EVENT arrives.
func (c *criEnv) subscribe(ctx context.Context) error {
	ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	stream, err := c.rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		return fmt.Errorf("CRI container events: %w", err)
	}
	c.evDone = make(chan struct{})
	go func() {
		defer close(c.evDone)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			if ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
				c.markStopped(ev.ContainerId)
			}
		}
	}()
	return nil
}

// stoppedChan returns the channel closed when container id stops; the
// event may come before the waiter asks, or after.
func (c *criEnv) stoppedChan(id string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.stopped[id]
	if !ok {
		ch = make(chan struct{})
		c.stopped[id] = ch
	}
	return ch
}

// markStopped closes id's channel, once: CRI may report a stop twice.
func (c *criEnv) markStopped(id string) {
	ch := c.stoppedChan(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (c *criEnv) forget(id string) {
	c.mu.Lock()
	delete(c.stopped, id)
	c.mu.Unlock()
}

func (c *criEnv) close() error {
	if c.cancel != nil {
		c.cancel()
		<-c.evDone
	}
	if c.conn != nil {
		c.conn.Close()
	}
	return c.ctd.Stop()
}

// podSpec is a pod to run: its handler and annotations, and those of its
// one container.
type podSpec struct {
	handler string
	podAnn  map[string]string
	ctrAnn  map[string]string
	// cmd is the container's command; nil runs the image's /bin/true.
	cmd []string
}

func (c *criEnv) podConfig(p podSpec) *runtimeapi.PodSandboxConfig {
	name := fmt.Sprintf("bench-%s-%d", p.handler, c.seq.Add(1))
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: "default"},
		LogDirectory: filepath.Join(c.logDir, name),
		Annotations:  p.podAnn,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			// The node's network: no CNI is needed, and both handlers get
			// the same.
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER}},
		},
	}
}

// pod is a running pod sandbox.
type pod struct {
	id  string
	cfg *runtimeapi.PodSandboxConfig
}

// runPod runs a sandbox; create and start its container: the create
// latency of a pod, stage by stage.
func (c *criEnv) runPod(ctx context.Context, p podSpec) (pod, string, stageSample, error) {
	cfg := c.podConfig(p)
	t0 := time.Now()
	resp, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: p.handler})
	if err != nil {
		return pod{}, "", nil, fmt.Errorf("RunPodSandbox (%s): %w", p.handler, err)
	}
	pd := pod{id: resp.PodSandboxId, cfg: cfg}
	t1 := time.Now()
	ctr, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pd.id,
		Config: &runtimeapi.ContainerConfig{
			Metadata:    &runtimeapi.ContainerMetadata{Name: "app"},
			Image:       &runtimeapi.ImageSpec{Image: criAppImage},
			Command:     p.cmd,
			LogPath:     "app.log",
			Annotations: p.ctrAnn,
		},
		SandboxConfig: cfg,
	})
	if err != nil {
		return pd, "", nil, fmt.Errorf("CreateContainer (%s): %w", p.handler, err)
	}
	t2 := time.Now()
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		return pd, ctr.ContainerId, nil, fmt.Errorf("StartContainer (%s): %w", p.handler, err)
	}
	t3 := time.Now()
	return pd, ctr.ContainerId, stageSample{ms(t1.Sub(t0)), ms(t2.Sub(t1)), ms(t3.Sub(t2))}, nil
}

// removePod stops and removes a sandbox with its containers.
func (c *criEnv) removePod(ctx context.Context, pd pod) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	_, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pd.id})
	if err == nil {
		_, err = c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pd.id})
	}
	if err != nil {
		return fmt.Errorf("remove pod %s: %w", pd.id, err)
	}
	return nil
}

var criStages = []string{"RunPodSandbox", "CreateContainer", "StartContainer", "exit", "StopPodSandbox", "RemovePodSandbox"}

// podLife is a pod's whole life through CRI: a sandbox, a /bin/true
// container created and started in it, its exit, and the sandbox stopped
// and removed.
func (c *criEnv) podLife(ctx context.Context, p podSpec) (stageSample, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	pd, ctrID, s, err := c.runPod(ctx, p)
	if err != nil {
		if pd.id != "" {
			err = errors.Join(err, c.removePod(ctx, pd))
		}
		return nil, err
	}
	defer c.forget(ctrID)
	t3 := time.Now()
	select {
	case <-c.stoppedChan(ctrID):
	case <-ctx.Done():
		return nil, errors.Join(fmt.Errorf("container %s did not exit: %w", ctrID, ctx.Err()), c.removePod(ctx, pd))
	}
	t4 := time.Now()
	if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pd.id}); err != nil {
		return nil, errors.Join(fmt.Errorf("StopPodSandbox: %w", err), c.removePod(ctx, pd))
	}
	t5 := time.Now()
	if _, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pd.id}); err != nil {
		return nil, fmt.Errorf("RemovePodSandbox: %w", err)
	}
	t6 := time.Now()
	c.forget(pd.id)
	return append(s, ms(t4.Sub(t3)), ms(t5.Sub(t4)), ms(t6.Sub(t5))), nil
}

// criModes are the cri benchmark's modes: the pod's spec as CRI makes it,
// and a pod asking nsiso for a /dev/shm size (which the runc handler does
// not read; its pods keep containerd's 64Mi).
var criModes = []struct {
	name, what string
	ann        map[string]string
}{
	{"cri pod", "a pod's life through CRI: RunPodSandbox, CreateContainer, StartContainer, exit, StopPodSandbox, RemovePodSandbox; nsiso handler against runc handler", nil},
	{"cri pod shm", "the same with the pod annotation nsiso/shm-size=" + criShmSize + " (nsiso resizes the pod's /dev/shm)", map[string]string{specmod.AnnotationShmSize: criShmSize}},
}

// benchCRI is the cri benchmark: paired pod lifecycles, nsiso's handler
// and runc's, in each mode.
func benchCRI(ctx context.Context, s criSetup, n, warmup int) (_ []*pairedResult, retErr error) {
	c, err := startCRI(ctx, s)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := c.close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	var out []*pairedResult
	for _, m := range criModes {
		handlers := []string{"nsiso", "runc"}
		res, err := runPaired(ctx, m.name, m.what, criStages, handlers, n, warmup, func(ctx context.Context, side, _ int) (stageSample, error) {
			return c.podLife(ctx, podSpec{handler: handlers[side], podAnn: m.ann})
		})
		if err != nil {
			return out, fmt.Errorf("%s: %w", m.name, err)
		}
		out = append(out, res)
	}
	return out, nil
}
