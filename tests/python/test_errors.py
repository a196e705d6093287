"""Every failure is an exception of the class of its gRPC status, carrying
the status name, and a refused request leaves the region's stats as they
were."""

from __future__ import annotations

import pickle

import pytest

import shmalloc


def snapshot(region: shmalloc.Region) -> dict:
    s = region.stats()
    return {k: s[k] for k in ("used_bytes", "live_allocations",
                              "failed_allocations", "detached_allocations",
                              "generation")}


def test_error_classes_carry_the_status_name():
    assert issubclass(shmalloc.NotFoundError, shmalloc.Error)
    assert issubclass(shmalloc.InvalidArgumentError, ValueError)
    e = shmalloc.ResourceExhaustedError("RESOURCE_EXHAUSTED: full")
    assert e.code == "RESOURCE_EXHAUSTED" and e.status == 8
    assert str(e) == "RESOURCE_EXHAUSTED: full"


def test_not_found(client):
    with pytest.raises(shmalloc.NotFoundError) as e:
        client.region("no-such-region")
    assert e.value.code == "NOT_FOUND"
    assert "no-such-region" in str(e.value)
    with pytest.raises(shmalloc.NotFoundError):
        client.stats("no-such-region")
    with pytest.raises(shmalloc.NotFoundError):
        client.delete_region("no-such-region")


def test_already_exists_and_bad_names(client, region_name):
    client.create_region(region_name, "buddy", 1 << 20, block_size=64)
    before = client.regions()
    with pytest.raises(shmalloc.AlreadyExistsError) as e:
        client.create_region(region_name, "buddy", 1 << 20, block_size=64)
    assert e.value.code == "ALREADY_EXISTS"
    for bad in ("UPPER", "a/b", "", "../x"):
        with pytest.raises(shmalloc.InvalidArgumentError) as e:
            client.create_region(bad, "pool", 1 << 20, block_size=64)
        assert e.value.code == "INVALID_ARGUMENT"
    with pytest.raises(shmalloc.InvalidArgumentError):
        client.create_region(region_name + "x", "no-such-strategy", 1 << 20)
    assert client.regions() == before


def test_bad_allocations_change_nothing(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    keep = region.allocate(1000)
    before = snapshot(region)
    with pytest.raises(shmalloc.InvalidArgumentError) as e:
        region.allocate(0)
    assert e.value.code == "INVALID_ARGUMENT"
    with pytest.raises(shmalloc.InvalidArgumentError):
        region.allocate(64, alignment=3)
    with pytest.raises(shmalloc.InvalidArgumentError):
        region.allocate_many(64, 0)
    assert snapshot(region) == before
    with pytest.raises(shmalloc.InvalidArgumentError):
        region.allocate(2 << 20)  # larger than the heap
    assert snapshot(region) == before
    with pytest.raises(shmalloc.ResourceExhaustedError) as e:
        region.allocate_many(300 << 10, 4)  # fits the heap, not the room
    assert e.value.code == "RESOURCE_EXHAUSTED"
    after = snapshot(region)
    assert after["failed_allocations"] == before["failed_allocations"] + 1
    after["failed_allocations"] = before["failed_allocations"]
    assert after == before
    keep.free()


def test_free_errors(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    block = region.allocate(256)
    block.free()
    with pytest.raises(shmalloc.FailedPreconditionError):
        block.free()  # this object knows it was freed
    before = snapshot(region)
    with pytest.raises(shmalloc.FailedPreconditionError) as e:
        client.adopt(block.handle)  # the daemon refuses: not live
    assert e.value.code == "FAILED_PRECONDITION"
    assert snapshot(region) == before
    with pytest.raises(shmalloc.InvalidArgumentError):
        client.open(shmalloc.Handle(region_name, 1 << 40, 16, 0))


def test_stale_generation_after_reset(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    block = region.allocate(128)
    handle = block.detach()
    with pytest.raises(shmalloc.FailedPreconditionError):
        region.reset()  # live allocations, no force
    region.reset(force=True)
    assert region.generation != handle.generation
    with pytest.raises(shmalloc.FailedPreconditionError) as e:
        client.adopt(handle)
    assert "stale" in str(e.value)
    before = snapshot(region)
    with pytest.raises(shmalloc.FailedPreconditionError):
        block.free()  # fenced by the generation it was allocated in
    assert snapshot(region) == before


def test_huge_pages_without_huge_dir(client, region_name):
    # The test daemon has no --huge_dir: refused, saying what to mount, and
    # nothing is created.
    with pytest.raises(shmalloc.FailedPreconditionError) as e:
        client.create_region(region_name, "free_list", 4 << 20,
                             huge_pages=True)
    assert "--huge_dir" in str(e.value)
    with pytest.raises(shmalloc.NotFoundError):
        client.region(region_name)


def test_delete_with_live_allocations(client, region_name):
    region = client.create_region(region_name, "pool", 1 << 20,
                                  block_size=4096)
    block = region.allocate(4096)
    with pytest.raises(shmalloc.FailedPreconditionError):
        client.delete_region(region_name)
    block.free()
    client.delete_region(region_name)
    with pytest.raises(shmalloc.NotFoundError):
        client.region(region_name)


def test_block_cache_needs_pool_or_slab(client, region_name):
    region = client.create_region(region_name, "buddy", 1 << 20,
                                  block_size=64)
    with pytest.raises(shmalloc.FailedPreconditionError):
        region.block_cache()


def test_owning_allocation_is_not_pickled(client, region_name):
    region = client.create_region(region_name, "free_list", 1 << 20)
    with region.allocate(64) as block:
        with pytest.raises(pickle.PicklingError):
            pickle.dumps(block)


def test_unavailable_daemon(tmp_path):
    with pytest.raises(shmalloc.UnavailableError) as e:
        shmalloc.Client(str(tmp_path / "nobody.sock"), connect_timeout=0.2)
    assert e.value.code in ("UNAVAILABLE",)


def test_closed_client(daemon):
    c = shmalloc.Client(daemon.socket)
    c.close()
    with pytest.raises(shmalloc.FailedPreconditionError):
        c.region("x")


def test_objects_inherited_through_fork_refuse_use(client, region_name):
    import os
    region = client.create_region(region_name, "free_list", 1 << 20)
    block = region.allocate(64)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: Python-level checks only, then _exit
        code = 0
        for call in (lambda: client.region(region_name),
                     lambda: region.allocate(64), block.free):
            try:
                call()
                code = 1
            except shmalloc.FailedPreconditionError as e:
                if "fork" not in str(e):
                    code = 2
            except BaseException:
                code = 3
        os.write(w, bytes([code]))
        os._exit(0)
    os.close(w)
    result = os.read(r, 1)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert result == b"\x00"
    block.free()  # the parent's objects still work
