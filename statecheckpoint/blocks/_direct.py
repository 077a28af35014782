"""Writes large blobs with direct I/O (``O_DIRECT``), around the page cache.

A buffered write copies every byte into the page cache, which must first find
as much free memory as the blob; in a virtual machine whose host takes free
memory back, each of those pages is faulted in again at a cost several times
that of the copy. Direct I/O moves the bytes from the caller's memory to the
device instead. On a two-core VM, writing 3 GiB this way took 0.2 s of CPU
instead of 4-9 s, and the writer no longer competes with the training loop for
the cores; the page cache also keeps what the job had in it.

Direct I/O needs the buffer, the file offset and the length aligned to the
device's block size (:data:`ALIGN` covers common devices). An aligned source is
written as it is; any other is copied chunk by chunk through two aligned
buffers, one filled while a helper thread writes the other. The unaligned tail
is written the ordinary way, and so is everything where the file system refuses
direct I/O. Durability still comes from the caller's fsync.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from statecheckpoint._codec import Hasher

ALIGN = 4096
"""Alignment of buffers, offsets and lengths for direct I/O."""

CHUNK = 16 << 20
"""Bytes per direct write from an unaligned source (copied through buffers)."""

DEPTH = 3
"""Direct writes in flight at once from an unaligned source, which uses this
many chunk buffers."""

ALIGNED_CHUNK = 64 << 20
"""Bytes per direct write from an aligned source: no buffer to hold, and fewer,
larger writes keep the device busy with less work for the threads."""

ALIGNED_DEPTH = 2

MIN_SIZE = 2 * CHUNK
"""Smaller blobs are written the ordinary way."""

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_HUGE_PAGE = 2 << 20


def enable(fd: int) -> bool:
    """Switches an open file to direct I/O; False where that is not supported."""
    if not _O_DIRECT:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def _disable(fd: int) -> bool:
    """Switches a file back to buffered I/O; False when it already was."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & _O_DIRECT:
        return False
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
    return True


def address(view: memoryview) -> int | None:
    """Returns where a buffer starts in memory, or None when that is unknown."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional
        return None
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)


def write(
    fd: int,
    view: memoryview,
    check: Callable[[], None],
    advance: Callable[[int], None],
    hasher: Hasher | None = None,
) -> None:
    """Writes ``view`` to the empty file ``fd``, opened with direct I/O enabled.

    Up to :data:`DEPTH` chunks are being written at once, by helper threads
    (which first copy an unaligned source into their buffer), while this thread
    hashes the next.

    Args:
        fd: The file, empty, with :func:`enable` done.
        view: The bytes to write.
        check: Called before each chunk; raises to stop (cancellation).
        advance: Called with the bytes of each chunk once it is written.
        hasher: Fed every byte in order, when given.
    """
    bulk = len(view) - len(view) % ALIGN
    start = address(view)
    bounces = None if start is not None and start % ALIGN == 0 else _bounces()
    size, depth = (ALIGNED_CHUNK, ALIGNED_DEPTH) if bounces is None else (CHUNK, DEPTH)
    with ThreadPoolExecutor(depth, thread_name_prefix="statecheckpoint-write") as pool:
        pending: deque[tuple[Future[None], int]] = deque()
        for index, pos in enumerate(range(0, bulk, size)):
            check()
            chunk = view[pos : min(pos + size, bulk)]
            if hasher is not None:
                hasher.update(chunk)
            if len(pending) == depth:
                _finish(pending.popleft(), advance)
            # The write that last used this buffer, DEPTH chunks ago, is done.
            bounce = None if bounces is None else bounces[index % DEPTH]
            job = pool.submit(_write_chunk, fd, chunk, pos, bounce)
            pending.append((job, len(chunk)))
        while pending:
            _finish(pending.popleft(), advance)
    if bulk < len(view):
        check()
        tail = view[bulk:]
        if hasher is not None:
            hasher.update(tail)
        _disable(fd)
        _pwrite_all(fd, tail, bulk)
        advance(len(tail))


def _finish(entry: tuple[Future[None], int], advance: Callable[[int], None]) -> None:
    future, size = entry
    future.result()
    advance(size)


def _bounces() -> list[memoryview]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional
        # Anonymous mappings start on a page boundary, which satisfies ALIGN.
        return [memoryview(mmap.mmap(-1, CHUNK)) for _ in range(DEPTH)]
    # Huge pages, which numpy asks for: with 4 KiB pages each chunk would be
    # scattered over thousands of pages, and the device would see many small
    # requests instead of a few large ones.
    buffers = []
    for _ in range(DEPTH):
        raw = np.empty(CHUNK + _HUGE_PAGE, dtype=np.uint8)
        start = -raw.ctypes.data % _HUGE_PAGE
        buffers.append(raw[start : start + CHUNK].data)
    return buffers


def _write_chunk(
    fd: int, chunk: memoryview, offset: int, bounce: memoryview | None
) -> None:
    """Writes one chunk, first copied into an aligned buffer when one is given."""
    if bounce is not None:
        bounce = bounce[: len(chunk)]
        _copy(bounce, chunk)
        chunk = bounce
    _pwrite_all(fd, chunk, offset)


def _copy(target: memoryview, source: memoryview) -> None:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional
        target[:] = source
        return
    # numpy copies without holding the GIL, so the writers are not kept waiting.
    np.copyto(np.frombuffer(target, np.uint8), np.frombuffer(source, np.uint8))


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done, buffered = 0, False
    while done < len(data):
        try:
            done += os.pwrite(fd, data[done:], offset + done)
        except OSError as exc:
            if exc.errno != errno.EINVAL or buffered:
                raise
            # The device wants a larger alignment, or a short write left the
            # rest unaligned: finish the ordinary way. The bytes are the same.
            _disable(fd)
            buffered = True
