"""pytest fixtures: a real shmallocd per test module on a temp Unix socket
and shm dir (--ready_fd handshake), stopped with SIGTERM at the end.

Environment (set by ctest from CMake): SHMALLOCD = the daemon binary,
SHMALLOC_C_LIBRARY = libshmalloc_c.so, PYTHONPATH = client/python. Run by
hand from the repo root:

  SHMALLOCD=build/release/server/shmallocd \
  SHMALLOC_C_LIBRARY=build/release/client/libshmalloc_c.so \
  PYTHONPATH=client/python /usr/bin/python3 -m pytest -q tests/python
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Callable, Iterator

import pytest

import shmalloc
from shmalloc.testing import Daemon

_names = itertools.count()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon().start()
    try:
        yield d
        code = d.stop()
        assert code == 0, f"shmallocd exit status {code} on SIGTERM:\n{d.log()}"
    finally:
        d.cleanup()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[shmalloc.Client]:
    c = shmalloc.Client(daemon.socket, client_name="pytest")
    shmalloc.set_default_client(c)
    try:
        yield c
    finally:
        shmalloc.set_default_client(None)
        c.close()


@pytest.fixture
def region_name() -> str:
    """A region name no other test in this run uses."""
    return f"py{os.getpid()}-{next(_names)}"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0,
               what: str = "condition") -> None:
    """Polls `predicate` until it is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # polling interval, not synchronisation
        delay = min(delay * 2, 0.1)
