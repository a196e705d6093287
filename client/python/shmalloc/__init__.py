"""shmalloc: share NumPy arrays and buffers between processes without
copying, through the shmalloc daemon (shmallocd).

A thin layer over the C API (libshmalloc_c) with ctypes: the session,
reconnection after a daemon restart and the hot paths are the C++ client
library's. Blocks live in shared-memory regions the daemon owns; a block is
named by a Handle (region, offset, size, generation) that any process can
open without copying, and the daemon knows who holds what (``stats()``)
and reclaims the blocks of a process that dies.

    import numpy as np, shmalloc

    client = shmalloc.Client()                      # $SHMALLOC_SOCKET
    region = client.region("frames")
    block = region.allocate(4 << 20, detached=True)  # survives this process
    block.ndarray(np.float32)[:] = 1.0               # no copy
    queue.put(block.detach())                        # a Handle: 4 numbers

    # in the consumer process
    with shmalloc.adopt(queue.get()) as block:       # now ours: frees on exit
                                                     # (or when we die)
        batch = block.ndarray(np.float32, (1024, 1024))

Errors are exceptions carrying the gRPC status name: every one derives from
shmalloc.Error and has ``.code`` ("NOT_FOUND", "RESOURCE_EXHAUSTED", ...).
"""

from ._client import (STRATEGIES, Allocation, Arena, BlockCache, Client,
                      Handle, Region, adopt, default_client, open_handle,
                      set_default_client)
from ._errors import (AbortedError, AlreadyExistsError, CancelledError,
                      DataLossError, DeadlineExceededError, Error,
                      FailedPreconditionError, InternalError,
                      InvalidArgumentError, LibraryNotFoundError,
                      NotFoundError, OutOfRangeError, PermissionDeniedError,
                      ResourceExhaustedError, UnauthenticatedError,
                      UnavailableError, UnimplementedError, UnknownError)
from ._lib import library_path

__version__ = "0.1.0"

__all__ = [
    "Allocation", "Arena", "BlockCache", "Client", "Handle", "Region",
    "STRATEGIES", "adopt", "default_client", "library_path", "open_handle",
    "set_default_client",
    "Error", "AbortedError", "AlreadyExistsError", "CancelledError",
    "DataLossError", "DeadlineExceededError", "FailedPreconditionError",
    "InternalError", "InvalidArgumentError", "LibraryNotFoundError",
    "NotFoundError", "OutOfRangeError", "PermissionDeniedError",
    "ResourceExhaustedError", "UnauthenticatedError", "UnavailableError",
    "UnimplementedError", "UnknownError",
]
