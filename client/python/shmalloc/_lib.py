"""Loading libshmalloc_c and declaring its C signatures (ctypes).

The library is looked up, first hit wins:

1. ``$SHMALLOC_C_LIBRARY``: a path to libshmalloc_c.so (a build tree:
   ``build/release/client/libshmalloc_c.so``);
2. the path ``cmake --install`` recorded in ``shmalloc/_install.py``;
3. a ``libshmalloc_c.so*`` next to this package (a copy bundled with it);
4. ``ctypes.util.find_library("shmalloc_c")`` (the ld.so cache, e.g. after
   installing to /usr/local and running ldconfig).

It is loaded on first use, so ``import shmalloc`` never fails for want of it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from ctypes import (POINTER, CFUNCTYPE, Structure, c_char, c_char_p, c_double,
                    c_int, c_size_t, c_uint32, c_uint64, c_void_p)
from typing import List, Optional

from ._errors import LibraryNotFoundError, error_for

LIBRARY_ENV_VAR = "SHMALLOC_C_LIBRARY"

c_uint64_p = POINTER(c_uint64)


class ConnectOptions(Structure):
    """shmalloc_connect_options_t."""
    _fields_ = [
        ("target", c_char_p),
        ("client_name", c_char_p),
        ("shm_dir", c_char_p),
        ("connect_timeout_ms", c_uint32),
        ("rpc_timeout_ms", c_uint32),
        ("disable_reconnect", c_int),
        ("reconnect_initial_backoff_ms", c_uint32),
        ("reconnect_max_backoff_ms", c_uint32),
        ("reconnect_give_up_ms", c_uint32),
        ("call_wait_ms", c_uint32),
        ("on_state_change", CFUNCTYPE(None, c_int, c_void_p)),
        ("on_state_change_arg", c_void_p),
    ]


class RegionConfig(Structure):
    """shmalloc_region_config_t."""
    _fields_ = [
        ("name", c_char_p),
        ("strategy", c_int),
        ("size_bytes", c_uint64),
        ("block_size", c_uint64),
        ("size_classes", c_uint64_p),
        ("size_class_count", c_size_t),
        ("quota_bytes_per_session", c_uint64),
        ("huge_pages", c_int),
    ]


class RegionInfo(Structure):
    """shmalloc_region_info_t."""
    _fields_ = [
        ("name", c_char * 64),
        ("strategy", c_int),
        ("size_bytes", c_uint64),
        ("block_size", c_uint64),
        ("generation", c_uint64),
        ("heap_begin", c_uint64),
        ("heap_end", c_uint64),
    ]


class RegionStats(Structure):
    """shmalloc_region_stats_t."""
    _fields_ = [
        ("capacity_bytes", c_uint64),
        ("used_bytes", c_uint64),
        ("free_bytes", c_uint64),
        ("peak_used_bytes", c_uint64),
        ("live_allocations", c_uint64),
        ("failed_allocations", c_uint64),
        ("largest_free_bytes", c_uint64),
        ("fragmentation", c_double),
        ("detached_allocations", c_uint64),
        ("detached_bytes", c_uint64),
        ("sessions", c_uint64),
        ("generation", c_uint64),
    ]


class BlockCacheStats(Structure):
    """shmalloc_block_cache_stats_t."""
    _fields_ = [
        ("allocate_rpcs", c_uint64),
        ("free_rpcs", c_uint64),
        ("blocks_from_daemon", c_uint64),
        ("blocks_to_daemon", c_uint64),
        ("cached_blocks", c_uint64),
        ("rejected_frees", c_uint64),
    ]


_S = c_int  # shmalloc_status_t
_P = c_void_p  # every opaque handle

# name: (restype, argtypes)
_SIGNATURES = {
    "shmalloc_last_error": (c_char_p, []),
    "shmalloc_status_name": (c_char_p, [c_int]),
    "shmalloc_connect_with_options": (_S, [POINTER(ConnectOptions),
                                           POINTER(_P)]),
    "shmalloc_client_close": (None, [_P]),
    "shmalloc_client_session_id": (c_uint64, [_P]),
    "shmalloc_client_connection_state": (c_int, [_P]),
    "shmalloc_connection_state_name": (c_char_p, [c_int]),
    "shmalloc_region_create": (_S, [_P, POINTER(RegionConfig)]),
    "shmalloc_region_delete": (_S, [_P, c_char_p, c_int]),
    "shmalloc_region_open": (_S, [_P, c_char_p, POINTER(_P)]),
    "shmalloc_region_close": (None, [_P]),
    "shmalloc_region_info": (_S, [_P, POINTER(RegionInfo)]),
    "shmalloc_region_reset": (_S, [_P, c_int]),
    "shmalloc_allocate_extents": (_S, [_P, c_uint64, c_uint32, c_uint64,
                                       c_int, c_uint64_p, c_uint64_p,
                                       c_uint64_p]),
    "shmalloc_free_generation": (_S, [_P, c_uint64_p, c_size_t, c_uint64]),
    "shmalloc_adopt": (_S, [_P, c_uint64_p, c_size_t, c_uint64]),
    "shmalloc_to_pointer": (c_void_p, [_P, c_uint64]),
    "shmalloc_to_offset": (_S, [_P, c_void_p, c_uint64_p]),
    "shmalloc_arena_create": (_S, [_P, c_uint64, POINTER(_P)]),
    "shmalloc_arena_destroy": (None, [_P]),
    "shmalloc_arena_allocate": (c_void_p, [_P, c_uint64, c_uint64]),
    "shmalloc_arena_reset": (_S, [_P]),
    "shmalloc_arena_usage": (_S, [_P, c_uint64_p, c_uint64_p]),
    "shmalloc_region_stats": (_S, [_P, POINTER(RegionStats)]),
    "shmalloc_stats_json": (_S, [_P, c_char_p, POINTER(c_void_p)]),
    "shmalloc_regions_json": (_S, [_P, POINTER(c_void_p)]),
    "shmalloc_string_free": (None, [c_void_p]),
    "shmalloc_block_cache_create": (_S, [_P, c_uint32, POINTER(_P)]),
    "shmalloc_block_cache_destroy": (None, [_P]),
    "shmalloc_block_cache_allocate": (_S, [_P, c_uint64, c_uint64_p]),
    "shmalloc_block_cache_free": (_S, [_P, c_uint64, c_uint64]),
    "shmalloc_block_cache_flush": (_S, [_P]),
    "shmalloc_block_cache_class_size": (c_uint64, [_P, c_uint64]),
    "shmalloc_block_cache_stats": (_S, [_P, POINTER(BlockCacheStats)]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def candidates() -> List[str]:
    """Returns the paths tried for libshmalloc_c, in order."""
    out: List[str] = []
    env = os.environ.get(LIBRARY_ENV_VAR)
    if env:
        out.append(env)
    try:
        from . import _install  # written by `cmake --install`
        out.append(_install.LIBRARY)
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    out.extend(sorted(glob.glob(os.path.join(here, "libshmalloc_c.so*"))))
    found = ctypes.util.find_library("shmalloc_c")
    if found:
        out.append(found)
    return out


def lib() -> ctypes.CDLL:
    """Returns libshmalloc_c, loading it (and declaring every signature) on
    the first call. Raises LibraryNotFoundError when no candidate loads."""
    global _lib, _path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for path in candidates():
            try:
                handle = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"{path}: {e}")
                continue
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(handle, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _path = path
            _lib = handle
            return handle
        raise LibraryNotFoundError(
            "cannot load libshmalloc_c; set " + LIBRARY_ENV_VAR +
            " to its path (e.g. build/release/client/libshmalloc_c.so), "
            "install it with `cmake --install`, or run ldconfig. Tried: " +
            ("; ".join(tried) if tried else "nothing found"))


def library_path() -> str:
    """Returns the path libshmalloc_c was loaded from (loading it)."""
    lib()
    assert _path is not None
    return _path


def check(status: int) -> None:
    """Raises the exception for a non-zero shmalloc_status_t (the message
    of the failure on this thread comes from shmalloc_last_error)."""
    if status != 0:
        raw = lib().shmalloc_last_error()
        raise error_for(status, raw.decode("utf-8", "replace") if raw else "")


def take_string(ptr: c_void_p) -> str:
    """Returns a string the library allocated and frees it."""
    try:
        return ctypes.string_at(ptr).decode("utf-8")
    finally:
        lib().shmalloc_string_free(ptr)
