// Package nodeinstall is `nsiso install` and `nsiso uninstall`: it puts the
// shim on a node, registers nsiso's CRI runtime handlers with the node's
// containerd and takes all of it away again.
//
// Every path it writes is a path as the host sees it, placed under a root
// directory (--root): "/" on the node itself, the host's root bind-mounted
// into the installer's container in a DaemonSet. Each is resolved as the
// host resolves it, symlinks included, and never leads outside the root.
// The jobs are split by file:
//
//   - root.go: the host's root and every file operation under it (openat2
//     with RESOLVE_IN_ROOT, then *at calls on the directory found);
//   - containerd.go: the node's containerd config as containerd reads it
//     (version, imports, the files they pull in, the CRI plugin of each
//     version, handlers already defined);
//   - edit.go: adding one import to a config file as text, so comments,
//     order and formatting are kept and the edit can be taken back;
//   - render.go: the drop-in with the runtime handlers and nsiso.toml;
//   - validate.go: the result checked by the node's own `containerd config
//     dump` (or containerd's config loader) before anything is written;
//   - files.go: the plan, its atomic writes, and the record of what was
//     added that lets uninstall restore every file byte for byte;
//   - restart.go: restarting containerd (systemd, or a given command) and
//     waiting until its CRI reports the handlers;
//   - kube.go: the node label a RuntimeClass selects on;
//   - install.go, uninstall.go: the two commands, each a list of steps
//     (plan, validate, apply, restart, label);
//   - command.go: their flags.
package nodeinstall
