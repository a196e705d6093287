"""shmalloc.testing: run a private shmallocd for tests and benchmarks.

    with Daemon("/usr/sbin/shmallocd") as d:      # temp socket + shm dir
        client = shmalloc.Client(d.socket)

The daemon gets its own temporary directory (socket, shm dir, an empty
config: no regions) and reports readiness through --ready_fd: start()
returns once it serves, or raises with its log. stop() sends SIGTERM and
requires a clean exit. Nothing here sleeps to synchronise.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, List, Optional, Sequence

DAEMON_ENV_VAR = "SHMALLOCD"


def find_daemon() -> str:
    """Returns $SHMALLOCD, else shmallocd on PATH or in /usr/sbin and
    /usr/local/sbin. Raises FileNotFoundError."""
    env = os.environ.get(DAEMON_ENV_VAR)
    if env:
        return env
    found = shutil.which("shmallocd", path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"]))
    if not found:
        raise FileNotFoundError(
            f"shmallocd not found: set ${DAEMON_ENV_VAR} to its path")
    return found


class Daemon:
    """One shmallocd process on a temporary Unix socket and shm dir."""

    def __init__(self, binary: Optional[str] = None,
                 extra_flags: Sequence[str] = (),
                 start_timeout: float = 30.0) -> None:
        self.binary = binary or find_daemon()
        self.extra_flags: List[str] = list(extra_flags)
        self.start_timeout = start_timeout
        self.dir = tempfile.mkdtemp(prefix="shmalloc-py.")
        self.socket = os.path.join(self.dir, "shmalloc.sock")
        self.shm_dir = os.path.join(self.dir, "shm")
        self.log_path = os.path.join(self.dir, "shmallocd.log")
        os.mkdir(self.shm_dir, 0o700)
        self.config = os.path.join(self.dir, "shmallocd.textproto")
        open(self.config, "w").close()
        self.process: Optional[subprocess.Popen] = None

    def log(self) -> str:
        """Returns what the daemon wrote to stdout and stderr so far."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self) -> "Daemon":
        """Starts the daemon and waits for its readiness byte (at most
        start_timeout seconds). Raises RuntimeError with its log."""
        r, w = os.pipe()
        try:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, f"--socket={self.socket}",
                     f"--shm_dir={self.shm_dir}", f"--config={self.config}",
                     f"--ready_fd={w}", *self.extra_flags],
                    stdout=log, stderr=subprocess.STDOUT, pass_fds=(w,),
                    stdin=subprocess.DEVNULL)
            os.close(w)
            w = -1
            deadline = time.monotonic() + self.start_timeout
            while True:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([r], [], [], max(0.0, left))
                if not ready:
                    self.kill()
                    raise RuntimeError(
                        f"shmallocd not ready within {self.start_timeout} s:"
                        f"\n{self.log()}")
                if os.read(r, 1) == b"R":
                    return self
                # EOF: it died before serving.
                code = self.process.wait(timeout=10)
                self.process = None
                raise RuntimeError(
                    f"shmallocd exited ({code}) before ready:\n{self.log()}")
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def stop(self, timeout: float = 30.0) -> int:
        """Sends SIGTERM and waits for the exit; returns the exit status
        (0 = clean). Kills it after `timeout` seconds."""
        if self.process is None:
            return 0
        p, self.process = self.process, None
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILLs the daemon (no clean stop)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def cleanup(self) -> None:
        """Stops the daemon if running and removes its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
