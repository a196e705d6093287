#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of shmalloc from Debian 12
# packages. Idempotent: when everything is present it only checks and returns.
#   deploy/install-deps.sh                 # build + test + bench deps (uses sudo when not root)
#   SHMALLOC_DEPS=core deploy/install-deps.sh      # build + unit tests, no bench peers
#   SHMALLOC_DEPS=runtime deploy/install-deps.sh   # only what the binaries need to run
#   SHMALLOC_DEPS=fuzz deploy/install-deps.sh      # build deps + clang-14, libFuzzer and
#                                                  # the clang tools (CI fuzz and lint stages)
set -euo pipefail

core_pkgs=(
  g++ cmake ninja-build pkg-config
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgtest-dev libgmock-dev googletest
  prometheus-cpp-dev  # shmallocd --metrics_listen (/metrics)
)
build_pkgs=(
  "${core_pkgs[@]}" git libbenchmark-dev
  # Peers the benchmarks compare against.
  libjemalloc-dev libmimalloc-dev libboost-dev libiceoryx-posh-dev
  # Test tools: manifest checks, JSON checks, the /metrics text parser.
  python3-yaml python3-prometheus-client
  # The Python package (client/python): its tests, example and bench run on
  # /usr/bin/python3 with these; setuptools + pip: `pip install client/python`.
  python3-numpy python3-pytest python3-setuptools python3-pip
)
runtime_pkgs=(libgrpc++1.51 libprotobuf32 libprometheus-cpp-pull1.0 ca-certificates)
# tests/fuzz (clang only) and the lint stage: clang-format, -Wthread-safety,
# clang-tidy.
fuzz_pkgs=(
  "${build_pkgs[@]}" clang-14 libfuzzer-14-dev clang-format-14 clang-tidy-14
)

case "${SHMALLOC_DEPS:-build}" in
  build) pkgs=("${build_pkgs[@]}") ;;
  core) pkgs=("${core_pkgs[@]}") ;;
  runtime) pkgs=("${runtime_pkgs[@]}") ;;
  fuzz) pkgs=("${fuzz_pkgs[@]}") ;;
  *) echo "install-deps: SHMALLOC_DEPS must be 'build', 'core', 'runtime' or 'fuzz'" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
