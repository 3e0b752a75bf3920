package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nsiso/nsiso/testenv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The images on the node; there is no registry, so pods name them with
// imagePullPolicy: Never (the installer's manifests say IfNotPresent).
const (
	appImage       = "docker.io/library/nsiso-busybox:e2e"
	pauseImage     = "docker.io/library/nsiso-pause:e2e"
	installerImage = "ghcr.io/nsiso/nsiso-installer:dev"
	criNamespace   = "k8s.io"
)

// installerArchiveEnv names the installer image archive `make image`
// wrote (default <repo>/_output/nsiso-installer.tar).
const installerArchiveEnv = "NSISO_INSTALLER_ARCHIVE"

// importImages loads the app, pause and installer images into CRI's
// namespace and waits until CRI lists them.
func (c *Cluster) importImages(ctx context.Context) error {
	nsCtx, err := c.Ctd.Namespace(ctx, criNamespace)
	if err != nil {
		return err
	}
	archives := []string{}
	for ref, cmd := range map[string][]string{appImage: {"/bin/sh"}, pauseImage: {"/bin/sleep", "2147483647"}} {
		p, err := c.h.BusyboxImage(ctx, ref, cmd)
		if err != nil {
			return err
		}
		archives = append(archives, p)
	}
	installer := os.Getenv(installerArchiveEnv)
	if installer == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return err
		}
		installer = filepath.Join(root, "_output", "nsiso-installer.tar")
	}
	archives = append(archives, installer)
	for _, p := range archives {
		if _, err := testenv.ImportImage(nsCtx, c.Ctd.Client(), p); err != nil {
			return fmt.Errorf("import %s: %w", p, err)
		}
	}
	conn, err := grpc.NewClient("unix://"+c.Ctd.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	img := runtimeapi.NewImageServiceClient(conn)
	for _, ref := range []string{appImage, pauseImage, installerImage} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err == nil && st.Image != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRI does not list image %s (%v)", ref, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}
