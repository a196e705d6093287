#!/usr/bin/env bash
# The Python package as users install it:
#   1. cmake --install BUILD_DIR into a temporary prefix: the package lands
#      in <prefix>/lib/python3.X/dist-packages with _install.py naming the
#      installed libshmalloc_c;
#   2. pip install of client/python (a copy: setuptools writes build files)
#      into a --target directory, offline (--no-index, Debian's setuptools);
#   3. against the installed shmallocd: each copy imports with only
#      PYTHONPATH set (the pip copy finds the library through
#      SHMALLOC_C_LIBRARY), allocates a NumPy array, and `python3 -m
#      shmalloc stats` shows it; SIGTERM stops the daemon cleanly.
# Usage: tests/python/install_test.sh BUILD_DIR [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
build=${1:?usage: install_test.sh BUILD_DIR [PYTHON]}
python=${2:-/usr/bin/python3}
tmp=$(mktemp -d -t shmalloc-pyinst.XXXXXX)
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
unset SHMALLOC_C_LIBRARY PYTHONPATH

echo "--- cmake --install $build -> $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
site=$tmp/prefix/lib/python$ver/dist-packages
for f in "$site/shmalloc/__init__.py" "$site/shmalloc/_install.py" \
         "$site/shmalloc/py.typed"; do
  [ -e "$f" ] || { echo "install_test: not installed: $f" >&2; exit 1; }
done
grep -q "$tmp/prefix/lib" "$site/shmalloc/_install.py"
daemon=$tmp/prefix/sbin/shmallocd
[ -x "$daemon" ] || daemon=$tmp/prefix/bin/shmallocd

echo "--- pip install client/python -> $tmp/pip"
cp -r "$root/client/python" "$tmp/src"
"$python" -m pip install --quiet --no-index --no-build-isolation --no-deps \
  --target "$tmp/pip" "$tmp/src" >"$tmp/pip.log" 2>&1 \
  || { cat "$tmp/pip.log" >&2; exit 1; }
[ -e "$tmp/pip/shmalloc/_client.py" ]

echo "--- start $daemon"
start_daemon "$daemon" "$tmp" install_test

check() {  # $1: label; the rest: environment for the interpreter
  local label=$1; shift
  env "$@" PYTHONDONTWRITEBYTECODE=1 "$python" - "$label" <<'PY'
import sys
import numpy as np
import shmalloc
label = sys.argv[1]
with shmalloc.Client(client_name=f"install-test-{label}") as client:
    name = f"installed-{label}"
    region = client.create_region(name, "free_list", 1 << 20)
    with region.allocate(4096) as block:
        block.ndarray(np.int32)[:] = 7
        assert client.open(block.handle).ndarray(np.int32).sum() == 7 * 1024
        holders = region.stats()["sessions"]
        assert holders[0]["client_name"] == f"install-test-{label}", holders
    client.delete_region(name)
print(f"{label}: {shmalloc.__file__} loads {shmalloc.library_path()}")
PY
}
echo "--- the installed package"
check cmake PYTHONPATH="$site"
"$python" -c "import sys; sys.path.insert(0, '$site'); import shmalloc, os
assert shmalloc.library_path().startswith('$tmp/prefix/'), shmalloc.library_path()"
PYTHONPATH="$site" "$python" -m shmalloc stats >"$tmp/stats.txt"
cat "$tmp/stats.txt"
grep -q "^daemon: up" "$tmp/stats.txt"

echo "--- the pip-installed package"
check pip PYTHONPATH="$tmp/pip" \
  SHMALLOC_C_LIBRARY="$(find "$tmp/prefix" -name libshmalloc_c.so | head -1)"

echo "--- SIGTERM the daemon"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
[ "$rc" = 0 ] || { cat "$tmp/daemon.log" >&2; echo "install_test: daemon exit $rc" >&2; exit 1; }
echo "install_test: passed"
