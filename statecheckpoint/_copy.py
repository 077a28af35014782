"""Copies large buffers with several threads at once.

Copying into fresh memory costs as much in page faults as in moving bytes, and
both scale with cores: numpy releases the GIL while it copies, so each thread
faults in and fills its own slice. A background save's snapshot uses this, as
it is the one step of such a save that blocks the caller.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

MIN_PART = 32 << 20
"""Bytes each thread copies at least; smaller copies stay on one thread."""

MAX_THREADS = 4

ALIGN = 4096
"""Start of every buffer from :func:`aligned_empty`: what direct I/O needs, so a
snapshot is written to disk without another copy."""


def aligned_empty(size: int) -> Any:
    """Returns an uninitialised numpy byte array whose data starts on ALIGN."""
    import numpy as np

    raw = np.empty(size + ALIGN, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGN
    return raw[offset : offset + size]


def copy_into(target: Any, source: Any) -> None:
    """Copies the flat numpy array ``source`` into ``target`` of the same size."""
    import numpy as np

    parts = min(MAX_THREADS, os.cpu_count() or 1, max(1, source.nbytes // MIN_PART))
    if parts == 1:
        np.copyto(target, source)
        return
    bounds = [source.size * i // parts for i in range(parts + 1)]
    helpers = [
        threading.Thread(
            target=np.copyto,
            args=(target[bounds[i] : bounds[i + 1]], source[bounds[i] : bounds[i + 1]]),
            name="statecheckpoint-snapshot",
            daemon=True,
        )
        for i in range(1, parts)
    ]
    for helper in helpers:
        helper.start()
    try:
        np.copyto(target[: bounds[1]], source[: bounds[1]])
    finally:
        for helper in helpers:
            helper.join()


class BufferPool:
    """Keeps the snapshot buffers of the last finished save for the next one.

    Faulting in fresh memory costs more than the copy itself (several times more
    in a virtual machine whose host takes freed memory back), and a training job
    snapshots the same sizes again and again. A manager hands each finished
    save's buffers back here and the next snapshot of the same size reuses
    them. At most one save's worth is kept, until :meth:`clear`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Any] = []

    def take(self, size: int) -> Any:
        """Returns a kept buffer of ``size`` bytes, or a new one."""
        with self._lock:
            for index, buffer in enumerate(self._free):
                if buffer.size == size:
                    return self._free.pop(index)
        return aligned_empty(size)

    def give(self, buffers: Iterable[Any]) -> None:
        """Keeps these buffers (no longer in use) instead of any kept before."""
        with self._lock:
            self._free = list(buffers)

    def clear(self) -> None:
        """Lets every kept buffer go."""
        with self._lock:
            self._free = []
