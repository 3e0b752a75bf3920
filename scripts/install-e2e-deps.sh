#!/usr/bin/env bash
# Installs what `make e2e` needs beyond `make deps`, on a Debian 12 machine
# (run as root): iptables and conntrack from apt (kube-proxy programs
# services with iptables-restore), and, built from the Go module proxy
# because no release download is reachable, Kubernetes (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl),
# etcd and the CNI plugins bridge, host-local and loopback; and runc with
# seccomp (libseccomp-dev from apt): containerd's CRI gives every pod
# sandbox the runtime's default seccomp profile, as on any node, which the
# runc of `make deps` (built without cgo's libseccomp) cannot load.
#
# Kubernetes and etcd cannot be `go install`ed (their go.mod files replace
# sibling modules with local paths), so e2e/tools/{kubernetes,etcd} are
# modules that pin the released versions; their go.sum files fix every
# dependency. Idempotent: a binary is rebuilt only when the version
# recorded next to it differs. A cold build takes about 25 minutes on two
# cores (kube-apiserver dominates).
#
# Environment:
#   BIN   where the binaries go (default <repo>/_output/deps/e2e/bin)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/_output/deps/e2e/bin}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.6.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.4.3}"
APT_PACKAGES=(iptables conntrack libseccomp-dev pkg-config gcc libc6-dev)

log() { echo "install-e2e-deps: $*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
	export DEBIAN_FRONTEND=noninteractive
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		apt-get update
	fi
	log "apt-get install ${missing[*]}"
	apt-get install -y --no-install-recommends "${missing[@]}" || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

if ! command -v go >/dev/null 2>&1; then
	export PATH="/usr/local/go/bin:$PATH"
fi
mkdir -p "$BIN"

# build NAME VERSION DIR PACKAGE [LDFLAGS]: go build PACKAGE in module DIR
# unless BIN/NAME was built from VERSION.
build() {
	local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-} stamp="$BIN/.$1.version"
	if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
		log "$name $version already built"
		return
	fi
	log "building $name $version"
	(cd "$dir" && GOFLAGS=-mod=readonly go build -ldflags "$ldflags" -o "$BIN/$name" "$pkg")
	echo "$version" >"$stamp"
}

version_of() { # module directory, required module
	awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) { print $NF; exit }' "$1/go.mod"
}

K8S_DIR="$REPO/e2e/tools/kubernetes"
K8S_VERSION="$(version_of "$K8S_DIR" k8s.io/kubernetes)"
# What Kubernetes' own build stamps in: without it every component reports
# v0.0.0-master, and the API server's compatibility version with it.
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
K8S_LDFLAGS=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	K8S_LDFLAGS+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for c in kubectl kube-scheduler kube-proxy kube-controller-manager kubelet kube-apiserver; do
	build "$c" "$K8S_VERSION+stamped" "$K8S_DIR" "k8s.io/kubernetes/cmd/$c" "$K8S_LDFLAGS"
done

ETCD_DIR="$REPO/e2e/tools/etcd"
build etcd "$(version_of "$ETCD_DIR" go.etcd.io/etcd/server/v3)" "$ETCD_DIR" go.etcd.io/etcd/server/v3

for p in main/bridge main/loopback ipam/host-local; do
	name="${p#*/}"
	stamp="$BIN/cni/.$name.version"
	if [[ -x "$BIN/cni/$name" && -f "$stamp" && "$(cat "$stamp")" == "$CNI_PLUGINS_VERSION" ]]; then
		log "cni $name $CNI_PLUGINS_VERSION already built"
		continue
	fi
	log "building cni $name $CNI_PLUGINS_VERSION"
	mkdir -p "$BIN/cni"
	CGO_ENABLED=0 GOBIN="$BIN/cni" go install -trimpath "github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION"
	echo "$CNI_PLUGINS_VERSION" >"$stamp"
done
stamp="$BIN/runc-seccomp/.runc.version"
if [[ -x "$BIN/runc-seccomp/runc" && -f "$stamp" && "$(cat "$stamp")" == "$RUNC_VERSION" ]]; then
	log "runc $RUNC_VERSION with seccomp already built"
else
	log "building runc $RUNC_VERSION with seccomp"
	mkdir -p "$BIN/runc-seccomp"
	CGO_ENABLED=1 GOWORK=off GOBIN="$BIN/runc-seccomp" go install -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
	echo "$RUNC_VERSION" >"$stamp"
fi
log "done: $BIN"
