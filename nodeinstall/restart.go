package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// restarter restarts the node's containerd. containerd reads its config
// only when it starts and has no reload: SIGHUP is not handled and ends the
// daemon like any unhandled signal, with no supervisor to bring it back on
// a host without one. Running containers survive a restart either way:
// their shims are not the daemon's children and reconnect.
type restarter struct {
	root *hostRoot
	// unit is the systemd unit, used when the host runs systemd and
	// command is empty.
	unit string
	// command is an operator's restart command, run with sh -c.
	command string
	stdout  io.Writer
}

// restart restarts containerd and returns how.
func (r restarter) restart(ctx context.Context) (string, error) {
	if r.command != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", r.command)
		cmd.Stdout, cmd.Stderr = r.stdout, r.stdout
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("restart command %q: %w", r.command, err)
		}
		return "ran " + strconv.Quote(r.command), nil
	}
	// sd_booted(): systemd is the host's init when this directory exists.
	if _, err := r.root.stat("/run/systemd/system"); err != nil {
		return "", fmt.Errorf("cannot restart containerd: the host does not run systemd (%s/run/systemd/system is absent) and no --restart-command was given; "+
			"containerd has no config reload (SIGHUP stops it), so restart it with your service manager, e.g. --restart-command 'rc-service containerd restart'", trimRoot(r.root.path))
	}
	if err := r.restartUnit(ctx); err != nil {
		return "", err
	}
	return "restarted systemd unit " + r.unit, nil
}

// restartUnit asks systemd over its private socket, which works alike on
// the node and from a container that has the host's root mounted: systemctl
// refuses to act from a chroot, and Go cannot enter another mount
// namespace, so neither `chroot systemctl` nor an nsenter would.
func (r restarter) restartUnit(ctx context.Context) error {
	const private = "/run/systemd/private"
	sock := r.root.display(private)
	conn, err := sddbus.NewConnection(func() (*godbus.Conn, error) {
		p, done, err := r.root.socket(private)
		if err != nil {
			return nil, err
		}
		c, err := godbus.Dial("unix:path="+p, godbus.WithContext(ctx))
		done()
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return fmt.Errorf("connect to systemd at %s: %w", sock, err)
	}
	defer conn.Close()
	units, err := conn.ListUnitsByNamesContext(ctx, []string{r.unit})
	if err != nil {
		return fmt.Errorf("systemd: look up %s: %w", r.unit, err)
	}
	if len(units) == 0 || units[0].LoadState != "loaded" {
		return fmt.Errorf("systemd has no unit %s; name containerd's unit with --systemd-unit or give --restart-command", r.unit)
	}
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, r.unit, "replace", done); err != nil {
		return fmt.Errorf("systemd: restart %s: %w", r.unit, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return fmt.Errorf("systemd: restart %s: job %s", r.unit, res)
		}
	case <-ctx.Done():
		return fmt.Errorf("systemd: restart %s: %w", r.unit, ctx.Err())
	}
	return nil
}

func trimRoot(root string) string {
	if root == "/" {
		return ""
	}
	return root
}

// criHandlers asks containerd's CRI at the host's address which runtime
// handlers it has.
func criHandlers(ctx context.Context, root *hostRoot, address string) ([]string, error) {
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		// Resolved for each connection: a restart makes a new socket.
		p, done, err := root.socket(address)
		if err != nil {
			return nil, err
		}
		defer done()
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p)
		var oe *net.OpError
		if errors.As(err, &oe) {
			// Name the socket, not the handle it was reached by.
			return nil, fmt.Errorf("dial %s: %w", root.display(address), oe.Err)
		}
		return c, err
	}
	conn, err := grpc.NewClient("passthrough:///"+root.display(address), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, h := range resp.GetRuntimeHandlers() {
		names = append(names, h.GetName())
	}
	return names, nil
}

// waitHandlers polls the CRI until every handler is reported (present) or
// none is (!present). The daemon going away and coming back during a
// restart is part of the wait.
func waitHandlers(ctx context.Context, root *hostRoot, address string, handlers []string, present bool, timeout time.Duration) error {
	socket := root.display(address)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		names, err := criHandlers(ctx, root, address)
		if err == nil {
			ok := true
			for _, h := range handlers {
				if slices.Contains(names, h) != present {
					ok = false
				}
			}
			if ok {
				return nil
			}
			last = fmt.Errorf("CRI reports runtime handlers %v", names)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			want := "report"
			if !present {
				want = "stop reporting"
			}
			return fmt.Errorf("containerd's CRI at %s did not %s handlers %v within %s: %w", socket, want, handlers, timeout, errors.Join(last, ctx.Err()))
		case <-time.After(250 * time.Millisecond):
		}
	}
}
