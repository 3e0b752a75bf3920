//go:build linux

// Command nsiso is nsiso's node tool. Its subcommand audit reports, for
// every container of a containerd node, whether it shares the host's IPC
// or PID namespace or /dev/shm (see package audit).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/nsiso/nsiso/audit"
	"github.com/nsiso/nsiso/nodeinstall"
)

const usage = `Usage: nsiso <command> [flags]

Commands:
  audit     report every container's IPC/PID namespace and /dev/shm; fail on
            host sharing (CIS Docker Benchmark 5.16, and 5.15 with --pid)
  install   put the shim on this node and register nsiso's CRI runtime handler
  uninstall take back what install added, byte for byte
  help      show this help, or a command's: nsiso help audit
  version   print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return audit.ExitError
	}
	switch args[0] {
	case "audit":
		return audit.Main(ctx, args[1:], stdout, stderr)
	case "install", "uninstall":
		return nodeinstall.Main(ctx, args[0] == "uninstall", args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && args[1] == "audit" {
			return audit.Main(ctx, []string{"-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "nsiso %s %s\n", version(), runtime.Version())
		return 0
	}
	fmt.Fprintf(stderr, "nsiso: unknown command %+q\n\n%s", args[0], usage)
	return audit.ExitError
}

// version is the module version the binary was built from, which the go
// command stamps from the repository's tag and commit.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
