"""xxh3-128 checksums computed without holding the GIL.

The ``xxhash`` package holds the GIL while it hashes, so a background save's
checksum stalls the training thread whenever that thread needs Python between
two numpy calls; on a two-core machine that slowed training steps by 20-35 %
for as long as a save ran. The package's extension module also exports the
xxHash C functions, and ctypes releases the GIL around a foreign call, so the
same digest is computed here while other threads run.

Where numpy (to find a buffer's address) or those symbols are missing, or they
do not reproduce the package's digest, :func:`new` falls back to the package.
"""

from __future__ import annotations

import ctypes
import importlib
import weakref
from typing import Any

import xxhash


class _Hash128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


def _bind() -> Any:
    try:
        import numpy  # noqa: F401 - needed for buffer addresses

        extension = importlib.import_module("xxhash._xxhash")
        lib = ctypes.CDLL(extension.__file__)
        lib.XXH3_createState.restype = ctypes.c_void_p
        lib.XXH3_freeState.argtypes = [ctypes.c_void_p]
        lib.XXH3_128bits_reset.argtypes = [ctypes.c_void_p]
        lib.XXH3_128bits_update.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        lib.XXH3_128bits_digest.argtypes = [ctypes.c_void_p]
        lib.XXH3_128bits_digest.restype = _Hash128
    except (ImportError, AttributeError, OSError):
        return None
    return lib


class GilFreeHasher:
    """A streaming xxh3-128 with the interface of ``xxhash.xxh3_128``."""

    def __init__(self) -> None:
        state = _lib.XXH3_createState()
        if not state:
            raise MemoryError("cannot allocate an xxh3 state")
        self._state = state
        self._free = weakref.finalize(self, _lib.XXH3_freeState, state)
        _lib.XXH3_128bits_reset(state)

    def update(self, data: Any, /) -> None:
        """Hashes more bytes (any C-contiguous buffer)."""
        import numpy as np

        array = np.frombuffer(data, dtype=np.uint8)
        if array.size:
            _lib.XXH3_128bits_update(self._state, array.ctypes.data, array.size)

    def hexdigest(self) -> str:
        """Returns the digest of everything hashed so far, as xxhash writes it."""
        digest = _lib.XXH3_128bits_digest(self._state)
        return f"{digest.high64:016x}{digest.low64:016x}"


def _agrees() -> bool:
    sample = bytes(range(256)) * 300
    ours, theirs = GilFreeHasher(), xxhash.xxh3_128()
    for part in (sample[:1000], sample[1000:], b""):
        ours.update(memoryview(part))
        theirs.update(part)
    return ours.hexdigest() == theirs.hexdigest()


_lib = _bind()
AVAILABLE = _lib is not None and _agrees()


def new() -> Any:
    """Returns a GIL-free hasher where possible, else ``xxhash.xxh3_128()``."""
    return GilFreeHasher() if AVAILABLE else xxhash.xxh3_128()
