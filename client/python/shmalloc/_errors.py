"""Exceptions of the shmalloc package: one class per gRPC status code.

Every failure of the C API (libshmalloc_c) becomes an exception whose class
matches the status the daemon (or the library) returned, e.g.
:class:`NotFoundError` for ``NOT_FOUND``. All derive from :class:`Error`,
which carries ``.code`` (the status name, "NOT_FOUND"), ``.status`` (its
number, 5) and the message.
"""

from __future__ import annotations

from typing import Dict, Type

# The gRPC / absl status codes, by number (shmalloc_status_t).
STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


class Error(Exception):
    """A shmalloc call failed. ``code`` is the gRPC status name."""

    code: str = "UNKNOWN"
    status: int = 2

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        if self.message.startswith(self.code + ":"):
            return self.message
        return f"{self.code}: {self.message}" if self.message else self.code


class CancelledError(Error):
    """CANCELLED: the call was cancelled."""
    code, status = "CANCELLED", 1


class UnknownError(Error):
    """UNKNOWN: an error without a better code."""
    code, status = "UNKNOWN", 2


class InvalidArgumentError(Error, ValueError):
    """INVALID_ARGUMENT: bad name, size 0 or too large, bad alignment, an
    offset outside the region."""
    code, status = "INVALID_ARGUMENT", 3


class DeadlineExceededError(Error, TimeoutError):
    """DEADLINE_EXCEEDED: the daemon did not answer in time."""
    code, status = "DEADLINE_EXCEEDED", 4


class NotFoundError(Error, LookupError):
    """NOT_FOUND: unknown region (or session)."""
    code, status = "NOT_FOUND", 5


class AlreadyExistsError(Error):
    """ALREADY_EXISTS: the region name is taken."""
    code, status = "ALREADY_EXISTS", 6


class PermissionDeniedError(Error):
    """PERMISSION_DENIED: a file cannot be opened, or a wrong session token."""
    code, status = "PERMISSION_DENIED", 7


class ResourceExhaustedError(Error):
    """RESOURCE_EXHAUSTED: the region is full or a quota is exceeded."""
    code, status = "RESOURCE_EXHAUSTED", 8


class FailedPreconditionError(Error):
    """FAILED_PRECONDITION: not a live allocation, stale generation, live
    allocations on delete/reset, session lost, a closed handle."""
    code, status = "FAILED_PRECONDITION", 9


class AbortedError(Error):
    """ABORTED."""
    code, status = "ABORTED", 10


class OutOfRangeError(Error):
    """OUT_OF_RANGE."""
    code, status = "OUT_OF_RANGE", 11


class UnimplementedError(Error):
    """UNIMPLEMENTED: the daemon does not serve this call."""
    code, status = "UNIMPLEMENTED", 12


class InternalError(Error):
    """INTERNAL: a broken invariant in the library or the daemon."""
    code, status = "INTERNAL", 13


class UnavailableError(Error, ConnectionError):
    """UNAVAILABLE: the daemon cannot be reached (absent, or restarting for
    longer than the call may wait)."""
    code, status = "UNAVAILABLE", 14


class DataLossError(Error):
    """DATA_LOSS: a region file that fails validation (DAMAGED region)."""
    code, status = "DATA_LOSS", 15


class UnauthenticatedError(Error):
    """UNAUTHENTICATED."""
    code, status = "UNAUTHENTICATED", 16


_BY_STATUS: Dict[int, Type[Error]] = {
    cls.status: cls
    for cls in (
        CancelledError, UnknownError, InvalidArgumentError,
        DeadlineExceededError, NotFoundError, AlreadyExistsError,
        PermissionDeniedError, ResourceExhaustedError,
        FailedPreconditionError, AbortedError, OutOfRangeError,
        UnimplementedError, InternalError, UnavailableError, DataLossError,
        UnauthenticatedError,
    )
}


def error_for(status: int, message: str) -> Error:
    """Returns the exception for a non-OK status number and its message."""
    cls = _BY_STATUS.get(status, UnknownError)
    return cls(message)


class LibraryNotFoundError(Error, ImportError):
    """libshmalloc_c could not be found or loaded (see shmalloc._lib)."""
    code, status = "UNAVAILABLE", 14
