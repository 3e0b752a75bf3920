package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeBusybox writes a script that answers --list like busybox does, so the
// layout can be checked without the real binary.
func fakeBusybox(t *testing.T, applets ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "busybox")
	script := "#!/bin/sh\nprintf '%s\\n' " + strings.Join(quoteAll(applets), " ") + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = "'" + s + "'"
	}
	return out
}

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, r io.Reader) []tarEntry {
	t.Helper()
	tr := tar.NewReader(r)
	var out []tarEntry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar entry %s: %v", hdr.Name, err)
		}
		out = append(out, tarEntry{hdr, data})
	}
}

// parsedImage is an OCI layout tar taken apart and verified.
type parsedImage struct {
	layoutNames []string
	index       ocispec.Index
	manifest    ocispec.Manifest
	config      ocispec.Image
	layer       []tarEntry
}

func parseImage(t *testing.T, data []byte) parsedImage {
	t.Helper()
	var img parsedImage
	files := map[string][]byte{}
	for _, e := range readTar(t, bytes.NewReader(data)) {
		img.layoutNames = append(img.layoutNames, e.hdr.Name)
		if !e.hdr.ModTime.Equal(imageEpoch) {
			t.Errorf("layout entry %s: mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, imageEpoch)
		}
		if e.hdr.Typeflag == tar.TypeReg {
			files[e.hdr.Name] = e.data
		}
	}

	var layout ocispec.ImageLayout
	if err := json.Unmarshal(files["oci-layout"], &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		t.Fatalf("oci-layout = %q (%v)", files["oci-layout"], err)
	}
	// Every blob is stored under its own digest.
	for name, b := range files {
		if !strings.HasPrefix(name, "blobs/") {
			continue
		}
		want := "blobs/sha256/" + digest.FromBytes(b).Encoded()
		if name != want {
			t.Errorf("blob %s has digest %s", name, digest.FromBytes(b))
		}
	}
	blob := func(d ocispec.Descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/"+d.Digest.Algorithm().String()+"/"+d.Digest.Encoded()]
		if !ok {
			t.Fatalf("blob %s missing", d.Digest)
		}
		if int64(len(b)) != d.Size {
			t.Fatalf("blob %s: size %d, descriptor says %d", d.Digest, len(b), d.Size)
		}
		return b
	}

	if err := json.Unmarshal(files["index.json"], &img.index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(img.index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(img.index.Manifests))
	}
	if err := json.Unmarshal(blob(img.index.Manifests[0]), &img.manifest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if err := json.Unmarshal(blob(img.manifest.Config), &img.config); err != nil {
		t.Fatalf("config: %v", err)
	}
	if len(img.manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(img.manifest.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(img.manifest.Layers[0])))
	if err != nil {
		t.Fatalf("layer gzip: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("layer gzip: %v", err)
	}
	if len(img.config.RootFS.DiffIDs) != 1 || img.config.RootFS.DiffIDs[0] != digest.FromBytes(raw) {
		t.Fatalf("diff IDs %v, uncompressed layer is %s", img.config.RootFS.DiffIDs, digest.FromBytes(raw))
	}
	img.layer = readTar(t, bytes.NewReader(raw))
	return img
}

func TestBuildBusyboxImageLayout(t *testing.T) {
	bb := fakeBusybox(t, "sh", "cat", "[", "ls", "busybox")
	extra := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(extra, []byte("#!/bin/sh\necho tool\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const ref = "docker.io/library/nsiso-busybox:test"
	var buf bytes.Buffer
	err := BuildBusyboxImage(context.Background(), bb, map[string]string{
		"/usr/local/bin/tool": extra,
		"/opt/x/y/tool2":      extra,
	}, ref, &buf)
	if err != nil {
		t.Fatal(err)
	}
	img := parseImage(t, buf.Bytes())

	wantLayout := []string{"oci-layout", "index.json", "blobs/", "blobs/sha256/"}
	if got := img.layoutNames[:4]; strings.Join(got, ",") != strings.Join(wantLayout, ",") {
		t.Errorf("layout starts with %v, want %v", got, wantLayout)
	}
	if len(img.layoutNames) != 7 {
		t.Errorf("layout has %d entries, want 7 (3 blobs): %v", len(img.layoutNames), img.layoutNames)
	}

	m := img.index.Manifests[0]
	if m.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("index manifest media type %q", m.MediaType)
	}
	if m.Annotations[ocispec.AnnotationRefName] != ref || m.Annotations[AnnotationContainerdImageName] != ref {
		t.Errorf("index annotations %v, want both names = %s", m.Annotations, ref)
	}
	if img.manifest.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Errorf("layer media type %q", img.manifest.Layers[0].MediaType)
	}
	c := img.config
	if c.OS != "linux" || c.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", c.OS, c.Architecture)
	}
	if strings.Join(c.Config.Cmd, " ") != "/bin/sh" {
		t.Errorf("Cmd %v", c.Config.Cmd)
	}
	if len(c.Config.Env) != 1 || c.Config.Env[0] != "PATH="+ImagePath {
		t.Errorf("Env %v", c.Config.Env)
	}

	entries := map[string]*tar.Header{}
	content := map[string][]byte{}
	var names []string
	for _, e := range img.layer {
		name := strings.TrimSuffix(e.hdr.Name, "/")
		if _, dup := entries[name]; dup {
			t.Errorf("duplicate layer entry %s", name)
		}
		entries[name] = e.hdr
		content[name] = e.data
		names = append(names, name)
		if !e.hdr.ModTime.Equal(imageEpoch) || e.hdr.Uid != 0 || e.hdr.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d", name, e.hdr.ModTime, e.hdr.Uid, e.hdr.Gid)
		}
		// A directory must precede everything inside it.
		if dir := filepath.Dir(name); dir != "." {
			if _, ok := entries[dir]; !ok {
				t.Errorf("%s comes before its parent %s", name, dir)
			}
		}
	}
	for i := 1; i < len(names); i++ {
		if !lessPath(names[i-1], names[i]) {
			t.Errorf("entries out of order: %s before %s", names[i-1], names[i])
		}
	}

	wantDirs := map[string]int64{
		"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o755, "root": 0o700, "sys": 0o755,
		"tmp": 0o1777, "usr": 0o755, "usr/local": 0o755, "usr/local/bin": 0o755,
		"opt": 0o755, "opt/x": 0o755, "opt/x/y": 0o755,
	}
	for d, mode := range wantDirs {
		h, ok := entries[d]
		if !ok || h.Typeflag != tar.TypeDir || h.Mode != mode {
			t.Errorf("dir /%s: %+v, want mode %o", d, h, mode)
		}
	}
	bbData, _ := os.ReadFile(bb)
	if h := entries["bin/busybox"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || !bytes.Equal(content["bin/busybox"], bbData) {
		t.Errorf("/bin/busybox wrong: %+v", h)
	}
	for _, a := range []string{"sh", "cat", "[", "ls"} {
		if h := entries["bin/"+a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("/bin/%s: %+v, want symlink to busybox", a, h)
		}
	}
	for _, f := range []string{"usr/local/bin/tool", "opt/x/y/tool2"} {
		if h := entries[f]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || string(content[f]) != "#!/bin/sh\necho tool\n" {
			t.Errorf("/%s: %+v", f, h)
		}
	}
	if !strings.HasPrefix(string(content["etc/passwd"]), "root:x:0:0:") {
		t.Errorf("/etc/passwd = %q", content["etc/passwd"])
	}
	if !strings.HasPrefix(string(content["etc/group"]), "root:x:0:") {
		t.Errorf("/etc/group = %q", content["etc/group"])
	}
	// dirs + busybox + 4 applets + passwd + group + 2 extra files
	if want := len(wantDirs) + 1 + 4 + 2 + 2; len(entries) != want {
		t.Errorf("layer has %d entries, want %d: %v", len(entries), want, names)
	}
}

func TestBuildBusyboxImageDeterministic(t *testing.T) {
	bb := fakeBusybox(t, "sh", "cat")
	build := func() []byte {
		var buf bytes.Buffer
		if err := BuildBusyboxImage(context.Background(), bb, map[string]string{
			"/usr/local/bin/a": bb, "/usr/local/bin/b": bb, "/c": bb,
		}, "example.com/x:1", &buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first := build()
	for range 3 {
		if !bytes.Equal(first, build()) {
			t.Fatal("two builds from the same inputs differ")
		}
	}
}

func TestBuildBusyboxImageErrors(t *testing.T) {
	bb := fakeBusybox(t, "sh")
	ctx := context.Background()
	cases := map[string]struct {
		busybox string
		extra   map[string]string
		ref     string
	}{
		"empty ref":        {bb, nil, ""},
		"relative path":    {bb, map[string]string{"usr/bin/x": bb}, "r"},
		"missing file":     {bb, map[string]string{"/x": "/nonexistent/file"}, "r"},
		"file is a dir":    {bb, map[string]string{"/x": t.TempDir()}, "r"},
		"replaces a dir":   {bb, map[string]string{"/usr/local": bb}, "r"},
		"parent is a file": {bb, map[string]string{"/bin/sh/x": bb}, "r"},
		"no busybox":       {"/nonexistent/busybox", nil, "r"},
		"no applets":       {fakeBusybox(t), nil, "r"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := BuildBusyboxImage(ctx, tc.busybox, tc.extra, tc.ref, io.Discard); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestBuildBusyboxImageRealBusybox checks the applet list of the real
// binary ends up in the image.
func TestBuildBusyboxImageRealBusybox(t *testing.T) {
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skipf("%s not installed (run `make deps`)", DefaultBusybox)
	}
	var buf bytes.Buffer
	if err := BuildBusyboxImage(context.Background(), DefaultBusybox, nil, "r", &buf); err != nil {
		t.Fatal(err)
	}
	img := parseImage(t, buf.Bytes())
	have := map[string]bool{}
	for _, e := range img.layer {
		have[e.hdr.Name] = true
	}
	for _, a := range []string{"sh", "cat", "echo", "sleep", "ls"} {
		if !have["bin/"+a] {
			t.Errorf("applet /bin/%s missing", a)
		}
	}
}
