package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationContainerdImageName is the index.json annotation containerd's
// importer reads to name an image. It is spelled out here rather than taken
// from containerd so that the image builder depends only on image-spec.
const AnnotationContainerdImageName = "io.containerd.image.name"

// ImagePath is the PATH set in the image config built by BuildBusyboxImage.
const ImagePath = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

// imageEpoch is the mtime of every tar entry, so that the same inputs always
// produce byte-identical blobs and therefore the same image digest.
var imageEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// layerEntry is one file system object of the rootfs layer.
type layerEntry struct {
	name     string // relative path without leading slash
	typeflag byte
	mode     int64
	linkname string
	hostPath string // regular files: where the content comes from
	content  []byte // regular files: inline content when hostPath is empty
}

// BuildBusyboxImage writes an OCI image layout, as a tar stream, to w. The
// image has a single gzip layer holding busyboxPath as /bin/busybox, one
// /bin/<applet> symlink for every applet the binary lists, the usual top
// level directories, a root-only /etc/passwd and /etc/group, and extraFiles
// (container path -> host file, installed with mode 0755, parent directories
// created as needed; an extra file replaces a busybox entry of the same
// path).
//
// index.json names the manifest ref through both the OCI ref-name
// annotation and containerd's image-name annotation, so containerd's import
// stores it under exactly that name. Output is deterministic: entries are
// sorted and all timestamps fixed.
//
// busyboxPath must be a statically linked busybox runnable on this host
// (it is executed to list its applets), so the image platform is linux and
// the host architecture.
func BuildBusyboxImage(ctx context.Context, busyboxPath string, extraFiles map[string]string, ref string, w io.Writer) error {
	return BuildBusyboxImageWithCmd(ctx, busyboxPath, extraFiles, ref, []string{"/bin/sh"}, w)
}

// BuildBusyboxImageWithCmd is BuildBusyboxImage with another image Cmd,
// e.g. a long sleep for an image that serves as a CRI pod sandbox ("pause")
// image, whose Cmd must not exit.
func BuildBusyboxImageWithCmd(ctx context.Context, busyboxPath string, extraFiles map[string]string, ref string, cmd []string, w io.Writer) error {
	if ref == "" {
		return fmt.Errorf("build busybox image: empty image reference")
	}
	applets, err := busyboxApplets(ctx, busyboxPath)
	if err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	entries, err := rootfsEntries(busyboxPath, applets, extraFiles)
	if err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}

	layer, diffID, err := buildLayer(entries)
	if err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	layerDesc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest:    digest.FromBytes(layer),
		Size:      int64(len(layer)),
	}

	created := imageEpoch
	config := ocispec.Image{
		Created: &created,
		Platform: ocispec.Platform{
			OS:           "linux",
			Architecture: runtime.GOARCH,
		},
		Config: ocispec.ImageConfig{
			Env:        []string{"PATH=" + ImagePath},
			Cmd:        cmd,
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{
			Type:    "layers",
			DiffIDs: []digest.Digest{diffID},
		},
	}
	configJSON, configDesc, err := jsonBlob(ocispec.MediaTypeImageConfig, config)
	if err != nil {
		return fmt.Errorf("build busybox image: config: %w", err)
	}

	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	}
	manifestJSON, manifestDesc, err := jsonBlob(ocispec.MediaTypeImageManifest, manifest)
	if err != nil {
		return fmt.Errorf("build busybox image: manifest: %w", err)
	}
	manifestDesc.Platform = &ocispec.Platform{OS: config.OS, Architecture: config.Architecture}
	manifestDesc.Annotations = map[string]string{
		ocispec.AnnotationRefName:     ref,
		AnnotationContainerdImageName: ref,
	}

	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("build busybox image: marshal index: %w", err)
	}
	layoutJSON, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return fmt.Errorf("build busybox image: marshal oci-layout: %w", err)
	}

	blobs := map[digest.Digest][]byte{
		layerDesc.Digest:    layer,
		configDesc.Digest:   configJSON,
		manifestDesc.Digest: manifestJSON,
	}
	if err := writeLayout(w, layoutJSON, indexJSON, blobs); err != nil {
		return fmt.Errorf("build busybox image: %w", err)
	}
	return nil
}

// jsonBlob marshals v as a blob of the given media type and describes it.
func jsonBlob(mediaType string, v any) ([]byte, ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return data, ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, nil
}

// busyboxApplets runs busybox --list, which reports the applets compiled
// into this particular binary; a hard-coded list would drift between
// distribution builds.
func busyboxApplets(ctx context.Context, busyboxPath string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list applets of %s: %w", busyboxPath, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		// Guard against anything that would escape /bin.
		if a == "busybox" || strings.Contains(a, "/") || a == "." || a == ".." {
			continue
		}
		applets = append(applets, a)
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets", busyboxPath)
	}
	return applets, nil
}

// rootfsEntries lays out the rootfs and returns its entries sorted by name,
// each directory before its contents.
func rootfsEntries(busyboxPath string, applets []string, extraFiles map[string]string) ([]layerEntry, error) {
	byName := map[string]layerEntry{}
	dir := func(name string, mode int64) {
		byName[name] = layerEntry{name: name, typeflag: tar.TypeDir, mode: mode}
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/local", "usr/local/bin"} {
		dir(d, 0o755)
	}
	dir("root", 0o700)
	dir("tmp", 0o1777)

	byName["bin/busybox"] = layerEntry{name: "bin/busybox", typeflag: tar.TypeReg, mode: 0o755, hostPath: busyboxPath}
	for _, a := range applets {
		name := "bin/" + a
		byName[name] = layerEntry{name: name, typeflag: tar.TypeSymlink, mode: 0o777, linkname: "busybox"}
	}
	byName["etc/passwd"] = layerEntry{name: "etc/passwd", typeflag: tar.TypeReg, mode: 0o644,
		content: []byte("root:x:0:0:root:/root:/bin/sh\n")}
	byName["etc/group"] = layerEntry{name: "etc/group", typeflag: tar.TypeReg, mode: 0o644,
		content: []byte("root:x:0:\n")}

	for ctrPath, hostPath := range extraFiles {
		if !path.IsAbs(ctrPath) {
			return nil, fmt.Errorf("extra file %q: container path must be absolute", ctrPath)
		}
		name := strings.TrimPrefix(path.Clean(ctrPath), "/")
		if name == "" {
			return nil, fmt.Errorf("extra file %q: not a file path", ctrPath)
		}
		st, err := os.Stat(hostPath)
		if err != nil {
			return nil, fmt.Errorf("extra file %q: %w", ctrPath, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("extra file %q: %s is not a regular file", ctrPath, hostPath)
		}
		if e, ok := byName[name]; ok && e.typeflag == tar.TypeDir {
			return nil, fmt.Errorf("extra file %q: conflicts with directory /%s", ctrPath, name)
		}
		byName[name] = layerEntry{name: name, typeflag: tar.TypeReg, mode: 0o755, hostPath: hostPath}
		for p := path.Dir(name); p != "."; p = path.Dir(p) {
			e, ok := byName[p]
			if !ok {
				dir(p, 0o755)
				continue
			}
			if e.typeflag != tar.TypeDir {
				return nil, fmt.Errorf("extra file %q: parent /%s is not a directory", ctrPath, p)
			}
		}
	}

	entries := make([]layerEntry, 0, len(byName))
	for _, e := range byName {
		entries = append(entries, e)
	}
	// Plain string order would put "bin/[" after "bin" but also "usr-x"
	// before "usr/..."; comparing path components keeps parents first.
	sort.Slice(entries, func(i, j int) bool {
		return lessPath(entries[i].name, entries[j].name)
	})
	return entries, nil
}

// lessPath orders paths component by component.
func lessPath(a, b string) bool {
	ac, bc := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(ac) && i < len(bc); i++ {
		if ac[i] != bc[i] {
			return ac[i] < bc[i]
		}
	}
	return len(ac) < len(bc)
}

// buildLayer returns the gzip-compressed layer and the digest of its
// uncompressed tar (the diff ID the image config must list).
func buildLayer(entries []layerEntry) ([]byte, digest.Digest, error) {
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, "", fmt.Errorf("gzip layer: %w", err)
	}
	// The gzip header carries no name and a zero mtime, so it is stable.
	diffHash := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diffHash))
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.typeflag,
			Name:     e.name,
			Linkname: e.linkname,
			Mode:     e.mode,
			ModTime:  imageEpoch,
			Uname:    "root",
			Gname:    "root",
		}
		var data []byte
		if e.typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if e.typeflag == tar.TypeReg {
			data = e.content
			if e.hostPath != "" {
				data, err = os.ReadFile(e.hostPath)
				if err != nil {
					return nil, "", fmt.Errorf("read %s for /%s: %w", e.hostPath, e.name, err)
				}
			}
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", fmt.Errorf("write layer entry /%s: %w", e.name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, "", fmt.Errorf("write layer entry /%s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("close layer tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("close layer gzip: %w", err)
	}
	diffID := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(diffHash.Sum(nil)))
	return gz.Bytes(), diffID, nil
}

// writeLayout writes the OCI image layout as a tar stream.
func writeLayout(w io.Writer, layoutJSON, indexJSON []byte, blobs map[digest.Digest][]byte) error {
	tw := tar.NewWriter(w)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: imageEpoch})
	}
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: imageEpoch,
		}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}

	if err := file(ocispec.ImageLayoutFile, layoutJSON); err != nil {
		return fmt.Errorf("write %s: %w", ocispec.ImageLayoutFile, err)
	}
	if err := file(ocispec.ImageIndexFile, indexJSON); err != nil {
		return fmt.Errorf("write %s: %w", ocispec.ImageIndexFile, err)
	}
	if err := dir(ocispec.ImageBlobsDir + "/"); err != nil {
		return fmt.Errorf("write blobs dir: %w", err)
	}
	if err := dir(ocispec.ImageBlobsDir + "/sha256/"); err != nil {
		return fmt.Errorf("write blobs dir: %w", err)
	}
	digests := make([]digest.Digest, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i] < digests[j] })
	for _, d := range digests {
		name := path.Join(ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
		if err := file(name, blobs[d]); err != nil {
			return fmt.Errorf("write blob %s: %w", d, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close image tar: %w", err)
	}
	return nil
}
