package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// These benchmarks put numbers on nsiso's share of a Create on the shim's
// side: the config.json round trip, and the whole prepare step with its
// mounts. They run with `make bench`; no test asserts their numbers.

const benchNS = "bench"

// benchConfigJSON is a bundle's config.json as containerd writes it for a
// container of containerd's default spec, with the given annotations.
func benchConfigJSON(b *testing.B, ann map[string]string) []byte {
	b.Helper()
	ctx := namespaces.WithNamespace(context.Background(), benchNS)
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "job-7"},
		oci.WithEnv([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}),
		oci.WithProcessArgs("sh", "-c", "exec my-job --threads 4"),
		oci.WithAnnotations(ann))
	if err != nil {
		b.Fatal(err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// benchDir is a directory to measure file I/O in, named by its file
// system's type: write syncs the file, and a sync costs what the device
// makes it cost.
type benchDir struct{ fs, path string }

// benchDirs returns the test's temporary directory and, as root, a tmpfs,
// which is where containerd keeps bundles on most systems (/run).
func benchDirs(b *testing.B) []benchDir {
	tmp := b.TempDir()
	dirs := []benchDir{{testenv.FSType(tmp), tmp}}
	if os.Geteuid() == 0 && dirs[0].fs != "tmpfs" {
		mnt := b.TempDir()
		if err := unix.Mount("bench", mnt, "tmpfs", 0, "size=16m"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
		dirs = append(dirs, benchDir{"tmpfs", mnt})
	}
	return dirs
}

func BenchmarkBundleSpec(b *testing.B) {
	data := benchConfigJSON(b, nil)
	for _, d := range benchDirs(b) {
		fs, dir := d.fs, d.path
		if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		b.Run("read/"+fs, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := readBundleSpec(dir); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("write/"+fs, func(b *testing.B) {
			bs, err := readBundleSpec(dir)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := bs.write(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchParent is a stand-in for a running parent container: a process in
// IPC, PID and mount namespaces of its own whose /dev/shm is a bind of a
// host directory, as an nsiso parent's is.
type benchParent struct {
	pid   int
	start uint64
	shm   string
}

func startBenchParent(b *testing.B) benchParent {
	b.Helper()
	p := benchParent{shm: b.TempDir()}
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("mount --make-rprivate / && mount --bind %s /dev/shm && exec sleep 3600", p.shm))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWIPC | unix.CLONE_NEWPID | unix.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p.pid = cmd.Process.Pid
	want, err := hostns.Stat(p.shm)
	if err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got, err := hostns.Stat(fmt.Sprintf("/proc/%d/root/dev/shm", p.pid)); err == nil && got == want {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the stand-in parent did not bind its /dev/shm")
		}
	}
	st, err := procfs.ReadStat(p.pid)
	if err != nil {
		b.Fatal(err)
	}
	p.start = st.StartTime
	return p
}

// benchTasks answers as containerd would for the stand-in parent.
type benchTasks map[string]uint32

func (t benchTasks) initPID(_ context.Context, ns, id string) (uint32, error) {
	if pid, ok := t[ns+"/"+id]; ok {
		return pid, nil
	}
	return 0, errNoTask
}

// register makes what nsiso reads of a parent: its task, as containerd
// reports it, and its bundle next to its children's.
func (p benchParent) register(b *testing.B, id string, tasks benchTasks, bundles string) {
	b.Helper()
	tasks[benchNS+"/"+id] = uint32(p.pid)
	// nsiso shares only a /dev/shm it owns: a private parent's tmpfs in
	// its bundle's nsiso directory.
	own := ownShmDir(filepath.Join(bundles, id))
	if err := os.MkdirAll(own, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount(p.shm, own, "", unix.MS_BIND, ""); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = unix.Unmount(own, unix.MNT_DETACH) })
	cfg, _ := json.Marshal(specs.Spec{Mounts: []specs.Mount{{Destination: specmod.ShmPath, Type: "bind", Source: own, Options: []string{"rbind", "rw"}}}})
	writeFile(b, filepath.Join(bundles, id, "config.json"), cfg)
}

func writeFile(b *testing.B, path string, data []byte) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPrepare is everything nsiso adds to one container on the
// shim's side: prepare (options, config file, policy, parent pins, a
// private container's /dev/shm mount, config.json rewrite) and the
// clean-up at Delete, with a fresh service per container, as each
// container gets a fresh shim. The bundle is on each file system of
// benchDirs.
func BenchmarkPrepare(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("prepare mounts, which needs root")
	}
	const parentID, childID = "parent", "child"
	parent := startBenchParent(b)
	ctx := namespaces.WithNamespace(context.Background(), benchNS)
	for _, tc := range []struct {
		name string
		ann  map[string]string
	}{
		{"top-level", nil},
		{"top-level-private", map[string]string{specmod.AnnotationIPCMode: string(specmod.ModePrivate)}},
		{"nested-share-parent", map[string]string{
			specmod.AnnotationIPCMode: string(specmod.ModeShareParent),
			specmod.AnnotationPIDMode: string(specmod.ModeShareParent),
			specmod.AnnotationParent:  parentID,
		}},
	} {
		data := benchConfigJSON(b, tc.ann)
		for _, d := range benchDirs(b) {
			fs, root := d.fs, d.path
			tasks := benchTasks{}
			// Bundles of one containerd namespace are siblings, which is
			// how nsiso finds a parent's.
			bundles := filepath.Join(root, benchNS)
			parent.register(b, parentID, tasks, bundles)
			cfg := filepath.Join(root, "nsiso.toml")
			writeFile(b, cfg, []byte("root = \"/run/containerd/runc\"\n"))
			bundle := filepath.Join(bundles, childID)
			// As containerd makes it: the rootfs nsiso checks the
			// container's root against, and config.json.
			if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
				b.Fatal(err)
			}
			b.Run(tc.name+"/"+fs, func(b *testing.B) {
				b.Setenv(ConfigPathEnv, cfg)
				b.Cleanup(func() { _ = cleanupState(bundle, true) })
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					writeFile(b, filepath.Join(bundle, "config.json"), data)
					b.StartTimer()
					s := &service{tasks: tasks}
					p, err := s.prepare(ctx, &taskAPI.CreateTaskRequest{ID: childID, Bundle: bundle})
					if err != nil {
						b.Fatal(err)
					}
					p.held.close()
					if err := cleanupState(bundle, p.mounted); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPrepareParts splits prepare into its costly steps, to show
// where its time goes.
func BenchmarkPrepareParts(b *testing.B) {
	cfg := filepath.Join(b.TempDir(), "nsiso.toml")
	writeFile(b, cfg, []byte("root = \"/run/containerd/runc\"\n"))
	b.Setenv(ConfigPathEnv, cfg)

	b.Run("options-from-config-file", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := resolveOptions(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("host-namespaces-first-use", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var h hostns.Checker
			if _, err := h.Namespace(specs.IPCNamespace); err != nil {
				b.Fatal(err)
			}
		}
	})
	if os.Geteuid() != 0 {
		return
	}
	parent := startBenchParent(b)
	tmpfs := &specmod.Tmpfs{Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}, Size: 64 << 20}
	req := specmod.Request{IPC: specmod.ModeShareParent, PID: specmod.ModeShareParent, Parent: "parent", ParentKey: specmod.AnnotationParent}
	need := specmod.Needs{IPC: true, Shm: true, PID: true}
	for _, d := range benchDirs(b) {
		tasks := benchTasks{}
		bundles := filepath.Join(d.path, benchNS)
		parent.register(b, "parent", tasks, bundles)
		bundle := filepath.Join(bundles, "child")
		if err := os.MkdirAll(bundle, 0o755); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cleanupState(bundle, true) })
		b.Run("own-shm-mount-and-cleanup/"+d.fs, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := mountOwnShm(bundle, tmpfs); err != nil {
					b.Fatal(err)
				}
				if err := cleanupState(bundle, true); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("pin-parent-and-cleanup/"+d.fs, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pinParent(context.Background(), req, "child", parentScope{namespace: benchNS, tasks: tasks, bundle: bundle}, need); err != nil {
					b.Fatal(err)
				}
				if err := cleanupState(bundle, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
