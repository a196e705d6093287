"""Child-process bodies for the hand-off tests (spawned: importable by
name). Each opens its own shmalloc.Client on the socket it is given."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np

import shmalloc


def pattern(seed: int, i: int, items: int) -> np.ndarray:
    """The float32 contents of array `i`: distinct per array and item."""
    return (np.arange(items, dtype=np.float32) * np.float32(1.5) +
            np.float32(seed % 1000 + i))


def array_items(seed: int, i: int) -> int:
    """A seeded size (items) for array `i`: 1 .. 16384."""
    return int(np.random.default_rng((seed, i)).integers(1, 16385))


def produce(socket: str, region: str, count: int, seed: int,
            queue: "mp.Queue", as_allocation_from: int) -> None:
    """Allocates `count` detached float32 arrays, fills each with its
    pattern and hands them to the consumer: as Handles, or (from index
    `as_allocation_from` on) as pickled Allocations."""
    with shmalloc.Client(socket, client_name="producer") as client:
        r = client.region(region)
        for i in range(count):
            items = array_items(seed, i)
            block = r.allocate(items * 4, detached=True)
            block.ndarray(np.float32, items)[:] = pattern(seed, i, items)
            handle = block.detach()
            queue.put((i, items, block if i >= as_allocation_from else handle))
        queue.put(None)


def hold_and_hand_off(socket: str, region: str, owned: int, handed: int,
                      queue: "mp.Queue", never: "mp.Queue") -> None:
    """Allocates `owned` session-owned blocks (kept) and `handed` detached
    blocks (handed to the consumer), reports, then blocks until killed."""
    client = shmalloc.Client(socket, client_name="doomed-worker")
    r = client.region(region)
    kept = r.allocate_many(4096, owned)
    for k, block in enumerate(kept):
        block.ndarray(np.uint8)[:] = 0xEE
    for i in range(handed):
        block = r.allocate(8192, detached=True)
        block.ndarray(np.uint32)[:] = np.uint32(0xC0FFEE00 + i)
        queue.put(block.detach())
    queue.put(("ready", client.session_id))
    never.get()  # blocks: the test SIGKILLs this process
    del kept


def adopt_and_hold(socket: str, queue: "mp.Queue", count: int,
                   reply: "mp.Queue", never: "mp.Queue") -> None:
    """Adopts `count` handed-over blocks (keeps the owning Allocations),
    reports its session id, then blocks until killed."""
    client = shmalloc.Client(socket, client_name="doomed-consumer")
    held = [client.adopt(queue.get()) for _ in range(count)]
    reply.put(("adopted", client.session_id))
    never.get()  # blocks: the test SIGKILLs this process
    del held


def spawn_context() -> mp.context.BaseContext:
    """The start method every test uses: a fresh interpreter, no inherited
    gRPC threads."""
    return mp.get_context("spawn")


