"""``python3 -m shmalloc``: a small command line over the package.

    python3 -m shmalloc stats [REGION] [--json] [--socket PATH]
    python3 -m shmalloc regions [--json] [--socket PATH]

``stats`` prints each region's usage and, per region, the sessions holding
its blocks (who holds what). The full CLI is the ``shmalloc`` binary.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from . import Client, Error


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_stats(stats: Dict[str, Any]) -> str:
    """Returns the human-readable form of Client.stats()."""
    lines: List[str] = [
        f"daemon: up {stats.get('uptime_ms', 0) / 1000:.1f} s, "
        f"{stats.get('sessions', 0)} sessions, "
        f"{stats.get('region_count', len(stats.get('regions', [])))} regions"]
    header = (f"{'REGION':<20} {'STRATEGY':<10} {'USED':>11} {'CAPACITY':>11}"
              f" {'LIVE':>8} {'DETACHED':>8} {'FRAG':>5}")
    lines.append(header)
    for r in stats.get("regions", []):
        lines.append(
            f"{r['name']:<20} {r.get('strategy', ''):<10} "
            f"{_bytes(r.get('used_bytes', 0)):>11} "
            f"{_bytes(r.get('capacity_bytes', 0)):>11} "
            f"{r.get('live_allocations', 0):>8} "
            f"{r.get('detached_allocations', 0):>8} "
            f"{r.get('fragmentation', 0.0):>5.2f}")
        for s in r.get("sessions", []):
            lines.append(
                f"  {s.get('client_name', ''):<24} "
                f"{_bytes(s.get('used_bytes', 0)):>11} in "
                f"{s.get('live_allocations', 0):>6} blocks  "
                f"(session {s['session_id']})")
        if r.get("detached_allocations", 0):
            lines.append(
                f"  {'detached (no session)':<24} "
                f"{_bytes(r.get('detached_bytes', 0)):>11} in "
                f"{r['detached_allocations']:>6} blocks")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS,
                        help="daemon socket (default: $SHMALLOC_SOCKET)")
    parser = argparse.ArgumentParser(prog="python3 -m shmalloc",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    p_stats = sub.add_parser("stats", parents=[common],
                             help="usage per region and session")
    p_stats.add_argument("region", nargs="?", default=None)
    p_stats.add_argument("--json", action="store_true")
    p_regions = sub.add_parser("regions", parents=[common],
                               help="describe every region")
    p_regions.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        with Client(getattr(args, "socket", None), client_name="python -m shmalloc") as client:
            if args.command == "stats":
                stats = client.stats(args.region)
                print(json.dumps(stats, indent=2) if args.json
                      else format_stats(stats))
            else:
                regions = client.regions()
                if args.json:
                    print(json.dumps(regions, indent=2))
                else:
                    for r in regions:
                        print(f"{r['name']:<20} {r.get('strategy', ''):<10} "
                              f"{_bytes(r.get('size_bytes', 0)):>11} "
                              f"gen {r.get('generation', 0)}")
    except Error as e:
        print(f"shmalloc: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
