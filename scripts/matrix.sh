#!/usr/bin/env bash
# The compatibility matrix (make matrix): the integration suite against each
# containerd daemon with each runc, every version built once by
# install-deps.sh and combined per run in a directory of links. Results go to
# $OUT/matrix/<containerd>-<runc>.log and a table in $OUT/matrix/summary.md;
# docs/compatibility.md records what was run. Exits non-zero if any
# combination failed.
#
# Environment:
#   CONTAINERD_VERSIONS  default "v2.0.14 v2.2.9 v2.4.2"
#   RUNC_VERSIONS        default "debian v1.4.3 v1.5.2" (debian: Debian's runc package, 1.1.x on Debian 12)
#   DEPS_DIR             where versions are built (default <repo>/_output/deps)
#   NSISO_BIN            the built nsiso binaries (default <repo>/_output/bin)
#   TEST_RUN             a go test -run pattern (default: the whole suite)
#   TIMEOUT              per run (default 20m)
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONTAINERD_VERSIONS="${CONTAINERD_VERSIONS:-v2.0.14 v2.2.9 v2.4.2}"
RUNC_VERSIONS="${RUNC_VERSIONS:-debian v1.4.3 v1.5.2}"
DEPS_DIR="${DEPS_DIR:-$REPO/_output/deps}"
NSISO_BIN="${NSISO_BIN:-$REPO/_output/bin}"
TEST_RUN="${TEST_RUN:-}"
TIMEOUT="${TIMEOUT:-20m}"
RESULTS="$REPO/_output/matrix"
export PATH="/usr/local/go/bin:$PATH"

mkdir -p "$RESULTS"
for c in $CONTAINERD_VERSIONS; do
	BIN="$DEPS_DIR/$c/bin" CONTAINERD_VERSION="$c" ONLY=containerd bash "$REPO/scripts/install-deps.sh" || exit 1
done
for r in $RUNC_VERSIONS; do
	BIN="$DEPS_DIR/runc-$r/bin" RUNC_VERSION="$r" ONLY=runc bash "$REPO/scripts/install-deps.sh" || exit 1
done

summary="$RESULTS/summary.md"
{
	echo "| containerd | runc | result | tests | time |"
	echo "|---|---|---|---|---|"
} >"$summary"
failed=0
for c in $CONTAINERD_VERSIONS; do
	for r in $RUNC_VERSIONS; do
		dir="$DEPS_DIR/matrix/$c-$r/bin"
		mkdir -p "$dir"
		for b in containerd ctr containerd-shim-runc-v2; do
			ln -sf "$DEPS_DIR/$c/bin/$b" "$dir/$b"
		done
		ln -sf "$(readlink -f "$DEPS_DIR/runc-$r/bin/runc")" "$dir/runc"
		runc_version="$("$dir/runc" --version | head -1 | awk '{print $3}')"
		log="$RESULTS/$c-$r.log"
		echo "matrix: containerd $c, runc $r ($runc_version) -> $log"
		start=$(date +%s)
		args=(-count=1 -timeout "$TIMEOUT" -v)
		[[ -n "$TEST_RUN" ]] && args+=(-run "$TEST_RUN")
		(cd "$REPO" && NSISO_DEPS_BIN="$dir" NSISO_BIN="$NSISO_BIN" go test "${args[@]}" ./testenv/... ./integration/...) >"$log" 2>&1
		rc=$?
		secs=$(($(date +%s) - start))
		passed=$(grep -c '^--- PASS' "$log")
		fails=$(grep -c '^--- FAIL' "$log")
		skips=$(grep -c '^--- SKIP' "$log")
		result=pass
		if ((rc != 0)); then
			result=FAIL
			failed=1
		fi
		echo "| $c | $r ($runc_version) | $result | $passed passed, $fails failed, $skips skipped | ${secs}s |" >>"$summary"
		tail -1 "$log"
	done
done
cat "$summary"
exit $failed
