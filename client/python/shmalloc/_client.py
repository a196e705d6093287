"""Client, Region, Allocation, Arena and BlockCache over libshmalloc_c.

Every object here wraps a handle of the C API (client/include/shmalloc/
shmalloc.h); sessions, reconnection after a daemon restart, request-id
retries and the arena hot path are the C++ client library's. This module only
turns offsets into memoryviews and NumPy arrays, and ownership into Python
object lifetimes.

Lifetimes: a memoryview or ndarray made from an Allocation keeps that
Allocation (and its Region's mapping) alive, so memory is never unmapped
under a view. An *owning* Allocation frees its block when it is closed
(``close()``, the end of a ``with`` block) or garbage-collected; a
non-owning one (a view of someone else's block) never frees.

Processes: a Client belongs to the process that created it. After
``os.fork()`` the child must create its own Client (objects inherited from
the parent raise FailedPreconditionError); prefer the "spawn" or
"forkserver" start methods of multiprocessing.

Thread-safety: every method may be called from any thread, except
``Arena.reset`` (no concurrent allocation) and closing an object while
another thread uses it.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import weakref
from ctypes import byref, c_uint64, c_void_p
from typing import (TYPE_CHECKING, Any, Dict, Iterable, List, NamedTuple,
                    Optional, Sequence, Tuple, Union)

from . import _lib
from ._errors import (FailedPreconditionError, InvalidArgumentError,
                      NotFoundError, ResourceExhaustedError)

if TYPE_CHECKING:  # pragma: no cover
    import numpy

STRATEGIES = {
    "arena": 1,
    "pool": 2,
    "buddy": 3,
    "slab": 4,
    "free_list": 5,
}
_STRATEGY_NAMES = {v: k for k, v in STRATEGIES.items()}
_CONNECTION_STATES = ("CONNECTED", "RECONNECTING", "RESUMED", "LOST")

# Bumped in a forked child: objects made before the fork are unusable there
# (the C++ client's threads did not survive the fork).
_fork_epoch = 0


def _after_fork_in_child() -> None:
    global _fork_epoch, _default_client
    _fork_epoch += 1
    _default_client = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class Handle(NamedTuple):
    """What crosses a process boundary: a block named by (region, offset,
    size, generation). Plain data; pickles in a few dozen bytes."""

    region: str
    offset: int
    size: int
    generation: int


# What names a block: a Handle, a (region, offset, size, generation) tuple,
# or an Allocation (its handle).
HandleLike = Union[Handle, Tuple[str, int, int, int], "Allocation"]


class _Native:
    """Owns one C handle and releases it exactly once, in the process that
    made it (never in a forked child, whose copy is not backed by threads)."""

    __slots__ = ("ptr", "_close", "_epoch", "__weakref__")

    def __init__(self, ptr: int, close_fn: Any) -> None:
        self.ptr: Optional[int] = ptr
        self._close = close_fn
        self._epoch = _fork_epoch

    def get(self, what: str) -> int:
        if self.ptr is None:
            raise FailedPreconditionError(f"{what} is closed")
        if self._epoch != _fork_epoch:
            raise FailedPreconditionError(
                f"{what} was created before os.fork(); create a new "
                "shmalloc.Client in this process")
        return self.ptr

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None and self._epoch == _fork_epoch:
            self._close(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to do
            pass


def _ms(seconds: Optional[float]) -> int:
    return 0 if seconds is None else max(1, int(seconds * 1000))


def _enc(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode("utf-8")


class Client:
    """A connection to shmallocd and the session it holds open.

    The session ends (and the daemon frees every non-detached allocation it
    owns) when the Client and every Region, Allocation, Arena and BlockCache
    made from it are gone, or when this process exits or is killed.

    >>> with shmalloc.Client() as client:
    ...     region = client.region("frames")
    ...     with region.allocate(1 << 20) as block:
    ...         block.ndarray("float32")[:] = 1.0
    """

    def __init__(self, socket: Optional[str] = None, *,
                 client_name: Optional[str] = None,
                 shm_dir: Optional[str] = None,
                 connect_timeout: float = 5.0,
                 rpc_timeout: float = 5.0,
                 reconnect: bool = True,
                 call_wait: Optional[float] = None) -> None:
        """Connects to the daemon and opens a session.

        socket: a socket path or gRPC target; None = $SHMALLOC_SOCKET, else
        the daemon's default socket. client_name: shown in the daemon's
        stats (None = "<program>[pid]"). shm_dir: this process's view of the
        daemon's shm directory (None = $SHMALLOC_SHM_DIR or the daemon's).
        Timeouts in seconds. reconnect: ride through a daemon restart by
        resuming the session. call_wait: how long a call waits for the
        daemon during an outage (None = rpc_timeout).

        Raises UnavailableError when the daemon cannot be reached,
        DeadlineExceededError, InvalidArgumentError.
        """
        lib = _lib.lib()
        opts = _lib.ConnectOptions()
        opts.target = _enc(socket)
        opts.client_name = _enc(client_name)
        opts.shm_dir = _enc(shm_dir)
        opts.connect_timeout_ms = _ms(connect_timeout)
        opts.rpc_timeout_ms = _ms(rpc_timeout)
        opts.disable_reconnect = 0 if reconnect else 1
        opts.call_wait_ms = _ms(call_wait)
        ptr = c_void_p()
        _lib.check(lib.shmalloc_connect_with_options(byref(opts), byref(ptr)))
        self._native = _Native(ptr.value, lib.shmalloc_client_close)
        self._regions: Dict[str, Region] = {}
        self._regions_lock = threading.Lock()
        global _first_client
        if _first_client is None or _first_client() is None:
            _first_client = weakref.ref(self)

    @classmethod
    def connect(cls, socket: Optional[str] = None, **kwargs: Any) -> "Client":
        """Same as Client(socket, **kwargs)."""
        return cls(socket, **kwargs)

    def _ptr(self) -> int:
        return self._native.get("Client")

    @property
    def session_id(self) -> int:
        """The id the daemon gave this session (never 0)."""
        return int(_lib.lib().shmalloc_client_session_id(self._ptr()))

    @property
    def connection_state(self) -> str:
        """"CONNECTED", "RECONNECTING", "RESUMED" or "LOST"."""
        state = _lib.lib().shmalloc_client_connection_state(self._ptr())
        return _CONNECTION_STATES[state]

    @property
    def closed(self) -> bool:
        return self._native.ptr is None

    def close(self) -> None:
        """Releases this handle. The session lives on while regions or
        allocations made from it are alive. Idempotent."""
        with self._regions_lock:
            self._regions.clear()
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<shmalloc.Client closed>"
        return f"<shmalloc.Client session {self.session_id}>"

    # ---- regions ---------------------------------------------------------

    def create_region(self, name: str, strategy: str, size_bytes: int, *,
                      block_size: int = 0,
                      size_classes: Optional[Sequence[int]] = None,
                      quota_bytes_per_session: int = 0,
                      huge_pages: bool = False) -> "Region":
        """Creates a region in the daemon and returns it opened.

        strategy: "arena", "pool", "buddy", "slab" or "free_list".
        huge_pages: put the data file on the daemon's --huge_dir (raises
        FailedPreconditionError when it has none).
        Raises AlreadyExistsError, InvalidArgumentError,
        ResourceExhaustedError.
        """
        if strategy not in STRATEGIES:
            raise InvalidArgumentError(
                f"strategy must be one of {sorted(STRATEGIES)}, not "
                f"{strategy!r}")
        config = _lib.RegionConfig()
        config.name = name.encode("utf-8")
        config.strategy = STRATEGIES[strategy]
        config.size_bytes = size_bytes
        config.block_size = block_size
        classes = list(size_classes or [])
        array = (c_uint64 * len(classes))(*classes)
        if classes:
            config.size_classes = ctypes.cast(array, _lib.c_uint64_p)
        config.size_class_count = len(classes)
        config.quota_bytes_per_session = quota_bytes_per_session
        config.huge_pages = 1 if huge_pages else 0
        _lib.check(_lib.lib().shmalloc_region_create(self._ptr(),
                                                     byref(config)))
        return self.region(name)

    def delete_region(self, name: str, force: bool = False) -> None:
        """Deletes a region and its files. Raises FailedPreconditionError
        when it has live allocations and not force, NotFoundError. This
        process keeps its mapping while objects use it."""
        _lib.check(_lib.lib().shmalloc_region_delete(
            self._ptr(), name.encode("utf-8"), 1 if force else 0))
        with self._regions_lock:
            self._regions.pop(name, None)

    def region(self, name: str) -> "Region":
        """Returns region `name`, mapped read-write (once per Client: later
        calls return the same Region). Raises NotFoundError,
        PermissionDeniedError, DataLossError."""
        client = self._ptr()  # raises when closed or inherited via fork
        with self._regions_lock:
            region = self._regions.get(name)
            if region is not None and not region.closed:
                return region
            ptr = c_void_p()
            _lib.check(_lib.lib().shmalloc_region_open(
                client, name.encode("utf-8"), byref(ptr)))
            region = Region(self, _Native(ptr.value,
                                          _lib.lib().shmalloc_region_close))
            self._regions[name] = region
            return region

    def _forget(self, region: "Region") -> None:
        with self._regions_lock:
            if self._regions.get(region.name) is region:
                del self._regions[region.name]

    def regions(self) -> List[Dict[str, Any]]:
        """Returns every region's description (ListRegions) as dicts: name,
        strategy, size_bytes, block_size, generation, heap_begin, ..."""
        out = c_void_p()
        _lib.check(_lib.lib().shmalloc_regions_json(self._ptr(), byref(out)))
        return json.loads(_lib.take_string(out)).get("regions", [])

    def stats(self, region: Optional[str] = None) -> Dict[str, Any]:
        """Returns the daemon's figures (GetStats) as a dict, the document
        `shmalloc stats --json` prints: uptime_ms, sessions, regions (each
        with used_bytes, live_allocations, sessions: who holds what, ...),
        rpcs. region: one region's figures only. Raises NotFoundError."""
        out = c_void_p()
        _lib.check(_lib.lib().shmalloc_stats_json(
            self._ptr(), _enc(region), byref(out)))
        return json.loads(_lib.take_string(out))

    # ---- hand-off ----------------------------------------------------------

    def open(self, handle: HandleLike
             ) -> "Allocation":
        """Returns a non-owning Allocation over a block another process
        handed over (it is not freed when this object goes away). Raises
        FailedPreconditionError when the region was reset since the handle
        was made (stale), InvalidArgumentError when the bytes lie outside
        the heap, NotFoundError."""
        h = _as_handle(handle)
        return self.region(h.region)._open(h, owning=False)

    def adopt(self, handle: HandleLike
              ) -> "Allocation":
        """Takes ownership of a block another process allocated with
        ``detached=True`` and handed over, and returns an owning Allocation
        over it. The daemon moves the block to this process's session
        (AdoptAllocations): this process frees it (close(), the end of a
        ``with`` block, garbage collection), and if this process exits or
        is killed first, the daemon frees it. Raises
        FailedPreconditionError when the block is not detached (a session
        owns it: adopting would steal it), is not live, or is stale;
        ResourceExhaustedError (this session's quota), NotFoundError,
        InvalidArgumentError (outside the heap). Nothing changes on error."""
        h = _as_handle(handle)
        return self.region(h.region)._open(h, owning=False).adopt()


def _as_handle(handle: Any) -> Handle:
    if isinstance(handle, Allocation):
        return handle.handle
    return Handle(*handle)


_first_client: Optional["weakref.ReferenceType[Client]"] = None
_default_client: Optional[Client] = None
_default_lock = threading.Lock()


def set_default_client(client: Optional[Client]) -> None:
    """Makes `client` the one unpickled Allocations open with in this
    process (None: forget it)."""
    global _default_client
    with _default_lock:
        _default_client = client


def default_client() -> Client:
    """Returns the process-default Client: the one given to
    set_default_client, else the first Client created in this process that
    is still open, else a new Client() (connected with the defaults)."""
    global _default_client
    with _default_lock:
        if _default_client is not None and not _default_client.closed:
            return _default_client
        first = _first_client() if _first_client is not None else None
        if first is not None and not first.closed:
            _default_client = first
        else:
            _default_client = Client()
        return _default_client


def open_handle(handle: HandleLike,
                client: Optional[Client] = None) -> "Allocation":
    """Client.open on `client` (default: default_client())."""
    return (client or default_client()).open(handle)


def adopt(handle: HandleLike,
          client: Optional[Client] = None) -> "Allocation":
    """Client.adopt on `client` (default: default_client())."""
    return (client or default_client()).adopt(handle)


def _unpickle_allocation(region: str, offset: int, size: int,
                         generation: int) -> "Allocation":
    return default_client().open(Handle(region, offset, size, generation))


class Region:
    """One region, mapped read-write into this process. Made by
    Client.region() / Client.create_region()."""

    def __init__(self, client: Client, native: _Native) -> None:
        self._client = client
        self._native = native
        self._closed = False
        info = _lib.RegionInfo()
        _lib.check(_lib.lib().shmalloc_region_info(native.ptr, byref(info)))
        self.name: str = info.name.decode("utf-8")
        self.strategy: str = _STRATEGY_NAMES.get(info.strategy, "unspecified")
        self.size_bytes: int = info.size_bytes
        self.block_size: int = info.block_size
        self.heap_begin: int = info.heap_begin
        self.heap_end: int = info.heap_end

    def _ptr(self) -> int:
        # For blocks already made: works after close() (the mapping lives
        # until the last Allocation, view, Arena or BlockCache is gone).
        return self._native.get(f"Region {self.name!r}")

    def _open_ptr(self) -> int:
        # For anything new: refused after close().
        if self._closed:
            raise FailedPreconditionError(f"Region {self.name!r} is closed")
        return self._ptr()

    @property
    def client(self) -> Client:
        return self._client

    @property
    def closed(self) -> bool:
        return self._closed or self._native.ptr is None

    @property
    def generation(self) -> int:
        """The region's generation now (bumped by every reset)."""
        info = _lib.RegionInfo()
        _lib.check(_lib.lib().shmalloc_region_info(self._ptr(), byref(info)))
        return int(info.generation)

    def info(self) -> Dict[str, Any]:
        """Returns the region's description as a dict."""
        return {
            "name": self.name, "strategy": self.strategy,
            "size_bytes": self.size_bytes, "block_size": self.block_size,
            "generation": self.generation, "heap_begin": self.heap_begin,
            "heap_end": self.heap_end,
        }

    def stats(self) -> Dict[str, Any]:
        """Returns the region's figures from the daemon as a dict: used_bytes,
        free_bytes, live_allocations, detached_allocations, fragmentation,
        sessions (session_id, client_name, used_bytes, live_allocations),
        size_histogram, ... Raises NotFoundError when deleted."""
        regions = self._client.stats(self.name).get("regions", [])
        for r in regions:
            if r.get("name") == self.name:
                return r
        raise NotFoundError(f"no stats for region {self.name!r}")

    def close(self) -> None:
        """Refuses new allocations through this object from now on; blocks,
        views, arenas and caches made from it keep working, and the mapping
        goes away (munmap) once none of them is alive. Idempotent."""
        self._closed = True
        self._client._forget(self)

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<shmalloc.Region {self.name!r} {self.strategy} "
                f"{self.size_bytes} bytes>")

    # ---- allocation --------------------------------------------------------

    def allocate(self, size: int, *, detached: bool = False,
                 alignment: int = 0) -> "Allocation":
        """Allocates `size` bytes through the daemon (one RPC) and returns
        an owning Allocation.

        detached=False: the block belongs to this process's session; the
        daemon frees it when the process exits or is killed. detached=True:
        it belongs to no session and survives this process: use it for
        blocks handed to another process (detach() them, and the receiver
        adopt()s them). alignment: a power of two <= 2 MiB (BUDDY, POOL,
        SLAB: <= 4096; 0 = 16).
        Raises InvalidArgumentError, ResourceExhaustedError, NotFoundError,
        UnavailableError.
        """
        return self.allocate_many(size, 1, detached=detached,
                                  alignment=alignment)[0]

    def allocate_many(self, size: int, count: int, *, detached: bool = False,
                      alignment: int = 0) -> List["Allocation"]:
        """Allocates `count` blocks of `size` bytes in one RPC, all or
        nothing. Errors as allocate()."""
        if count < 1:
            raise InvalidArgumentError("count must be at least 1")
        offsets = (c_uint64 * count)()
        sizes = (c_uint64 * count)()
        generation = c_uint64()
        _lib.check(_lib.lib().shmalloc_allocate_extents(
            self._open_ptr(), size, count, alignment, 1 if detached else 0,
            offsets, sizes, byref(generation)))
        return [Allocation(self, offsets[i], size, generation.value,
                           owning=True, detached=detached,
                           reserved=sizes[i]) for i in range(count)]

    def free_many(self, allocations: Iterable["Allocation"]) -> None:
        """Frees several allocations of this region in one RPC, all or
        nothing (every one must come from the same generation). Raises
        FailedPreconditionError (not live, stale), InvalidArgumentError."""
        allocs = list(allocations)
        if not allocs:
            return
        generation = allocs[0].generation
        for a in allocs:
            a._check_live()
            if a._region is not self or a._cache is not None:
                raise InvalidArgumentError(
                    "free_many: every allocation must be a daemon block of "
                    f"region {self.name!r}")
            if a.generation != generation:
                raise InvalidArgumentError("free_many: mixed generations")
        self._check_generation(generation)
        offsets = (c_uint64 * len(allocs))(*(a.offset for a in allocs))
        _lib.check(_lib.lib().shmalloc_free_generation(
            self._ptr(), offsets, len(allocs), generation))
        for a in allocs:
            a._mark_freed()

    def reset(self, force: bool = False) -> None:
        """Frees everything in the region and bumps its generation (old
        handles become stale). Raises FailedPreconditionError when it has
        live allocations and not force."""
        _lib.check(_lib.lib().shmalloc_region_reset(self._open_ptr(),
                                                    1 if force else 0))

    def arena(self, capacity_bytes: int = 0) -> "Arena":
        """Returns an Arena on this region (bump allocation without an RPC):
        an ARENA region's shared cursor, or on any other region one extent of
        capacity_bytes (> 4096) owned by this session."""
        ptr = c_void_p()
        _lib.check(_lib.lib().shmalloc_arena_create(
            self._open_ptr(), capacity_bytes, byref(ptr)))
        return Arena(self, _Native(ptr.value,
                                   _lib.lib().shmalloc_arena_destroy))

    def block_cache(self, batch: int = 0) -> "BlockCache":
        """Returns a BlockCache over this POOL or SLAB region (blocks move
        to and from the daemon `batch` at a time; 0 = 64). Raises
        FailedPreconditionError for other strategies."""
        ptr = c_void_p()
        _lib.check(_lib.lib().shmalloc_block_cache_create(
            self._open_ptr(), batch, byref(ptr)))
        return BlockCache(self, _Native(
            ptr.value, _lib.lib().shmalloc_block_cache_destroy))

    # ---- raw memory --------------------------------------------------------

    def _address(self, offset: int, size: int) -> int:
        if size <= 0 or offset < self.heap_begin or \
                offset + size > self.heap_end:
            raise InvalidArgumentError(
                f"bytes [{offset}, {offset + size}) are not inside the heap "
                f"[{self.heap_begin}, {self.heap_end}) of {self.name!r}")
        address = _lib.lib().shmalloc_to_pointer(self._ptr(), offset)
        if not address:
            raise InvalidArgumentError(f"offset {offset} outside the heap")
        return int(address)

    def _view(self, offset: int, size: int, keep: Any) -> memoryview:
        address = self._address(offset, size)
        array = (ctypes.c_ubyte * size).from_address(address)
        array._shmalloc_keep = keep  # the view keeps its owner alive
        return memoryview(array).cast("B")

    def _check_generation(self, generation: int) -> None:
        # The daemon checks too, but treats generation 0 as "unchecked".
        if generation != self.generation:
            raise FailedPreconditionError(
                f"stale: region {self.name!r} was reset since generation "
                f"{generation}")

    def _open(self, h: Handle, owning: bool) -> "Allocation":
        if h.generation != self.generation:
            raise FailedPreconditionError(
                f"stale handle: region {self.name!r} was reset since "
                f"generation {h.generation}")
        self._address(h.offset, h.size)
        return Allocation(self, h.offset, h.size, h.generation, owning=owning,
                          detached=True)


class Allocation:
    """One block in a region: ``.offset``, ``.size`` (bytes asked for),
    ``.generation``, a writable memoryview (``.buffer``) and zero-copy
    NumPy arrays (``.ndarray()``).

    Owning allocations free their block when closed or garbage-collected;
    views made from an allocation keep it alive. Pickling yields its
    Handle (region, offset, size, generation) and unpickles as a non-owning
    Allocation opened with shmalloc.default_client(); pickling an owning
    allocation is refused: detach() it first, and the receiver adopt()s it
    (ownership moves explicitly, through the daemon).
    """

    __slots__ = ("_region", "offset", "size", "reserved_size", "generation",
                 "detached", "_owning", "_freed", "_cache", "__weakref__")

    def __init__(self, region: Region, offset: int, size: int,
                 generation: int, *, owning: bool, detached: bool,
                 reserved: Optional[int] = None,
                 cache: Optional["BlockCache"] = None) -> None:
        self._region = region
        self.offset: int = int(offset)
        self.size: int = int(size)
        self.reserved_size: int = int(reserved if reserved is not None
                                      else size)
        self.generation: int = int(generation)
        self.detached: bool = detached
        self._owning = owning
        self._freed = False
        self._cache = cache

    @property
    def region(self) -> Region:
        return self._region

    @property
    def owning(self) -> bool:
        """True when this object frees the block on close / collection."""
        return self._owning and not self._freed

    @property
    def handle(self) -> Handle:
        """The (region, offset, size, generation) naming this block."""
        return Handle(self._region.name, self.offset, self.size,
                      self.generation)

    def _check_live(self) -> None:
        if self._freed:
            raise FailedPreconditionError(
                f"allocation at offset {self.offset} was freed")

    def _mark_freed(self) -> None:
        self._freed = True
        self._owning = False

    @property
    def buffer(self) -> memoryview:
        """A writable memoryview of the block's `size` bytes (no copy)."""
        return self.memoryview()

    def memoryview(self) -> memoryview:
        """Returns a writable memoryview of the block's bytes (no copy); it
        keeps this Allocation alive."""
        self._check_live()
        return self._region._view(self.offset, self.size, self)

    def ndarray(self, dtype: Any = "uint8",
                shape: Union[int, Sequence[int], None] = None,
                order: str = "C") -> "numpy.ndarray":
        """Returns a NumPy array over the block's bytes, without copying:
        writes through it are seen by every process mapping the region.
        shape None: as many items of dtype as fit. Raises
        InvalidArgumentError when the shape needs more bytes than the
        block has."""
        import numpy as np
        dt = np.dtype(dtype)
        if shape is None:
            shape = (self.size // dt.itemsize,)
        elif isinstance(shape, int):
            shape = (shape,)
        count = 1
        for n in shape:
            count *= int(n)
        if count * dt.itemsize > self.size:
            raise InvalidArgumentError(
                f"shape {tuple(shape)} of {dt} needs {count * dt.itemsize} "
                f"bytes; the allocation has {self.size}")
        return np.ndarray(shape, dtype=dt, buffer=self.memoryview(),
                          order=order)

    def free(self) -> None:
        """Frees the block now, owning or not (a consumer frees what a
        producer handed over). Views made earlier must not be used after.
        Raises FailedPreconditionError (already freed, region reset since),
        NotFoundError."""
        self._check_live()
        self._region._check_generation(self.generation)
        if self._cache is not None:
            self._cache._free(self)
        else:
            offsets = (c_uint64 * 1)(self.offset)
            _lib.check(_lib.lib().shmalloc_free_generation(
                self._region._ptr(), offsets, 1, self.generation))
        self._mark_freed()

    def detach(self) -> Handle:
        """Gives up this object's duty to free the block and returns its
        Handle, to send to the process that will adopt() it. The block is
        then freed only by whoever adopts it (or frees it by handle). A
        hand-off must allocate with detached=True: a session-owned block is
        still freed by the daemon when this process's session ends, and the
        daemon refuses to let another session adopt it."""
        self._check_live()
        self._owning = False
        return self.handle

    def adopt(self) -> "Allocation":
        """Takes ownership of this (unpickled or opened) detached block:
        the daemon moves it to this process's session, so this object
        frees it (close(), garbage collection) and the daemon frees it if
        this process exits or is killed first. Returns self. Errors as
        Client.adopt; on error nothing changes (this object stays a
        view)."""
        self._check_live()
        if self._cache is not None:
            raise InvalidArgumentError(
                "a BlockCache block cannot be adopted: it is its cache's")
        self._region._check_generation(self.generation)
        offsets = (c_uint64 * 1)(self.offset)
        _lib.check(_lib.lib().shmalloc_adopt(
            self._region._ptr(), offsets, 1, self.generation))
        self._owning = True
        self.detached = False
        return self

    def close(self) -> None:
        """Frees the block if owning; otherwise forgets it. Idempotent."""
        if self._owning and not self._freed:
            self.free()
        self._freed = True

    def __enter__(self) -> "Allocation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if self._owning and not self._freed:
            try:
                self.free()
            except Exception:  # e.g. freed elsewhere, or interpreter exit
                pass

    def __reduce__(self) -> Tuple[Any, Tuple[str, int, int, int]]:
        if self.owning:
            import pickle
            raise pickle.PicklingError(
                "an owning shmalloc.Allocation cannot be pickled: call "
                "detach() first (and send the Handle it returns, or the "
                "allocation) so exactly one process frees it")
        return (_unpickle_allocation, tuple(self.handle))

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        state = "freed" if self._freed else (
            "owning" if self._owning else "view")
        return (f"<shmalloc.Allocation {self._region.name}@{self.offset} "
                f"size {self.size} gen {self.generation} {state}>")


class Arena:
    """Bump allocation without an RPC per block (Region.arena()). Blocks
    are freed only all together (reset(), or closing the arena on a
    non-ARENA region)."""

    def __init__(self, region: Region, native: _Native) -> None:
        self._region = region
        self._native = native

    def _ptr(self) -> int:
        return self._native.get("Arena")

    def allocate(self, size: int, alignment: int = 0) -> Allocation:
        """Returns a non-owning Allocation of `size` bytes bumped off the
        arena (lock-free, no RPC). Raises ResourceExhaustedError when the
        arena is full (or the arguments are bad)."""
        address = _lib.lib().shmalloc_arena_allocate(self._ptr(), size,
                                                      alignment)
        if not address:
            raise ResourceExhaustedError(
                f"arena: no room for {size} bytes (alignment {alignment})")
        offset = c_uint64()
        _lib.check(_lib.lib().shmalloc_to_offset(self._region._ptr(),
                                                 address, byref(offset)))
        return Allocation(self._region, offset.value, size,
                          self._region.generation, owning=False,
                          detached=False)

    def reset(self) -> None:
        """Releases every block of the arena (an ARENA region is reset
        through the daemon, bumping its generation). REQUIRES: no concurrent
        allocation on it in any process."""
        _lib.check(_lib.lib().shmalloc_arena_reset(self._ptr()))

    def usage(self) -> Dict[str, int]:
        """Returns {"capacity_bytes", "used_bytes"} (used by every process
        on the shared cursor)."""
        cap, used = c_uint64(), c_uint64()
        _lib.check(_lib.lib().shmalloc_arena_usage(self._ptr(), byref(cap),
                                                   byref(used)))
        return {"capacity_bytes": cap.value, "used_bytes": used.value}

    def close(self) -> None:
        """Releases the arena (its extent is freed on a non-ARENA region).
        Idempotent."""
        self._native.close()

    def __enter__(self) -> "Arena":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class BlockCache:
    """A per-process cache of daemon blocks over a POOL or SLAB region
    (Region.block_cache()): allocate/free usually make no RPC. Cached
    blocks stay owned by this session."""

    def __init__(self, region: Region, native: _Native) -> None:
        self._region = region
        self._native = native

    def _ptr(self) -> int:
        return self._native.get("BlockCache")

    def allocate(self, size: int) -> Allocation:
        """Returns an owning Allocation of a block of at least `size` bytes;
        closing it gives the block back to the cache. Raises
        InvalidArgumentError (no class fits), errors of the refill RPC."""
        offset = c_uint64()
        _lib.check(_lib.lib().shmalloc_block_cache_allocate(
            self._ptr(), size, byref(offset)))
        return Allocation(self._region, offset.value, size,
                          self._region.generation, owning=True,
                          detached=False, cache=self,
                          reserved=self.class_size(size))

    def _free(self, allocation: Allocation) -> None:
        _lib.check(_lib.lib().shmalloc_block_cache_free(
            self._ptr(), allocation.offset, allocation.size))

    def class_size(self, size: int) -> int:
        """Returns the block size serving `size` (0 when none does)."""
        return int(_lib.lib().shmalloc_block_cache_class_size(self._ptr(),
                                                              size))

    def flush(self) -> None:
        """Returns every cached block to the daemon."""
        _lib.check(_lib.lib().shmalloc_block_cache_flush(self._ptr()))

    def stats(self) -> Dict[str, int]:
        """Returns allocate_rpcs, free_rpcs, blocks_from_daemon,
        blocks_to_daemon, cached_blocks, rejected_frees."""
        s = _lib.BlockCacheStats()
        _lib.check(_lib.lib().shmalloc_block_cache_stats(self._ptr(),
                                                         byref(s)))
        return {name: getattr(s, name) for name, _ in s._fields_}

    def close(self) -> None:
        """Returns every cached block to the daemon and releases the cache.
        Idempotent."""
        self._native.close()

    def __enter__(self) -> "BlockCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
