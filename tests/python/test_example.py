"""examples/python/data_loader.py runs (small sizes) in its four modes."""

from __future__ import annotations

import os
import subprocess
import sys

EXAMPLES = os.environ.get("SHMALLOC_EXAMPLES_DIR", os.path.join(
    os.path.dirname(__file__), "..", "..", "examples", "python"))


def test_data_loader_example_runs(daemon):
    out = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "data_loader.py"),
         "--socket", daemon.socket, "--workers", "2", "--batches", "10",
         "--batch-mib", "0.25"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    for mode in ("shmalloc", "shmalloc_ring", "pickle", "shared_memory"):
        assert any(line.startswith(mode) for line in out.stdout.splitlines()), \
            out.stdout
    print(out.stdout)
