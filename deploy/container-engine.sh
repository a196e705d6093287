#!/usr/bin/env bash
# Sourced by deploy/container-test.sh: picks a container engine and, on a
# machine without a registry, makes the local debian:bookworm base images.
#   ENGINE       docker when `docker info` answers, else podman (installed with
#                runc and debootstrap when missing and running as root)
#   ensure_base_images   creates debian:bookworm and debian:bookworm-slim from
#                a debootstrap of the machine's own Debian mirror when absent
set -euo pipefail

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 ||
     ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "container: no docker engine and no podman; run as root to install podman" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman runc debootstrap uidmap fuse-overlayfs >/dev/null
  fi
  ENGINE=podman
  # crun, podman's default runtime, refuses hybrid cgroup v1+v2 hosts; runc
  # accepts them. No CAP_SYS_RESOURCE here, so ulimits must stay at 4096.
  if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF=$(mktemp -t shmalloc-containers.XXXXXX.conf)
    cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
    export CONTAINERS_CONF
  fi
fi
export ENGINE

ensure_base_images() {
  if [ "$ENGINE" = docker ]; then return 0; fi
  if podman image exists debian:bookworm && podman image exists debian:bookworm-slim; then
    return 0
  fi
  local mirror root
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$mirror" ]; then
    mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  if [ -z "$mirror" ]; then
    echo "container: cannot find the Debian mirror in /etc/apt" >&2
    return 1
  fi
  root=$(mktemp -d -t shmalloc-rootfs.XXXXXX)
  echo "container: debootstrap bookworm from $mirror (no registry here; ~2 min)"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
  # Point the image's apt at the same mirror the host uses.
  echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
  tar -C "$root" -c . | podman import - debian:bookworm >/dev/null
  podman tag debian:bookworm debian:bookworm-slim
  rm -rf "$root"
}
