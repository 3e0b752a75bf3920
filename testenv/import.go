package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
)

// ImportImage imports the OCI image layout tar at tarPath (as written by
// BuildBusyboxImage) into the namespace of ctx and unpacks it into that
// namespace's default snapshotter (see Containerd.Namespace), so it is
// ready for client.WithNewSnapshot. When the tar names several images the
// first is returned.
func ImportImage(ctx context.Context, c *client.Client, tarPath string) (client.Image, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w", tarPath, err)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("import image %s: no named image in the archive", tarPath)
	}
	img := client.NewImage(c, imgs[0])
	// An empty name makes the client resolve the namespace's default
	// snapshotter label, falling back to its built-in default.
	if err := img.Unpack(ctx, ""); err != nil {
		return nil, fmt.Errorf("unpack image %s: %w", imgs[0].Name, err)
	}
	return img, nil
}

// RuncOptions returns io.containerd.runc.v2 runtime options that keep
// runc's state under Dir. Without them the runc shim uses
// /run/containerd/runc/<namespace>, where a container with the same
// namespace and id as one of a system containerd would collide. Pass them
// as client.WithRuntime("io.containerd.runc.v2", c.RuncOptions()).
func (c *Containerd) RuncOptions() *options.Options {
	return &options.Options{Root: filepath.Join(c.dir, "runc")}
}
