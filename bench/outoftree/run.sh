#!/usr/bin/env bash
# Builds bench/outoftree against an INSTALLED shmalloc and runs it, as a user
# would:
#   1. cmake --install BUILD_DIR into a temporary prefix;
#   2. configures bench/outoftree with CMAKE_PREFIX_PATH=<prefix>
#      (find_package(shmalloc CONFIG), find_package(mimalloc CONFIG)), builds;
#   3. starts the installed shmallocd on a temporary socket and shm_dir (an
#      empty config) with the --ready_fd handshake;
#   4. runs hot_path_bench with the remaining arguments (--quick for CI);
#   5. stops the daemon with SIGTERM and requires exit status 0.
#
# Usage: bench/outoftree/run.sh [BUILD_DIR] [hot_path_bench args...]
#        (default build/release; e.g. run.sh build/release --rounds=21)
#        OUTOFTREE_KEEP=DIR copies the built hot_path_bench to DIR (for
#        objdump -d / perf annotate of the hot loops as users link them).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
build=${1:-build/release}
shift || true
[ -d "$build" ] || { echo "outoftree: no build dir $build" >&2; exit 1; }

tmp=$(mktemp -d -t shmalloc-oot.XXXXXX)
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
source "$root/tests/packaging/start_daemon.sh"

echo "--- install $build -> $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
prefix=$tmp/prefix
daemon=$prefix/sbin/shmallocd
[ -x "$daemon" ] || daemon=$prefix/bin/shmallocd

echo "--- configure and build bench/outoftree against the installed package"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root/bench/outoftree" -B "$tmp/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; exit 1; }
cmake --build "$tmp/build" -j2 >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; exit 1; }

if [ -n "${OUTOFTREE_KEEP:-}" ]; then
  mkdir -p "$OUTOFTREE_KEEP" && cp "$tmp/build/hot_path_bench" "$OUTOFTREE_KEEP/"
fi

echo "--- start $daemon"
start_daemon "$daemon" "$tmp" outoftree

echo "--- hot_path_bench $*"
"$tmp/build/hot_path_bench" "$@"

kill -TERM "$daemon_pid"
daemon_rc=0
wait "$daemon_pid" || daemon_rc=$?
daemon_pid=""
[ "$daemon_rc" = 0 ] || { cat "$tmp/daemon.log" >&2; echo "outoftree: daemon exit $daemon_rc" >&2; exit 1; }
echo "outoftree: passed"
