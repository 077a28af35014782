"""Low-level file helpers for the file-system store: streaming, fsync, exchange."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from statecheckpoint.errors import BackendUnavailableError, StateCheckpointError

logger = logging.getLogger(__name__)

CHUNK = 64 << 20
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


class Cancelled(StateCheckpointError):
    """Raised inside a worker when the awaiting caller was cancelled."""


def write_file(path: Path, view: memoryview, cancel: threading.Event) -> None:
    """Writes a byte view to a new file in large chunks and fsyncs it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        pos, total = 0, len(view)
        while pos < total:
            if cancel.is_set():
                raise Cancelled(f"cancelled while writing {path}")
            pos += os.write(fd, view[pos : pos + CHUNK])
        os.fsync(fd)
    finally:
        os.close(fd)


def read_into(fd: int, where: str, cancel: threading.Event) -> bytearray:
    """Reads a whole open file into one new bytearray.

    A shorter or longer file comes back at its true length, so that the size
    check reports it.
    """
    actual = os.fstat(fd).st_size
    data = bytearray(actual)
    view = memoryview(data)
    pos = 0
    while pos < actual:
        if cancel.is_set():
            raise Cancelled(f"cancelled while reading {where}")
        n = os.readv(fd, [view[pos : pos + CHUNK]])
        if n == 0:
            break
        pos += n
    view.release()
    if pos != actual:
        del data[pos:]
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


@contextmanager
def staging(area: Path, prefix: str) -> Iterator[Path]:
    """Yields a fresh staging folder, locked against clean-up while it is used.

    The folder is removed on exit, whatever happened; once renamed into place
    there is nothing left to remove.
    """
    name = f"{prefix}-{uuid.uuid4().hex}"
    lock_path = area / f"{name}.lock"
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
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
