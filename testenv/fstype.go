package testenv

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FSType names the file system holding path ("tmpfs", "ext4", ...; the
// magic number in hex for others, "" when it cannot be read). Benchmarks
// report it because where containerd keeps its state changes what a mount
// or a write costs.
func FSType(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return ""
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	}
	return fmt.Sprintf("0x%x", st.Type)
}
