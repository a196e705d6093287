#!/usr/bin/env python3
"""Runs clang++-14 -fsyntax-only -Wthread-safety -Werror over the server/ and
client/ sources of a configured build, reusing each file's flags from the
build's compile_commands.json (CMAKE_EXPORT_COMPILE_COMMANDS is on).

Usage: thread_safety.py BUILD_DIR [DIR ...]   (default dirs: server client)
The build must have generated its protos (the .pb.h files), e.g. any build
that compiled the server. Only thread-safety warnings are enabled, so the
result does not depend on which other warnings clang-14 has over gcc. Exits
non-zero when any file has a thread-safety warning or does not parse.
"""
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    build = sys.argv[1]
    dirs = sys.argv[2:] or ["server", "client"]
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)
    prefixes = [os.path.join(root, d) + os.sep for d in dirs]
    jobs = []
    for e in entries:
        src = e["file"]
        if not any(src.startswith(p) for p in prefixes):
            continue
        args = e.get("arguments") or shlex.split(e["command"])
        # Drop the launcher and compiler, the output and the warning flags.
        while args and not args[0].startswith("-"):
            args = args[1:]
        keep = []
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a == "-o":
                skip = True
                continue
            if a in ("-c", src) or a.startswith("-W"):
                continue
            keep.append(a)
        cmd = ["clang++-14", "-fsyntax-only", "-Wthread-safety",
               "-Werror"] + keep + [src]
        jobs.append((cmd, e["directory"], src))

    def run(job):
        cmd, cwd, src = job
        return src, subprocess.run(cmd, cwd=cwd, capture_output=True,
                                   text=True)

    failed = []
    checked = 0
    workers = int(os.environ.get("SHMALLOC_LINT_JOBS", "2"))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for src, r in pool.map(run, jobs):
            checked += 1
            if r.returncode != 0:
                failed.append(os.path.relpath(src, root))
                sys.stdout.write(r.stderr)
    print(f"thread-safety: {checked} files, {len(failed)} failed"
          + (": " + " ".join(failed) if failed else ""))
    return 1 if failed or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
