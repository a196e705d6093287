#!/usr/bin/env bash
# Proves the installed package works the way a user consumes it:
#   1. cmake --install BUILD_DIR into a temporary prefix;
#   2. configures examples/ out of tree with CMAKE_PREFIX_PATH=<prefix>
#      (find_package(shmalloc CONFIG)) and builds it;
#   3. starts the installed shmallocd in a temporary directory (its own
#      socket and shm_dir, an empty config) with the --ready_fd handshake;
#   4. runs consumer + producer (N buffers handed off without copying,
#      verified byte for byte), checks the region is empty afterwards, runs
#      arena_example and c_example;
#   5. stops the daemon with SIGTERM and requires exit status 0.
#
# Usage: tests/packaging/build_examples.sh [BUILD_DIR] [BUFFERS]
#        (default build/release, 2000 buffers)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
build=${1:-build/release}
buffers=${2:-2000}
[ -d "$build" ] || { echo "build_examples: no build dir $build" >&2; exit 1; }

tmp=$(mktemp -d -t shmalloc-pkg.XXXXXX)
daemon_pid=""
consumer_pid=""
cleanup() {
  [ -n "$consumer_pid" ] && kill "$consumer_pid" 2>/dev/null || true
  if [ -n "$daemon_pid" ]; then
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
source "$root/tests/packaging/start_daemon.sh"
step() { echo "--- $*"; }

step "install $build -> $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
prefix=$tmp/prefix
cli=$prefix/bin/shmalloc
daemon=$prefix/sbin/shmallocd
[ -x "$daemon" ] || daemon=$prefix/bin/shmallocd
for f in "$cli" "$daemon" "$prefix/include/shmalloc/client.h" \
         "$prefix/include/shmalloc/shmalloc.h" \
         "$prefix/lib/cmake/shmalloc/shmallocConfig.cmake" \
         "$prefix/lib/pkgconfig/shmalloc.pc"; do
  [ -e "$f" ] || { echo "build_examples: not installed: $f" >&2; exit 1; }
done

step "configure and build examples/ against the installed package"
cmake -S "$root/examples" -B "$tmp/examples" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/configure.log" \
  || { cat "$tmp/configure.log" >&2; exit 1; }
cmake --build "$tmp/examples" -j2 >"$tmp/build.log" \
  || { cat "$tmp/build.log" >&2; exit 1; }

step "start $daemon"
start_daemon "$daemon" "$tmp" build_examples
"$cli" health

step "consumer <- producer: $buffers buffers"
"$tmp/examples/consumer" --handoff="$tmp/run/handoff.sock" --region=frames \
  --buffers="$buffers" --quiet >"$tmp/consumer.log" 2>&1 &
consumer_pid=$!
"$tmp/examples/producer" --handoff="$tmp/run/handoff.sock" --region=frames \
  --buffers="$buffers"
consumer_rc=0
wait "$consumer_pid" || consumer_rc=$?
consumer_pid=""
cat "$tmp/consumer.log"
[ "$consumer_rc" = 0 ] || { echo "build_examples: consumer exit $consumer_rc" >&2; exit 1; }
grep -q "verified $buffers buffers" "$tmp/consumer.log"

step "region 'frames' is empty again"
"$cli" stats frames --json >"$tmp/stats.json"
python3 - "$tmp/stats.json" <<'PY'
import json, sys
region = json.load(open(sys.argv[1]))["regions"][0]
assert region["name"] == "frames", region
assert region["live_allocations"] == 0 and region["used_bytes"] == 0, region
print("frames: live_allocations 0, used_bytes 0, peak_used_bytes",
      region["peak_used_bytes"])
PY

step "arena_example, c_example"
"$tmp/examples/arena_example" --threads=2 --objects=20000
"$tmp/examples/c_example"

step "SIGTERM the daemon"
kill -TERM "$daemon_pid"
daemon_rc=0
wait "$daemon_pid" || daemon_rc=$?
daemon_pid=""
[ "$daemon_rc" = 0 ] || { cat "$tmp/daemon.log" >&2; echo "build_examples: daemon exit $daemon_rc" >&2; exit 1; }
echo "build_examples: passed"
