"""The package's API against a real daemon: regions, zero-copy views and
arrays, stats as dicts (who holds what), arenas, block caches, lifetimes,
and `python3 -m shmalloc`."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import shmalloc


def test_library_and_session(client):
    assert os.path.exists(shmalloc.library_path())
    assert client.session_id != 0
    assert client.connection_state == "CONNECTED"
    assert "session" in repr(client)


def test_region_info_and_listing(client, region_name):
    region = client.create_region(region_name, "pool", 1 << 20,
                                  block_size=4096)
    assert client.region(region_name) is region  # one mapping per Client
    info = region.info()
    assert info["name"] == region_name and info["strategy"] == "pool"
    assert info["block_size"] == 4096
    assert info["heap_begin"] < info["heap_end"] <= info["size_bytes"]
    listed = {r["name"]: r for r in client.regions()}
    assert listed[region_name]["block_size"] == 4096


def test_allocation_is_shared_memory_not_a_copy(daemon, client, region_name):
    region = client.create_region(region_name, "free_list", 4 << 20)
    other = shmalloc.Client(daemon.socket, client_name="second")
    try:
        with region.allocate(1 << 20) as block:
            assert block.owning and block.size == 1 << 20
            assert block.reserved_size >= block.size
            a = block.ndarray(np.float32, (512, 512))
            b = other.open(block.handle).ndarray(np.float32, (512, 512))
            a[:] = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
            np.testing.assert_array_equal(a, b)  # other mapping, same bytes
            b[3, 4] = -1
            assert a[3, 4] == -1
            view = block.buffer
            assert len(view) == block.size and not view.readonly
            view[0:4] = b"\x00\x00\x80\x3f"  # 1.0f
            assert a[0, 0] == 1.0
            with pytest.raises(shmalloc.InvalidArgumentError):
                block.ndarray(np.float64, (512, 513))  # more than the block
    finally:
        other.close()
    assert region.stats()["live_allocations"] == 0


def test_stats_show_who_holds_what(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    blocks = region.allocate_many(1000, 3)
    detached = region.allocate(5000, detached=True)
    stats = region.stats()
    assert stats["live_allocations"] == 4
    assert stats["detached_allocations"] == 1
    mine = [s for s in stats["sessions"]
            if s["session_id"] == client.session_id]
    assert mine and mine[0]["live_allocations"] == 3
    assert mine[0]["client_name"] == "pytest"
    whole = client.stats()
    assert region_name in {r["name"] for r in whole["regions"]}
    assert whole["sessions"] >= 1 and "uptime_ms" in whole
    region.free_many(blocks + [detached])
    assert region.stats()["live_allocations"] == 0


def test_views_keep_an_allocation_alive_then_gc_frees_it(client,
                                                         region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    array = region.allocate(4096).ndarray(np.uint8)  # handle dropped at once
    array[:] = 9
    gc.collect()
    assert region.stats()["live_allocations"] == 1  # the array holds it
    del array
    gc.collect()
    assert region.stats()["live_allocations"] == 0


def test_detach_adopt_and_pickle(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    block = region.allocate(256, detached=True)
    block.ndarray(np.uint8)[:] = 42
    handle = block.detach()
    assert not block.owning
    assert handle == (region_name, block.offset, 256, block.generation)
    del block
    gc.collect()
    assert region.stats()["live_allocations"] == 1  # nobody freed it
    view = pickle.loads(pickle.dumps(client.open(handle)))
    assert not view.owning and view.handle == handle
    assert bytes(view.buffer[:2]) == b"**"
    with view.adopt():
        pass
    assert region.stats()["live_allocations"] == 0


def test_arena_bump_allocation(client, region_name):
    client.create_region(region_name, "arena", 1 << 20)
    region = client.region(region_name)
    with region.arena() as arena:
        blocks = [arena.allocate(100) for _ in range(50)]
        offsets = [b.offset for b in blocks]
        assert len(set(offsets)) == 50
        for i, b in enumerate(blocks):
            b.ndarray(np.uint8)[:] = i
        for i, b in enumerate(blocks):
            assert set(b.ndarray(np.uint8).tolist()) == {i}
        assert arena.usage()["used_bytes"] >= 50 * 100
        generation = region.generation
        arena.reset()
        assert region.generation == generation + 1
        with pytest.raises(shmalloc.ResourceExhaustedError):
            arena.allocate(2 << 20)


def test_block_cache(client, region_name):
    region = client.create_region(region_name, "pool", 1 << 20,
                                  block_size=1024)
    with region.block_cache(batch=16) as cache:
        assert cache.class_size(100) == 1024
        blocks = [cache.allocate(1000) for _ in range(40)]
        assert len({b.offset for b in blocks}) == 40
        for b in blocks:
            b.close()
        s = cache.stats()
        assert s["blocks_from_daemon"] >= 40
        assert s["allocate_rpcs"] <= 4
        cache.flush()
    assert region.stats()["live_allocations"] == 0


def test_python_m_shmalloc_stats(daemon, client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    keep = region.allocate(3000)
    env = dict(os.environ, SHMALLOC_SOCKET=daemon.socket)
    out = subprocess.run([sys.executable, "-m", "shmalloc", "stats"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert region_name in out.stdout
    assert "pytest" in out.stdout  # the session holding the block
    out = subprocess.run(
        [sys.executable, "-m", "shmalloc", "stats", region_name, "--json"],
        env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json
    assert json.loads(out.stdout)["regions"][0]["live_allocations"] == 1
    out = subprocess.run([sys.executable, "-m", "shmalloc", "stats", "nope"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "NOT_FOUND" in out.stderr
    keep.free()


def test_closed_region_keeps_existing_views(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    block = region.allocate(4096)
    array = block.ndarray(np.uint32)
    region.close()
    assert region.closed
    with pytest.raises(shmalloc.FailedPreconditionError):
        region.allocate(64)
    array[:] = 5  # the mapping lives while the block and its views do
    assert int(array.sum()) == 5 * 1024
    fresh = client.region(region_name)  # a new handle for new work
    assert fresh is not region
    assert client.open(block).ndarray(np.uint32)[7] == 5
    block.free()
    assert fresh.stats()["live_allocations"] == 0
