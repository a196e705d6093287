"""Hand-off between Python processes through a real daemon: 1,000 arrays
byte-verified; a SIGKILLed worker whose own blocks are reclaimed while the
blocks the consumer adopted survive; a SIGKILLed consumer whose adopted
blocks are reclaimed (adopt() moves ownership in the daemon)."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest

import shmalloc
from conftest import wait_until
import workers


def test_thousand_arrays_handed_off_byte_verified(daemon, client,
                                                  region_name):
    seed = int(os.environ.get("SHMALLOC_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (rerun with SHMALLOC_TEST_SEED={seed})")
    count = 1000
    region = client.create_region(region_name, "free_list", 96 << 20)
    ctx = workers.spawn_context()
    queue = ctx.Queue()
    producer = ctx.Process(target=workers.produce, args=(
        daemon.socket, region_name, count, seed, queue, count // 2))
    producer.start()
    try:
        seen = 0
        zero_copy_checked = False
        while True:
            item = queue.get(timeout=60)
            if item is None:
                break
            i, items, sent = item
            assert i == seen
            if isinstance(sent, shmalloc.Allocation):
                # Unpickled with the default client: a non-owning view.
                assert not sent.owning and sent.region is region
                block = sent.adopt()
            else:
                assert isinstance(sent, shmalloc.Handle)
                block = client.adopt(sent)
            with block:
                assert block.owning and block.size == items * 4
                array = block.ndarray(np.float32, items)
                np.testing.assert_array_equal(
                    array, workers.pattern(seed, i, items))
                if not zero_copy_checked:
                    # The array is the shared bytes, not a copy of them.
                    view = client.open(block.handle).ndarray(np.float32, items)
                    array[0] = -7.0
                    assert view[0] == -7.0
                    zero_copy_checked = True
            seen += 1
        assert seen == count
        producer.join(timeout=60)
        assert producer.exitcode == 0
        stats = region.stats()
        assert stats["live_allocations"] == 0, stats
        assert stats["used_bytes"] == 0, stats
        assert stats["peak_used_bytes"] > 0
    finally:
        if producer.is_alive():
            producer.kill()
            producer.join()


def test_sigkilled_worker_reclaimed_adopted_blocks_survive(daemon, client,
                                                           region_name):
    owned, handed = 20, 8
    region = client.create_region(region_name, "free_list", 8 << 20)
    ctx = workers.spawn_context()
    queue, never = ctx.Queue(), ctx.Queue()
    worker = ctx.Process(target=workers.hold_and_hand_off, args=(
        daemon.socket, region_name, owned, handed, queue, never))
    worker.start()
    try:
        adopted = [client.adopt(queue.get(timeout=60)) for _ in range(handed)]
        tag, worker_session = queue.get(timeout=60)
        assert tag == "ready"

        stats = region.stats()
        assert stats["live_allocations"] == owned + handed
        # Adopted: this process's session owns them now, none is detached.
        assert stats["detached_allocations"] == 0
        holders = {s["session_id"]: s for s in stats["sessions"]}
        assert holders[worker_session]["live_allocations"] == owned
        assert holders[worker_session]["client_name"] == "doomed-worker"
        assert holders[client.session_id]["live_allocations"] == handed

        os.kill(worker.pid, signal.SIGKILL)
        worker.join(timeout=30)
        assert worker.exitcode == -signal.SIGKILL

        def reclaimed() -> bool:
            return region.stats()["live_allocations"] == handed
        wait_until(reclaimed, what="the killed worker's blocks to be freed")
        stats = region.stats()
        holders = {s["session_id"]: s for s in stats["sessions"]}
        assert worker_session not in holders
        assert stats["used_bytes"] == holders[client.session_id]["used_bytes"]

        # The adopted blocks are intact and still live: each frees once.
        for i, block in enumerate(adopted):
            np.testing.assert_array_equal(
                block.ndarray(np.uint32),
                np.full(8192 // 4, 0xC0FFEE00 + i, dtype=np.uint32))
        region.free_many(adopted)
        assert region.stats()["live_allocations"] == 0
        for block in adopted:
            assert not block.owning
    finally:
        if worker.is_alive():
            worker.kill()
            worker.join()


def test_sigkilled_consumer_has_its_adopted_blocks_reclaimed(daemon, client,
                                                             region_name):
    handed = 6
    region = client.create_region(region_name, "free_list", 8 << 20)
    ctx = workers.spawn_context()
    queue, reply, never = ctx.Queue(), ctx.Queue(), ctx.Queue()
    consumer = ctx.Process(target=workers.adopt_and_hold, args=(
        daemon.socket, queue, handed, reply, never))
    consumer.start()
    try:
        for _ in range(handed):
            queue.put(region.allocate(4096, detached=True).detach())
        tag, consumer_session = reply.get(timeout=60)
        assert tag == "adopted"
        stats = region.stats()
        assert stats["live_allocations"] == handed
        assert stats["detached_allocations"] == 0
        holders = {s["session_id"]: s for s in stats["sessions"]}
        assert holders[consumer_session]["live_allocations"] == handed
        assert holders[consumer_session]["client_name"] == "doomed-consumer"

        os.kill(consumer.pid, signal.SIGKILL)
        consumer.join(timeout=30)
        assert consumer.exitcode == -signal.SIGKILL

        def reclaimed() -> bool:
            return region.stats()["live_allocations"] == 0
        wait_until(reclaimed, what="the killed consumer's adopted blocks")
        assert region.stats()["used_bytes"] == 0
    finally:
        if consumer.is_alive():
            consumer.kill()
            consumer.join()


def test_adopting_an_owned_block_is_refused(daemon, client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    owned = region.allocate(256)  # this session's, not detached
    before = region.stats()
    with shmalloc.Client(daemon.socket, client_name="thief") as other:
        with pytest.raises(shmalloc.FailedPreconditionError) as e:
            other.adopt(owned.handle)  # adopting would steal it
        assert e.value.code == "FAILED_PRECONDITION"
    assert region.stats() == before
    assert owned.owning
    owned.free()
