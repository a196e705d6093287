# Sourced by the scripts that test the installed package
# (tests/packaging/build_examples.sh, tests/python/install_test.sh,
# bench/outoftree/run.sh): starts an installed shmallocd in a scratch
# directory with its own socket, shm_dir and an empty config, and waits for
# its readiness byte on --ready_fd (a FIFO; EOF if it dies first) for 30 s.
#
#   start_daemon DAEMON TMPDIR LABEL
# Sets daemon_pid (the caller's EXIT trap kills it) and exports
# SHMALLOC_SOCKET=TMPDIR/run/shmalloc.sock; the log is TMPDIR/daemon.log.
start_daemon() {
  local daemon=$1 tmp=$2 label=$3
  mkdir -p "$tmp/run" "$tmp/shm"
  : >"$tmp/empty.textproto"
  mkfifo "$tmp/ready"
  "$daemon" --socket="$tmp/run/shmalloc.sock" --shm_dir="$tmp/shm" \
    --config="$tmp/empty.textproto" --ready_fd=3 3>"$tmp/ready" \
    >"$tmp/daemon.log" 2>&1 &
  daemon_pid=$!
  if ! IFS= read -r -t 30 -N 1 _ <"$tmp/ready"; then
    cat "$tmp/daemon.log" >&2
    echo "$label: daemon not ready within 30 s" >&2
    exit 1
  fi
  export SHMALLOC_SOCKET=$tmp/run/shmalloc.sock
}
