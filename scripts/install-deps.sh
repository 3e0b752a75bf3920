#!/usr/bin/env bash
# Installs everything the integration tests, the demo and the benchmarks need
# on a Debian 12 machine (run as root): busybox-static, util-linux, procps
# and libc6-dev from apt, and runc, containerd, ctr and
# containerd-shim-runc-v2 built from source with `go install`, because no
# container registry or prebuilt release download is reachable.
#
# Idempotent: packages already installed are skipped, and the Go binaries are
# rebuilt only when the requested version differs from the one recorded next
# to them.
#
# Environment:
#   BIN                 where the Go binaries go (default <repo>/_output/deps/bin)
#   RUNC_VERSION        runc module version (default v1.4.3), or "debian" for
#                       Debian's runc package (linked into BIN)
#   CONTAINERD_VERSION  containerd module version (default v2.4.2)
#   ONLY                "runc" or "containerd": install only that (make matrix
#                       builds each version once and combines them)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/_output/deps/bin}"
RUNC_VERSION="${RUNC_VERSION:-v1.4.3}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
# libc6-dev: runc's nsenter is cgo, and gcc only recommends the libc
# headers, so a gcc installed without recommends cannot build it.
APT_PACKAGES=(busybox-static util-linux procps libc6-dev)
ONLY="${ONLY:-}"
if [[ "$RUNC_VERSION" == debian && "$ONLY" != containerd ]]; then
	APT_PACKAGES+=(runc)
fi

log() { echo "install-deps: $*"; }

# --- apt packages -----------------------------------------------------------

pkg_installed() {
	dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
	if pkg_installed "$p"; then
		log "apt package $p already installed"
	else
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: need root to install ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine has no package lists; updating every time would make
	# repeated runs slow, so update only when the lists are absent or when
	# an install against the existing lists fails.
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		log "apt-get update (no package lists yet)"
		apt-get update
	fi
	log "apt-get install ${missing[*]}"
	if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
		log "install failed; retrying after apt-get update"
		apt-get update
		apt-get install -y --no-install-recommends "${missing[@]}"
	fi
fi

# --- Go binaries ------------------------------------------------------------

if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	else
		echo "install-deps: go not found on PATH or in /usr/local/go/bin" >&2
		exit 1
	fi
fi

mkdir -p "$BIN"
# GOBIN must be absolute, and the fallback build below changes directory.
BIN="$(cd "$BIN" && pwd)"

# Module-mode installs at an explicit version must not be influenced by this
# repository's go.mod or a go.work above it.
export GOWORK=off

# up_to_date NAME VERSION BINARIES...: true when the stamp file records
# VERSION and every binary exists.
up_to_date() {
	local name=$1 version=$2
	shift 2
	[[ -f "$BIN/.$name-version" ]] || return 1
	[[ "$(cat "$BIN/.$name-version")" == "$version" ]] || return 1
	local b
	for b in "$@"; do
		[[ -x "$BIN/$b" ]] || return 1
	done
}

if [[ "$ONLY" == containerd ]]; then
	:
elif [[ "$RUNC_VERSION" == debian ]]; then
	ln -sf /usr/sbin/runc "$BIN/runc"
	echo "$RUNC_VERSION" >"$BIN/.runc-version"
	log "runc from Debian's package: $(/usr/sbin/runc --version | head -1)"
elif up_to_date runc "$RUNC_VERSION" runc; then
	log "runc $RUNC_VERSION already in $BIN"
else
	log "go install runc@$RUNC_VERSION -> $BIN"
	rm -f "$BIN/.runc-version"
	GOBIN="$BIN" go install "github.com/opencontainers/runc@$RUNC_VERSION"
	echo "$RUNC_VERSION" >"$BIN/.runc-version"
fi

# containerd-shim-runc-v2 is what containerd execs for the
# io.containerd.runc.v2 runtime, so it must come from the same release.
CONTAINERD_BINS=(containerd ctr containerd-shim-runc-v2)
if [[ "$ONLY" == runc ]]; then
	:
elif up_to_date containerd "$CONTAINERD_VERSION" "${CONTAINERD_BINS[@]}"; then
	log "containerd $CONTAINERD_VERSION already in $BIN"
else
	log "go install containerd, ctr, containerd-shim-runc-v2 @$CONTAINERD_VERSION -> $BIN (takes a minute the first time)"
	rm -f "$BIN/.containerd-version"
	pkgs=()
	for b in "${CONTAINERD_BINS[@]}"; do
		pkgs+=("github.com/containerd/containerd/v2/cmd/$b@$CONTAINERD_VERSION")
	done
	if ! GOBIN="$BIN" go install "${pkgs[@]}"; then
		# Some releases (e.g. v2.0.x) carry exclude/replace directives in
		# go.mod, which `go install pkg@version` refuses; building inside the
		# downloaded module honours them. -mod=mod because the module zip
		# carries a lone vendor/modules.txt that would otherwise select
		# vendor mode.
		log "go install failed; building from the module source instead"
		moddir="$(cd / && go mod download -json "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
		if [[ -z "$moddir" || ! -d "$moddir" ]]; then
			echo "install-deps: cannot locate containerd $CONTAINERD_VERSION source" >&2
			exit 1
		fi
		(cd "$moddir" && GOFLAGS=-mod=mod go build -buildvcs=false -o "$BIN/" \
			./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2)
	fi
	echo "$CONTAINERD_VERSION" >"$BIN/.containerd-version"
fi

log "done: $(ls "$BIN" | tr '\n' ' ')"
