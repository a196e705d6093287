#!/usr/bin/python3
"""A data loader four ways: N worker processes fill NumPy batches and a
consumer (the training loop) reads them.

  shmalloc       workers allocate each batch (detached) in a shmalloc region,
                 fill it in place and send a Handle (4 numbers) through the
                 queue; the consumer adopts it, reads it without copying,
                 frees it. Two RPCs per batch. A batch in flight when its
                 worker dies stays allocated (detached; `stats` shows it)
                 until the region is reset.
  shmalloc_ring  the consumer owns a ring of batch buffers, allocated once in
                 its session, and sends free slots to the workers, which fill
                 them and send them back: no RPC per batch, and nothing leaks
                 whichever process dies (the consumer's session owns every
                 buffer; the daemon frees them all when it ends).
  pickle         workers put the ndarray itself on a multiprocessing.Queue
                 (pickled: copied into the pipe and out again).
  shared_memory  workers create a multiprocessing.shared_memory block per
                 batch and send its name; the consumer attaches, reads and
                 unlinks it. Nobody owns a block in flight: a dead worker's
                 blocks stay in /dev/shm.

Usage (a daemon must be running, or pass --shmallocd to start a private one):

  /usr/bin/python3 examples/python/data_loader.py --workers 2 --batches 200
  /usr/bin/python3 examples/python/data_loader.py --mode shmalloc \
      --shmallocd build/release/server/shmallocd

It prints, per mode, the consumer's throughput and the CPU time spent per
batch by the workers and the consumer together.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import sys
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Any, Dict, List, Optional

import numpy as np

import shmalloc

MODES = ("shmalloc", "shmalloc_ring", "pickle", "shared_memory")


def fill_batch(out: np.ndarray, worker: int, index: int) -> None:
    """Stands in for decoding samples: writes every element of the batch."""
    out.fill(np.float32(worker * 1_000_000 + index))
    out[0] = np.float32(index)


def check_batch(batch: np.ndarray, worker: int, index: int,
                read_all: bool = True) -> float:
    """Stands in for training on the batch: reads every element (or, with
    read_all=False, checks the first and last: the hand-off cost alone)."""
    if not read_all:
        if batch[0] != np.float32(index) or batch[-1] != np.float32(
                worker * 1_000_000 + index):
            raise AssertionError(f"batch {worker}/{index} corrupted")
        return float(batch[-1])
    total = float(batch.sum(dtype=np.float64))
    expected = (float(index) +
                float(np.float32(worker * 1_000_000 + index)) *
                (batch.size - 1))
    if batch[0] != np.float32(index) or abs(total - expected) > 1e-6 * abs(
            expected) + 1:
        raise AssertionError(f"batch {worker}/{index} corrupted")
    return total


def worker_main(mode: str, worker: int, batches: int, items: int,
                queue: "mp.Queue", start: Any, socket: Optional[str],
                region_name: str, free_slots: Optional["mp.Queue"]) -> None:
    """One loader worker: waits for `start`, then produces `batches`."""
    region = None
    if mode.startswith("shmalloc"):
        client = shmalloc.Client(socket, client_name=f"loader-worker-{worker}")
        region = client.region(region_name)
    start.wait()
    cpu0 = time.process_time()
    for index in range(batches):
        if mode == "shmalloc":
            block = region.allocate(items * 4, detached=True)
            fill_batch(block.ndarray(np.float32, items), worker, index)
            queue.put((worker, index, block.detach()))
        elif mode == "shmalloc_ring":
            slot = free_slots.get()  # a Handle of one of the consumer's buffers
            fill_batch(client.open(slot).ndarray(np.float32, items), worker,
                       index)
            queue.put((worker, index, slot))
        elif mode == "pickle":
            batch = np.empty(items, dtype=np.float32)
            fill_batch(batch, worker, index)
            queue.put((worker, index, batch))
        else:
            shm = shared_memory.SharedMemory(create=True, size=items * 4)
            fill_batch(np.ndarray(items, np.float32, shm.buf), worker, index)
            # The consumer unlinks it: hand the tracker's duty over too.
            resource_tracker.unregister(shm._name, "shared_memory")
            name = shm.name
            shm.close()
            queue.put((worker, index, name))
    queue.put(("done", worker, time.process_time() - cpu0))


def consume(mode: str, item: Any, items: int,
            client: Optional[shmalloc.Client], read_all: bool = True,
            free_slots: Optional["mp.Queue"] = None) -> float:
    """Reads one batch as the training loop would, then releases it."""
    worker, index, payload = item
    if mode == "shmalloc":
        with client.adopt(payload) as block:  # freed at the end of the block
            return check_batch(block.ndarray(np.float32, items), worker,
                               index, read_all)
    if mode == "shmalloc_ring":
        total = check_batch(client.open(payload).ndarray(np.float32, items),
                            worker, index, read_all)
        free_slots.put(payload)  # the buffer goes back to the workers
        return total
    if mode == "pickle":
        return check_batch(payload, worker, index, read_all)
    shm = shared_memory.SharedMemory(name=payload)
    try:
        batch = np.ndarray(items, np.float32, shm.buf)
        total = check_batch(batch, worker, index, read_all)
        del batch
        return total
    finally:
        shm.close()
        shm.unlink()
        # Attaching registered it with the tracker (Python < 3.13); unlink
        # unregistered it again.


def run(mode: str, workers: int, batches_per_worker: int, batch_bytes: int,
        socket: Optional[str] = None, prefetch: int = 4,
        read_all: bool = True) -> Dict[str, Any]:
    """Runs one loader and returns its figures: batches, bytes, seconds,
    gb_per_s, cpu_ms_per_batch (workers + consumer). read_all: the consumer
    reads every element of each batch (else only checks its ends)."""
    items = batch_bytes // 4
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited threads
    queue = ctx.Queue(maxsize=prefetch * workers)
    start = ctx.Event()
    client = None
    free_slots = None
    ring: List[shmalloc.Allocation] = []
    region_name = f"loader-{os.getpid()}"
    if mode.startswith("shmalloc"):
        client = shmalloc.Client(socket, client_name="loader-consumer")
        # Room for every batch in flight (queue + one being filled per
        # worker + one being read), twice over.
        in_flight = prefetch * workers + 2 * workers + 1
        size = 2 * in_flight * (batch_bytes + 4096)
        region = client.create_region(region_name, "free_list", size)
        if mode == "shmalloc_ring":
            # Owned by this process's session: freed by the daemon if it dies.
            ring = region.allocate_many(batch_bytes, in_flight)
            free_slots = ctx.Queue()
            for block in ring:
                free_slots.put(block.handle)
    procs = [ctx.Process(target=worker_main,
                         args=(mode, w, batches_per_worker, items, queue,
                               start, socket, region_name, free_slots))
             for w in range(workers)]
    for p in procs:
        p.start()
    try:
        total_batches = workers * batches_per_worker
        done = 0
        worker_cpu = 0.0
        consumed = 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        start.set()
        while done < workers:
            try:
                item = queue.get(timeout=1.0)
            except queue_module.Empty:
                failed = [p.exitcode for p in procs
                          if p.exitcode not in (None, 0)]
                if failed:  # a worker died: do not wait for its batches
                    raise RuntimeError(f"worker exit codes {failed}")
                continue
            if item[0] == "done":
                done += 1
                worker_cpu += item[2]
                continue
            consume(mode, item, items, client, read_all, free_slots)
            consumed += 1
        seconds = time.perf_counter() - t0
        consumer_cpu = time.process_time() - cpu0
        for p in procs:
            p.join(timeout=60)
            if p.exitcode != 0:
                raise RuntimeError(f"worker exit code {p.exitcode}")
        if consumed != total_batches:
            raise RuntimeError(f"consumed {consumed} of {total_batches}")
        if ring:
            region.free_many(ring)
        if client is not None:
            left = client.stats(region_name)["regions"][0]["live_allocations"]
            if left != 0:
                raise RuntimeError(f"{left} batches still allocated")
        total_bytes = consumed * items * 4
        return {
            "mode": mode, "workers": workers, "batches": consumed,
            "batch_bytes": items * 4, "seconds": seconds,
            "gb_per_s": total_bytes / seconds / 1e9,
            "cpu_ms_per_batch": (worker_cpu + consumer_cpu) * 1e3 / consumed,
            "consumer_cpu_ms_per_batch": consumer_cpu * 1e3 / consumed,
        }
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if client is not None:
            try:
                client.delete_region(region_name, force=True)
            finally:
                client.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES + ("all",), default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100,
                        help="batches per worker")
    parser.add_argument("--batch-mib", type=float, default=4.0)
    parser.add_argument("--prefetch", type=int, default=4,
                        help="batches in flight per worker")
    parser.add_argument("--socket", default=None,
                        help="daemon socket (default: $SHMALLOC_SOCKET)")
    parser.add_argument("--shmallocd", default=None,
                        help="start a private daemon from this binary")
    args = parser.parse_args(argv)
    batch_bytes = int(args.batch_mib * (1 << 20)) // 4 * 4
    daemon = None
    if args.shmallocd:
        from shmalloc.testing import Daemon
        daemon = Daemon(args.shmallocd).start()
        args.socket = daemon.socket
    if args.socket:
        # Spawned workers connect through the same socket.
        os.environ["SHMALLOC_SOCKET"] = args.socket
    try:
        modes = MODES if args.mode == "all" else (args.mode,)
        print(f"{args.workers} workers x {args.batches} batches of "
              f"{batch_bytes / (1 << 20):.1f} MiB float32")
        print(f"{'mode':<14} {'GB/s':>7} {'CPU ms/batch':>13} "
              f"{'consumer ms/batch':>18}")
        for mode in modes:
            r = run(mode, args.workers, args.batches, batch_bytes,
                    args.socket, args.prefetch)
            print(f"{mode:<14} {r['gb_per_s']:>7.2f} "
                  f"{r['cpu_ms_per_batch']:>13.3f} "
                  f"{r['consumer_cpu_ms_per_batch']:>18.3f}", flush=True)
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
