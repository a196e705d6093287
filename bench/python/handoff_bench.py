#!/usr/bin/python3
"""Hand-off of NumPy batches from worker processes to a consumer:
shmalloc handles (a block per batch, or a ring of the consumer's buffers)
vs pickling through a multiprocessing.Queue vs
multiprocessing.shared_memory (one block per batch, sent by name).

Runs examples/python/data_loader.py's loader (2 workers, 4 MiB float32
batches, 4 batches in flight per worker) for each mode, `--repeats` times,
and reports the median run: consumer throughput (GB/s of batches received)
and CPU time per batch (workers + consumer; for shmalloc also the daemon's,
when this script started it). Two consumer behaviours:
  ends  the consumer checks the first and last element (the hand-off cost)
  all   the consumer reads every element (a training step that touches it)

  /usr/bin/python3 bench/python/handoff_bench.py \\
      --shmallocd build/release/server/shmallocd
  (with SHMALLOC_C_LIBRARY=build/release/client/libshmalloc_c.so and
   PYTHONPATH=client/python unless the package is installed)

Bounded: about 3 x 2 x repeats runs of workers x batches batches each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "examples", "python"))
import data_loader  # noqa: E402  (examples/python/data_loader.py)


def proc_cpu_seconds(pid: int) -> float:
    """Returns utime + stime of process `pid` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100,
                        help="batches per worker and run")
    parser.add_argument("--batch-mib", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--read", choices=("ends", "all", "both"),
                        default="both")
    parser.add_argument("--socket", default=None)
    parser.add_argument("--shmallocd", default=None,
                        help="start a private daemon from this binary")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    batch_bytes = int(args.batch_mib * (1 << 20)) // 4 * 4
    daemon = None
    if args.shmallocd:
        from shmalloc.testing import Daemon
        daemon = Daemon(args.shmallocd).start()
        args.socket = daemon.socket
    if args.socket:
        os.environ["SHMALLOC_SOCKET"] = args.socket
    reads = ("ends", "all") if args.read == "both" else (args.read,)
    results: List[Dict[str, Any]] = []
    try:
        for read in reads:
            for mode in data_loader.MODES:
                runs = []
                for _ in range(args.repeats):
                    d0 = (proc_cpu_seconds(daemon.process.pid)
                          if daemon else 0.0)
                    r = data_loader.run(mode, args.workers, args.batches,
                                        batch_bytes, args.socket,
                                        args.prefetch, read == "all")
                    d1 = (proc_cpu_seconds(daemon.process.pid)
                          if daemon else 0.0)
                    r["daemon_cpu_ms_per_batch"] = (
                        (d1 - d0) * 1e3 / r["batches"]
                        if daemon and mode == "shmalloc" else 0.0)
                    runs.append(r)
                runs.sort(key=lambda r: r["gb_per_s"])
                median = dict(runs[len(runs) // 2])
                median["read"] = read
                median["gb_per_s_all"] = [round(r["gb_per_s"], 3)
                                          for r in runs]
                results.append(median)
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.cleanup()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.workers} workers -> 1 consumer, batches of "
          f"{batch_bytes / (1 << 20):.1f} MiB float32, {args.batches} "
          f"batches per worker, median of {args.repeats}")
    print(f"{'read':<5} {'mode':<14} {'GB/s':>7} {'x pickle':>9} "
          f"{'CPU ms/batch':>13} {'(daemon)':>9}  runs GB/s")
    for read in reads:
        rows = [r for r in results if r["read"] == read]
        pickle_rate = next(r["gb_per_s"] for r in rows
                           if r["mode"] == "pickle")
        for r in rows:
            cpu = r["cpu_ms_per_batch"] + r["daemon_cpu_ms_per_batch"]
            print(f"{read:<5} {r['mode']:<14} {r['gb_per_s']:>7.2f} "
                  f"{r['gb_per_s'] / pickle_rate:>9.1f} {cpu:>13.3f} "
                  f"{r['daemon_cpu_ms_per_batch']:>9.3f}  "
                  f"{r['gb_per_s_all']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
