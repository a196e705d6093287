#!/bin/bash
# The FreeList experiments of bench/README.md ("2026-12-03 evening"): each
# patch in patches/ applied to a copy of the FreeList (or of the bench heap),
# built with free_list_harness.cc against BUILD_DIR's libraries, and run
# RUNS times touched and once untouched; then chase.cc. Nothing in the tree
# changes. About 4 minutes with RUNS=3.
#
# Usage: bench/allocators/experiments/run.sh [BUILD_DIR] [PATCH ...]
#   BUILD_DIR defaults to build/release (built); PATCH names (without
#   .patch) default to all, "shipped" being the unpatched FreeList.
set -euo pipefail
cd "$(dirname "$0")/../../.."
build=${1:-build/release}
shift || true
here=bench/allocators/experiments
runs=${RUNS:-3}
libs=("$build/allocators/libshmalloc_allocators.a" "$build/common/libshmalloc_common.a")
for l in "${libs[@]}"; do
  [ -f "$l" ] || { echo "run.sh: $l missing: cmake --build $build -j2" >&2; exit 1; }
done
# shellcheck disable=SC2207
absl=($(pkg-config --libs absl_status absl_statusor absl_strings absl_synchronization))
names=("$@")
if [ "${#names[@]}" -eq 0 ]; then
  names=(shipped)
  for p in "$here"/patches/*.patch; do names+=("$(basename "$p" .patch)"); done
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_variant() {  # NAME -> $work/NAME/harness
  local name=$1 dir=$work/$1
  mkdir -p "$dir/allocators" "$dir/bench/allocators"
  cp allocators/free_list.h allocators/free_list.cc allocators/free_list_check.cc \
    allocators/free_list_create.cc "$dir/allocators/"
  cp bench/allocators/heap.h "$dir/bench/allocators/"
  if [ "$name" != shipped ]; then
    patch -s -d "$dir" -p1 <"$here/patches/$name.patch"
  fi
  # The copies come first on the include path; the archive's FreeList
  # objects are not pulled in, every symbol being defined by the copies.
  c++ -std=c++20 -O2 -DNDEBUG -I"$dir" -I. "$here/free_list_harness.cc" \
    "$dir/allocators/free_list.cc" "$dir/allocators/free_list_check.cc" \
    "$dir/allocators/free_list_create.cc" "${libs[@]}" "${absl[@]}" -lbenchmark \
    -o "$dir/harness"
}

echo "free_list experiments: $(git rev-parse --short HEAD), load $(cut -d' ' -f1 /proc/loadavg), RUNS=$runs"
for name in "${names[@]}"; do
  build_variant "$name"
  envs=("")
  [ "$name" = huge_pages ] && envs=("HUGE=both" "HUGE=heap" "HUGE=meta")
  for e in "${envs[@]}"; do
    for ((i = 0; i < runs; i++)); do
      echo "$name ${e:+$e }$(env ${e:+"$e"} "$work/$name/harness" touched)"
    done
    echo "$name ${e:+$e }$(env ${e:+"$e"} "$work/$name/harness" untouched)"
  done
done
c++ -std=c++20 -O2 -DNDEBUG -I. "$here/chase.cc" "${libs[@]}" "${absl[@]}" -lbenchmark -o "$work/chase"
"$work/chase"
