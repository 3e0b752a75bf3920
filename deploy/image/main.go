// Command image builds the installer image of deploy/ (`make image`): an
// OCI image layout archive, loadable with `ctr images import` and
// pushable with any OCI tool, holding busybox and the static nsiso and
// containerd-shim-nsiso-v1. No registry is involved: the image is made from
// the local busybox-static, the same way the test images are.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsiso/nsiso/testenv"
)

func main() {
	busybox := flag.String("busybox", testenv.DefaultBusybox, "a statically linked busybox (Debian: busybox-static)")
	bin := flag.String("bin", "_output/bin", "the directory holding the static nsiso and containerd-shim-nsiso-v1")
	ref := flag.String("ref", "", "the image reference stored in the archive")
	out := flag.String("o", "_output/nsiso-installer.tar", "the archive to write")
	flag.Parse()
	if err := build(*busybox, *bin, *ref, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("image: %s in %s\n", *ref, *out)
}

func build(busybox, bin, ref, out string) error {
	if ref == "" {
		return fmt.Errorf("-ref is required")
	}
	if _, err := os.Stat(busybox); err != nil {
		return fmt.Errorf("%w (apt-get install busybox-static, or make deps)", err)
	}
	files := map[string]string{}
	for _, name := range []string{"nsiso", "containerd-shim-nsiso-v1"} {
		p := filepath.Join(bin, name)
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (make build)", err)
		}
		files["/usr/local/bin/"+name] = p
	}
	var buf bytes.Buffer
	if err := testenv.BuildBusyboxImageWithCmd(context.Background(), busybox, files, ref,
		[]string{"/usr/local/bin/nsiso", "help"}, &buf); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
