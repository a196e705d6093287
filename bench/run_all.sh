#!/usr/bin/env bash
# One run of every benchmark behind bench/README.md, one after the other, on
# one machine, so that every ratio in the README comes from the same
# conditions. Each benchmark's stdout goes to OUT_DIR/<name>.txt (its stderr,
# the daemons' logs, to <name>.log, not kept in git; and
# .json where the benchmark has a machine-readable form); OUT_DIR/meta.txt
# records the commit, the machine and the load average before and after each
# stage, so a reader can tell a quiet run from a loaded one. Then
# bench/report.py turns OUT_DIR into OUT_DIR/summary.md and
# OUT_DIR/ratios.tsv; with --update-readme it also replaces the generated
# part of bench/README.md and bench/results/ratios.tsv (and redraws the plot
# when gnuplot is installed).
#
# Usage: bench/run_all.sh [--update-readme] [--only=NAME,...] [BUILD_DIR [OUT_DIR]]
#   BUILD_DIR defaults to build/release (Release, with every bench target
#   built: cmake --build build/release -j2); OUT_DIR to
#   bench/results/run-<UTC date and time>.
# About 4 minutes on the 2-vCPU reference VM (3.5 of them the allocators,
# client, RPC and Python stages; see meta.txt). Every stage has a time limit;
# a stage that fails or overruns is reported at the end and makes the exit
# status non-zero, the other stages still run.
set -uo pipefail
cd "$(dirname "$0")/.."

update_readme=0
only=""
args=()
for a in "$@"; do
  case "$a" in
    --update-readme) update_readme=1 ;;
    --only=*) only=",${a#--only=}," ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
build=${args[0]:-build/release}
out=${args[1]:-bench/results/run-$(date -u +%Y-%m-%dT%H%M)}
bin=$build/bench
[ -x "$bin/allocators_bench" ] || {
  echo "run_all: $bin/allocators_bench missing: cmake --build $build -j2" >&2
  exit 1
}
py=/usr/bin/python3 # Debian's grpcio/numpy belong to this interpreter
mkdir -p "$out"
: >"$out/commands.tsv"

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
  echo "build: $build ($(grep -m1 CMAKE_BUILD_TYPE: "$build/CMakeCache.txt" 2>/dev/null | cut -d= -f2))"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) online"
  echo "kernel: $(uname -r); compiler: $(c++ --version | head -1)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/meta.txt"
cat "$out/meta.txt"

failed=()
# stage NAME BUDGET_S COMMAND...: runs COMMAND with its output in
# OUT_DIR/NAME.txt, shows progress and the time taken.
stage() {
  local name=$1 budget=$2
  shift 2
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then return 0; fi
  local t0=$SECONDS load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "::: $name (limit ${budget} s, load $load) $*"
  printf '%s\t%s\n' "$name" "$*" >>"$out/commands.tsv"
  # The figures are on stdout; stderr carries the daemons' logs (10,000
  # lines for the sessions bench), kept apart and out of git.
  timeout --kill-after=10 "$budget" "$@" >"$out/$name.txt" 2>"$out/$name.log"
  local rc=$?
  echo "$name: $((SECONDS - t0)) s, load $load -> $(cut -d' ' -f1 /proc/loadavg), exit $rc" \
    >>"$out/meta.txt"
  if [ "$rc" != 0 ]; then
    failed+=("$name (exit $rc)")
    echo "::: $name FAILED (exit $rc); last lines of $out/$name.{txt,log}:"
    tail -5 "$out/$name.txt" "$out/$name.log"
  else
    echo "::: $name: $((SECONDS - t0)) s"
  fi
}

# Allocators in one process, against glibc, jemalloc, mimalloc, iceoryx,
# Boost.Interprocess and the bare atomic (CPU time, median of 5).
stage allocators 600 "$bin/allocators_bench" --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true --benchmark_min_time=0.2 \
  --benchmark_out="$out/allocators.json" --benchmark_out_format=json
# The client hot paths in-tree (Arena, BlockCache, iceoryx, Boost, the RPC).
stage client 300 "$bin/client_bench" \
  --benchmark_out="$out/client.json" --benchmark_out_format=json
# The hot path as a user links it: installed package, out-of-tree build.
stage outoftree 400 bench/outoftree/run.sh "$build" --rounds=21
# RPC: Allocate vs the bare echo, the batch path, library vs raw stub.
stage rpc_load 300 "$bin/rpc_load" --threads=1,2 --seconds=2
# The library's calls against the raw stub's, and Allocate with 100
# WatchStats streams against none: subject and baseline in alternating rounds.
stage rpc_library 300 "$bin/rpc_load" --mode=library --threads=1,2 \
  --seconds=1 --rounds=5
stage watchers 300 "$bin/rpc_load" --mode=watchers --watchers=100 \
  --watch_interval_ms=10 --threads=1,2 --seconds=1 --rounds=5
# Server side of the batch path without gRPC.
stage region_batch 200 "$bin/region_batch_bench"
# Durability and scale.
stage restart 300 "$bin/restart_bench" --runs=5
stage sessions 300 "$bin/sessions_bench" --sessions=10000
stage rpc_load_64 300 "$bin/rpc_load" --threads=64 --seconds=1
# Python hand-off (needs the C library and Debian's python3-numpy).
stage handoff 400 env SHMALLOC_C_LIBRARY="$build/client/libshmalloc_c.so" \
  PYTHONPATH=client/python "$py" bench/python/handoff_bench.py \
  --shmallocd "$build/server/shmallocd" --json
# First touch per MiB: ordinary pages vs huge pages (as root it mounts its
# own huge=always tmpfs and hugetlbfs; otherwise it says which kinds ran).
stage first_touch 300 "$bin/first_touch_bench" --mib=64 --runs=15

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/meta.txt"
report_args=("$out")
[ "$update_readme" = 1 ] && report_args+=(--update-readme)
"$py" bench/report.py "${report_args[@]}" || failed+=("report")

if [ "${#failed[@]}" -gt 0 ]; then
  echo "run_all: FAILED: ${failed[*]} (raw output in $out)" >&2
  exit 1
fi
echo "run_all: every stage passed; raw output and summary.md in $out"
