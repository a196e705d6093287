#!/usr/bin/env bash
# Builds the shmalloc image from the repository's Dockerfile and proves it
# serves: the daemon runs in a container with its socket and memory
# directories bind-mounted from a temporary host directory; from the host,
# the host-built CLI checks health, creates a region and allocates; a second
# container writes bytes into the region through the shared file, and the
# host reads them back; the example producer in a container hands buffers to
# the example consumer on the host without copying; finally the daemon
# container is stopped with SIGTERM and must exit 0.
#
# Usage: deploy/container-test.sh [HOST_BUILD_DIR]   (default build/release)
# Needs: a Docker engine, or podman (installed when run as root, see
# deploy/container-engine.sh). Prints how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build/release}
cli=$root/$build/client/shmalloc
[ -x "$cli" ] || { echo "container-test: no host CLI at $cli (build first)" >&2; exit 1; }

source deploy/container-engine.sh
image=shmalloc:container-test
name=shmalloc-test-$$
work=$(mktemp -d -t shmalloc-container.XXXXXX)
consumer_pid=""
cleanup() {
  [ -n "$consumer_pid" ] && kill "$consumer_pid" 2>/dev/null || true
  $ENGINE rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

t_all=$SECONDS
stage() {
  local label=$1; shift
  local t0=$SECONDS
  echo "--- $label"
  "$@"
  echo "--- $label: $((SECONDS - t0)) s"
}
build_flags=()
[ "$ENGINE" = podman ] && build_flags=(--pull=never --network host)

stage "base image" ensure_base_images
stage "image build" $ENGINE build "${build_flags[@]}" -t "$image" -f Dockerfile .

# The container's user (uid 10001) must be able to create the socket and the
# region files in the bind-mounted host directories.
mkdir -p "$work/run" "$work/shm"
chmod 0777 "$work/run" "$work/shm"
export SHMALLOC_SOCKET=$work/run/shmalloc.sock
export SHMALLOC_SHM_DIR=$work/shm

start_daemon() {
  $ENGINE run -d --name "$name" --network none \
    -v "$work/run:/run/shmalloc" -v "$work/shm:/dev/shm" \
    "$image" --socket=/run/shmalloc/shmalloc.sock --shm_dir=/dev/shm \
    --config=/etc/shmalloc/shmallocd.textproto >/dev/null
  # Readiness: the health RPC, polled against a deadline (the container's
  # start time varies; there is no pipe across the container boundary).
  local deadline=$((SECONDS + 30))
  until "$cli" health >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      $ENGINE logs "$name" >&2 || true
      echo "container-test: daemon not healthy within 30 s" >&2
      return 1
    fi
    if [ "$($ENGINE inspect -f '{{.State.Running}}' "$name")" != true ]; then
      $ENGINE logs "$name" >&2 || true
      echo "container-test: daemon container exited" >&2
      return 1
    fi
    sleep 0.2
  done
  "$cli" health
}
stage "daemon start" start_daemon

exchange_bytes() {
  "$cli" regions create xfer --strategy=free_list --size=4MiB
  local offset
  offset=$("$cli" alloc xfer 4096 --detached | awk '/offset/ {print $NF; exit}')
  [ -n "$offset" ] || { echo "container-test: no offset from alloc" >&2; return 1; }
  echo "allocated offset $offset"
  # A second container writes through the shared region file...
  $ENGINE run --rm --network none -v "$work/shm:/dev/shm" --entrypoint /bin/sh "$image" \
    -c "printf 'written-in-container' | dd of=/dev/shm/shmalloc-xfer.data bs=1 seek=$offset conv=notrunc status=none"
  # ...and the host reads the same bytes back.
  local got
  got=$(dd if="$work/shm/shmalloc-xfer.data" bs=1 skip="$offset" count=20 status=none)
  [ "$got" = written-in-container ] || { echo "container-test: read back '$got'" >&2; return 1; }
  echo "host read back: $got"
  "$cli" free xfer "$offset"
  "$cli" stats xfer
}
stage "bytes across the container boundary" exchange_bytes

examples=$work/examples
build_host_examples() {
  # The host-side client is built the way a user builds theirs: against the
  # installed package, out of tree.
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  cmake -S examples -B "$examples" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
  cmake --build "$examples" -j2 >/dev/null
}
stage "host examples (installed package)" build_host_examples

handoff() {
  "$examples/consumer" --handoff="$work/run/handoff.sock" --region=frames --buffers=50 \
    >"$work/consumer.log" 2>&1 &
  consumer_pid=$!
  # The consumer's hand-off socket belongs to the host user: run the producer
  # as that user (the usual way to share a bind-mounted socket).
  $ENGINE run --rm --network none --user "$(id -u):$(id -g)" \
    -v "$work/run:/run/shmalloc" -v "$work/shm:/dev/shm" \
    -e SHMALLOC_SOCKET=/run/shmalloc/shmalloc.sock -e SHMALLOC_SHM_DIR=/dev/shm \
    --entrypoint producer "$image" --handoff=/run/shmalloc/handoff.sock --region=frames --buffers=50
  wait "$consumer_pid"; consumer_pid=""
  cat "$work/consumer.log"
}
stage "producer in a container -> consumer on the host" handoff

stop_daemon() {
  $ENGINE stop -t 20 "$name" >/dev/null
  local code
  code=$($ENGINE inspect -f '{{.State.ExitCode}}' "$name")
  echo "daemon exit code: $code"
  [ "$code" = 0 ]
}
stage "SIGTERM" stop_daemon
echo "container-test: passed in $((SECONDS - t_all)) s"
