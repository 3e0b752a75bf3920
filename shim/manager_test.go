package shim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// containerd asks a runtime for its info (runc's features) with the
// handler's options; runc.v2's manager reads only runc's options type, so
// nsiso's must arrive translated.
func TestInfoTranslatesOptions(t *testing.T) {
	a, err := typeurl.MarshalAnyToProto(&runtimeoptions.Options{ConfigBody: []byte("binary_name = \"true\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	info, err := NewManager().Info(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != RuntimeName {
		t.Errorf("name %q", info.Name)
	}
	v, err := typeurl.UnmarshalAny(info.Options)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := v.(*options.Options); !ok || o.BinaryName != "true" {
		t.Fatalf("options %T %+v, want runc options naming binary \"true\"", v, v)
	}
}

// Only a shim named after the container itself is asked to shut down in
// `shim delete`; a group's shim is shared. The first group label runc.v2
// knows decides, as in its Start.
func TestOwnShim(t *testing.T) {
	const runcGroup, sandbox = "io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want bool
	}{
		{"no labels", nil, true},
		{"other annotations", map[string]string{"nsiso/parent": "p"}, true},
		{"pod sandbox", map[string]string{sandbox: "c"}, true},
		{"pod container", map[string]string{sandbox: "sb"}, false},
		{"runc group of its own", map[string]string{runcGroup: "c"}, true},
		{"runc group", map[string]string{runcGroup: "g"}, false},
		{"runc group before sandbox", map[string]string{runcGroup: "g", sandbox: "c"}, false},
		{"own runc group before sandbox", map[string]string{runcGroup: "c", sandbox: "sb"}, true},
		{"empty group", map[string]string{runcGroup: ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ownShim(tc.ann, "c"); got != tc.want {
				t.Errorf("ownShim(%v, c) = %v, want %v", tc.ann, got, tc.want)
			}
		})
	}
}

// The delete command reads nothing from the log FIFO; it only opens the
// read end, so that a shim blocked opening the write end goes on. It opens
// nothing but a FIFO, and no symlink.
func TestOpenLogFIFO(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, bundle string)
		ok   bool
	}{
		{"fifo", func(t *testing.T, b string) { mkfifo(t, filepath.Join(b, "log")) }, true},
		{"missing", func(t *testing.T, b string) {}, false},
		{"regular file", func(t *testing.T, b string) {
			if err := os.WriteFile(filepath.Join(b, "log"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"symlink to a fifo", func(t *testing.T, b string) {
			mkfifo(t, filepath.Join(b, "elsewhere"))
			if err := os.Symlink("elsewhere", filepath.Join(b, "log")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"directory", func(t *testing.T, b string) {
			if err := os.Mkdir(filepath.Join(b, "log"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle := t.TempDir()
			tc.make(t, bundle)
			f, err := openLogFIFO(bundle)
			if !tc.ok {
				if err == nil {
					f.Close()
					t.Fatal("opened")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// A writer's open waits for a reader; without waiting, it fails
			// (ENXIO) unless there is one.
			w, err := os.OpenFile(filepath.Join(bundle, "log"), os.O_WRONLY|unix.O_NONBLOCK, 0)
			if err != nil {
				t.Fatalf("a shim opening the log would wait: %v", err)
			}
			w.Close()
		})
	}
}

func mkfifo(t *testing.T, p string) {
	t.Helper()
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
}
