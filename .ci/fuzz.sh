#!/usr/bin/env bash
# CI fuzz stage: builds the libFuzzer targets (tests/fuzz, clang-14) in
# build/fuzz and runs each for SHMALLOC_FUZZ_SECONDS (default 60) on a scratch
# copy of its checked-in corpus. Fails on any crash, leak, sanitizer report
# or contract violation; the reproducer is left in build/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SHMALLOC_FUZZ_SECONDS:-60}

t0=$SECONDS
CC=clang-14 CXX=clang++-14 cmake -S . -B build/fuzz -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMALLOC_SANITIZE=address \
  -DSHMALLOC_BUILD_FUZZ=ON -DSHMALLOC_BUILD_RPC=OFF -DSHMALLOC_BUILD_BENCH=OFF \
  >/dev/null
cmake --build build/fuzz --target attach_fuzz ops_fuzz -j2
echo "fuzz: build: $((SECONDS - t0)) s"

mkdir -p build/fuzz/artifacts
for target in attach_fuzz ops_fuzz; do
  t0=$SECONDS
  work=build/fuzz/corpus-work/${target}
  mkdir -p "$work"
  build/fuzz/tests/fuzz/${target} -max_total_time="$seconds" \
    -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/${target}- \
    "$work" tests/fuzz/corpus/${target} 2>&1 | tail -n 12
  echo "fuzz: ${target}: $((SECONDS - t0)) s"
done
