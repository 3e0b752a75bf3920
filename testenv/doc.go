// Package testenv is the shared environment for the integration tests,
// the demo and the benchmarks: a private containerd daemon, a busybox image
// built from the host's busybox, and helpers around them.
//
// # Dependencies
//
// `make deps` (scripts/install-deps.sh) installs busybox-static,
// util-linux and procps from apt and builds runc, containerd, ctr and
// containerd-shim-runc-v2 from source into _output/deps/bin. Versions are
// chosen with RUNC_VERSION and CONTAINERD_VERSION, the directory with BIN.
// FindDeps locates the result (or $NSISO_DEPS_BIN); its error wraps
// ErrDepsMissing, which tests turn into a skip:
//
//	deps, err := testenv.FindDeps()
//	if errors.Is(err, testenv.ErrDepsMissing) {
//		t.Skip(err)
//	}
//
// Everything here needs root, real cgroups and an overlay- or at least
// bind-mount-capable file system under os.TempDir().
//
// # A private daemon
//
// StartContainerd runs containerd with a generated config that keeps root,
// state, sockets, shim sockets, the opt and NRI directories and the stdio
// FIFO directory (Containerd.FIFODir) inside one directory, so it can run
// next to a node's own containerd. The CRI plugins are disabled unless
// Options.EnableCRI is set, which makes start-up take well under a second.
// Put the directories holding runc, containerd-shim-runc-v2 and
// containerd-shim-nsiso-v1 in Options.PathPrepend: containerd resolves the
// runtime io.containerd.nsiso.v1 to the binary containerd-shim-nsiso-v1 on
// its PATH, and shims inherit that PATH to find runc.
//
//	ctd, err := testenv.StartContainerd(ctx, testenv.Options{
//		Binary:      deps.Containerd,
//		PathPrepend: []string{shimDir, deps.BinDir},
//	})
//	defer ctd.Stop()
//	ctx, err = ctd.Namespace(ctx, "nsiso-test")
//
// Containerd.Stop kills and deletes all tasks, stops the daemon, kills any
// shim or container process that survived, unmounts what is left under the
// directory and removes it. Two spots outside the directory remain where
// the configuration cannot reach: containerd 2.2 and older, and shims built
// with its shim library, put shim sockets in /run/containerd/s (Stop removes the ones of this daemon),
// and the runc shim keeps runc state in /run/containerd/runc unless the
// container is created with Containerd.RuncOptions. runc also creates the
// "/<namespace>/<id>" cgroups; Stop removes the empty ones it left.
//
// # The image
//
// BuildBusyboxImage writes an OCI image layout tar with /bin/busybox, a
// symlink per applet and any extra static binaries (for instance the
// ipcmk helper from BuildIpcmk, because busybox has no ipcmk or ipcs;
// read /proc/sysvipc/shm instead of ipcs). ImportImage loads it into the
// daemon and unpacks it.
//
//	var buf bytes.Buffer
//	err = testenv.BuildBusyboxImage(ctx, deps.Busybox,
//		map[string]string{"/usr/local/bin/ipcmk": ipcmkPath},
//		"docker.io/library/nsiso-busybox:test", &buf)
//	// write buf to a file, then:
//	img, err := testenv.ImportImage(ctx, ctd.Client(), tarPath)
//
// Containers then use the usual client calls, e.g. client.WithNewSnapshot,
// client.WithNewSpec(oci.WithImageConfig(img), ...) and
// cio.NewCreator(cio.WithStreams(...), cio.WithFIFODir(ctd.FIFODir())).
package testenv
