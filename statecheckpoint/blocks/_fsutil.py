"""Low-level file helpers for the file-system store: streaming, fsync, exchange."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from statecheckpoint import _progress
from statecheckpoint._codec import Hasher
from statecheckpoint.blocks import _direct
from statecheckpoint.errors import BackendUnavailableError, StateCheckpointError

logger = logging.getLogger(__name__)

CHUNK = 8 << 20
"""Bytes per buffered write: large enough to amortise the system call, small
enough that a chunk just hashed is still in the CPU cache when it is copied."""

READ_CHUNK = 64 << 20
"""Bytes per read: large reads keep the device busy on a cold read."""

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYNC_FILE_RANGE_WRITE = 2
_MADV_HUGEPAGE = 14
_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_uint,
    ]
_madvise = getattr(_libc, "madvise", None)
if _madvise is not None:
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_pythonapi = getattr(ctypes, "pythonapi", None)  # CPython only
_new_bytearray = getattr(_pythonapi, "PyByteArray_FromStringAndSize", None)
if _new_bytearray is not None:
    _new_bytearray.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]
    _new_bytearray.restype = ctypes.py_object


class Cancelled(StateCheckpointError):
    """Raised inside a worker when the awaiting caller was cancelled."""


def write_file(
    path: Path,
    view: memoryview,
    cancel: threading.Event,
    hasher: Hasher | None = None,
) -> None:
    """Writes a byte view to a new file in large chunks and fsyncs it.

    A large view goes around the page cache, with direct I/O (see ``_direct``).
    Otherwise write-back of each chunk starts as soon as it is written, so the
    disk works while the next chunk is copied and the final fsync has little
    left to wait for. With a hasher, each chunk is hashed just before it is
    written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if len(view) >= _direct.MIN_SIZE and _direct.enable(fd):
            _direct.write(
                fd, view, partial(_check, cancel, path), _progress.advance, hasher
            )
            os.fsync(fd)
            return
        pos, total = 0, len(view)
        while pos < total:
            if cancel.is_set():
                raise Cancelled(f"cancelled while writing {path}")
            chunk = view[pos : pos + CHUNK]
            if hasher is not None:
                hasher.update(chunk)
            _write_all(fd, chunk)
            if _sync_file_range is not None:
                # Only a hint: errors surface at the fsync below.
                _sync_file_range(fd, pos, len(chunk), _SYNC_FILE_RANGE_WRITE)
            pos += len(chunk)
            _progress.advance(len(chunk))
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(cancel: threading.Event, path: Path) -> None:
    if cancel.is_set():
        raise Cancelled(f"cancelled while writing {path}")


def _write_all(fd: int, chunk: memoryview) -> None:
    done = 0
    while done < len(chunk):
        done += os.write(fd, chunk[done:])


def read_into(
    fd: int, where: str, cancel: threading.Event, hasher: Hasher | None = None
) -> bytearray:
    """Reads a whole open file into one new bytearray.

    A shorter or longer file comes back at its true length, so that the size
    check reports it. With a hasher, each chunk is hashed as soon as it is read.
    """
    actual = os.fstat(fd).st_size
    data = new_buffer(actual)
    view = memoryview(data)
    pos = 0
    try:
        while pos < actual:
            if cancel.is_set():
                raise Cancelled(f"cancelled while reading {where}")
            n = os.readv(fd, [view[pos : pos + READ_CHUNK]])
            if n == 0:
                break
            if hasher is not None:
                hasher.update(view[pos : pos + n])
            pos += n
            _progress.advance(n)
    finally:
        view.release()
    if pos != actual:
        del data[pos:]
    return data


def new_buffer(size: int) -> bytearray:
    """Returns a bytearray of ``size`` bytes for a read to fill.

    Unlike ``bytearray(size)`` it is not zero-filled first (a second pass over
    every page of a multi-GB blob), and large ones ask for transparent huge
    pages, which cut the cost of faulting the memory in several times over.
    The caller must overwrite or cut off every byte before anyone sees it.
    """
    if _new_bytearray is None or size < CHUNK:
        return bytearray(size)
    data: bytearray = _new_bytearray(None, size)
    if _madvise is not None:
        address = ctypes.addressof(ctypes.c_char.from_buffer(data))
        start = -(-address // _PAGE) * _PAGE
        end = (address + size) // _PAGE * _PAGE
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)  # a hint; errors ignored
    return data


def fsync_dir(path: Path) -> None:
    """Makes a directory's entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exchange(a: Path, b: Path) -> None:
    """Swaps two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Raises:
        FileNotFoundError: When either path does not exist.
        NotImplementedError: When the system or file system cannot exchange.
    """
    if _renameat2 is None:
        raise NotImplementedError("renameat2 is not available")
    rc = _renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE
    )
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise NotImplementedError(os.strerror(err))
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def install(stage: Path, final: Path) -> bool:
    """Moves a finished staging folder to its final name, atomically.

    When ``final`` exists the two are exchanged, so a reader sees the old record
    or the new one and never neither; the old one is then at ``stage``.

    Returns:
        True when an old record was replaced (and now sits at ``stage``).
    """
    while True:
        try:
            os.rename(stage, final)
            return False
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        try:
            exchange(stage, final)
            return True
        except FileNotFoundError:
            continue  # deleted by someone else meanwhile: a plain rename will do
        except NotImplementedError:
            # Without an atomic exchange a reader may briefly find neither.
            trash = stage.with_name(stage.name + ".old")
            os.rename(final, trash)
            os.rename(stage, final)
            os.rename(trash, stage)
            return True


def _locked(lock_path: Path) -> int:
    """Opens and locks ``lock_path``, making sure the lock is on the file that is
    at that path: a clean-up in another process may remove a lock file between
    its creation and its locking."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def staging(area: Path, prefix: str) -> Iterator[Path]:
    """Yields a fresh staging folder, locked against clean-up while it is used.

    The folder is removed on exit, whatever happened; once renamed into place
    there is nothing left to remove.
    """
    name = f"{prefix}-{uuid.uuid4().hex}"
    lock_path = area / f"{name}.lock"
    lock_fd = _locked(lock_path)
    try:
        stage = area / name
        stage.mkdir()
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
    finally:
        os.close(lock_fd)


def clean_staging(area: Path) -> int:
    """Removes what killed saves left in the staging area; returns how many.

    A folder whose lock another process still holds is in use and left alone.
    """
    removed = 0
    for entry in area.iterdir():
        if entry.suffix == ".lock":
            if not (area / entry.stem).exists():
                _remove_if_unlocked(entry, None)
            continue
        lock_path = area / f"{entry.name}.lock"
        if _remove_if_unlocked(lock_path, entry):
            removed += 1
    if removed:
        logger.info("removed %d leftover staging folder(s) in %s", removed, area)
    return removed


def _remove_if_unlocked(lock_path: Path, folder: Path | None) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def unavailable(exc: OSError, action: str, path: Path) -> BackendUnavailableError:
    """Wraps an OS error into the error callers (and task retries) act on."""
    hints = {
        errno.ENOSPC: "the disk is full; free space or use another root",
        errno.EDQUOT: "the disk quota is exhausted; free space or raise the quota",
        errno.EROFS: "the file system is read-only; use a writable root",
        errno.EACCES: "permission denied; fix the folder's permissions",
        errno.EPERM: "operation not permitted; fix the folder's permissions",
    }
    hint = hints.get(exc.errno or 0, exc.strerror or str(exc))
    return BackendUnavailableError(f"cannot {action} {path}: {hint}")
