"""The file-system store: the embedded default, no server needed.

Layout under the root::

    models/{id}/weights.bin, optimizer.bin, manifest.json
    sessions/{id}/kv.bin, meta.json
    .staging/          saves in progress; leftovers of killed saves are removed

A save writes every file into a staging folder on the same file system, fsyncs
files and folder, then renames the folder into place (or atomically exchanges it
with the old one on overwrite), so a reader sees a whole record or none.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from statecheckpoint import _codec, _progress
from statecheckpoint._codec import EncodedRecord, Kind
from statecheckpoint.blocks import _fsutil
from statecheckpoint.blocks import base as _base
from statecheckpoint.blocks.base import CheckpointStore, StoredRecord, Tag
from statecheckpoint.errors import BackendUnavailableError, IntegrityError

logger = logging.getLogger(__name__)

_BLOB_FILES = {
    "weights": "weights.bin",
    "optimizer_state": "optimizer.bin",
    "kv_cache": "kv.bin",
}
_MANIFEST = {"models": "manifest.json", "sessions": "meta.json"}
_STAGING = ".staging"
_READ_ATTEMPTS = 5


class FileSystemStore(CheckpointStore):
    """Stores checkpoints and sessions as folders of files under a root folder.

    Example:
        ```python
        from statecheckpoint import CheckpointManager, ModelCheckpoint
        from statecheckpoint.blocks import FileSystemStore

        store = FileSystemStore.load("BLOCK_NAME")  # or FileSystemStore(root="./ckpt")
        with CheckpointManager(store) as manager:
            checkpoint_id = manager.save(ModelCheckpoint(epoch=1, weights=b"..."))
        ```
    """

    _block_type_name = "File System Checkpoint Store"
    _description = "Checkpoints and inference sessions in a local or mounted folder."

    root: str = Field(
        default="./checkpoints",
        min_length=1,
        description="Folder that holds models/ and sessions/.",
    )
    fallback_root: str | None = Field(
        default=None,
        description="Folder used instead when the root is missing, not a folder or "
        "not writable. A warning names both.",
    )
    create_root: bool = Field(
        default=True,
        description="Create the root folder when it does not exist; when off, a "
        "missing root is an error (or the fallback is used).",
    )
    check_writable: bool = Field(
        default=True,
        description="Check at start-up that the root can be written, by creating "
        "and removing a small file.",
    )

    _resolved: Path | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- start-up -------------------------------------------------------------

    @property
    def active_root(self) -> Path:
        """The folder in use: the root, or the fallback when the root is unusable."""
        if self._resolved is None:
            self.prepare()
        assert self._resolved is not None
        return self._resolved

    def prepare(self) -> None:
        """Resolves the folder in use and removes leftovers of killed saves.

        Raises:
            BackendUnavailableError: When neither the root nor the fallback is
                usable, naming each and why.
        """
        with self._lock:
            if self._resolved is not None:
                return
            root = Path(self.root).expanduser().absolute()
            problem = self._problem_with(root)
            if problem is None:
                chosen = root
            elif self.fallback_root is None:
                raise BackendUnavailableError(
                    f"checkpoint root {root} is not usable: {problem}; fix it or set "
                    "fallback_root"
                )
            else:
                fallback = Path(self.fallback_root).expanduser().absolute()
                fallback_problem = self._problem_with(fallback)
                if fallback_problem is not None:
                    raise BackendUnavailableError(
                        f"checkpoint root {root} is not usable: {problem}; and "
                        f"fallback {fallback} is not usable either: {fallback_problem}"
                    )
                logger.warning(
                    "checkpoint root %s is not usable (%s); using fallback %s",
                    root,
                    problem,
                    fallback,
                )
                chosen = fallback
            for sub in ("models", "sessions", _STAGING):
                try:
                    (chosen / sub).mkdir(exist_ok=True)
                except OSError as exc:
                    raise _fsutil.unavailable(exc, "create", chosen / sub) from exc
            _fsutil.clean_staging(chosen / _STAGING)
            self._resolved = chosen

    def _problem_with(self, path: Path) -> str | None:
        if not path.exists():
            if not self.create_root:
                return "it does not exist and create_root is off"
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"cannot create it ({exc.strerror})"
        if not path.is_dir():
            return "it is not a folder"
        if self.check_writable:
            probe = path / f".write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError as exc:
                return (
                    f"it is not writable ({exc.strerror}); to read or delete from "
                    "it anyway, turn check_writable off"
                )
        return None

    # -- primitives -----------------------------------------------------------

    def _folder(self, kind: Kind, record_id: uuid.UUID) -> Path:
        return self.active_root / kind / str(record_id)

    def _blob_location(self, kind: Kind, record_id: uuid.UUID, blob: str) -> str:
        return str(self._folder(kind, record_id) / _BLOB_FILES.get(blob, blob))

    def write_encoded(
        self, record: EncodedRecord, cancel: threading.Event | None = None
    ) -> uuid.UUID:
        """Checksums and stores an already encoded record; returns its id.

        Same as :meth:`CheckpointStore.write_encoded`, but each blob is hashed
        chunk by chunk as it is written instead of in a pass of its own.
        """
        cancel = cancel or threading.Event()
        _progress.expect(sum(len(view) for view in record.blobs.values()))
        self._write_record(record, None, cancel)
        _base.logger.info("committed %s/%s", record.kind, record.id)
        return record.id

    def _write_record(
        self,
        record: EncodedRecord,
        summary_text: str | None,
        cancel: threading.Event,
    ) -> None:
        # Without a summary (from write_encoded) the blobs are checksummed as they
        # are written and the summary is made from those digests.
        root = self.active_root
        final = root / record.kind / str(record.id)
        try:
            with _fsutil.staging(root / _STAGING, record.kind) as stage:
                digests: dict[str, str] = {}
                for name, view in record.blobs.items():
                    hasher = _codec.new_hasher() if summary_text is None else None
                    _fsutil.write_file(stage / _BLOB_FILES[name], view, cancel, hasher)
                    if hasher is not None:
                        digests[name] = hasher.hexdigest()
                if summary_text is None:
                    summary_text = record.summary_text(digests)
                manifest = f'{{"summary":{summary_text},"body":{record.body_text}}}'
                manifest_view = memoryview(manifest.encode("ascii"))
                _fsutil.write_file(
                    stage / _MANIFEST[record.kind], manifest_view, cancel
                )
                _fsutil.fsync_dir(stage)
                replaced = _fsutil.install(stage, final)
                _fsutil.fsync_dir(final.parent)
                if replaced:
                    logger.debug("replaced %s, removing the old copy", final)
        except OSError as exc:
            raise _fsutil.unavailable(exc, "save to", final) from exc

    def _read_record(
        self,
        kind: Kind,
        record_id: uuid.UUID,
        cancel: threading.Event,
        digests: dict[str, str] | None = None,
    ) -> StoredRecord | None:
        # Given a dict, each blob is hashed chunk by chunk as it is read.
        folder = self._folder(kind, record_id)
        for attempt in range(_READ_ATTEMPTS):
            try:
                dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _fsutil.unavailable(exc, "read", folder) from exc
            try:
                return self._read_from(dir_fd, kind, folder, cancel, digests)
            except FileNotFoundError as exc:
                if not _replaced(folder, dir_fd):
                    missing = Path(exc.filename or "?").name
                    raise IntegrityError(
                        f"record {record_id}: {folder / missing} is missing",
                        record_id=record_id,
                        blob=str(folder / missing),
                    ) from None
                # An overwrite or delete replaced the folder while we read it.
                logger.debug("%s changed while read (attempt %d)", folder, attempt + 1)
            finally:
                os.close(dir_fd)
        raise BackendUnavailableError(
            f"{folder} kept changing while it was read; try again"
        )

    def _read_from(
        self,
        dir_fd: int,
        kind: Kind,
        folder: Path,
        cancel: threading.Event,
        digests: dict[str, str] | None,
    ) -> StoredRecord:
        manifest_path = folder / _MANIFEST[kind]
        raw = self._read_file(dir_fd, _MANIFEST[kind], str(manifest_path), cancel)
        try:
            manifest = json.loads(raw)
            summary, body = manifest["summary"], manifest["body"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"record {folder.name}: {manifest_path} cannot be parsed ({exc})",
                record_id=folder.name,
                blob=str(manifest_path),
            ) from None
        _progress.expect_summary(summary)
        blobs = {}
        for name in summary.get("blobs", {}):
            if name not in _BLOB_FILES:
                continue
            hasher = None if digests is None else _codec.new_hasher()
            where = str(folder / _BLOB_FILES[name])
            blobs[name] = self._read_file(
                dir_fd, _BLOB_FILES[name], where, cancel, hasher
            )
            if digests is not None and hasher is not None:
                digests[name] = hasher.hexdigest()
        return summary, body, blobs

    @staticmethod
    def _read_file(
        dir_fd: int,
        name: str,
        where: str,
        cancel: threading.Event,
        hasher: _codec.Hasher | None = None,
    ) -> bytearray:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
        try:
            return _fsutil.read_into(fd, where, cancel, hasher)
        finally:
            os.close(fd)

    def _list_summaries(self, kind: Kind, tag: Tag | None) -> list[Any]:
        summaries, problems = self._scan(kind)
        for problem in problems:
            logger.warning("skipped a record that cannot be read: %s", problem)
        return summaries

    def _unreadable(self, kind: Kind) -> list[IntegrityError]:
        return self._scan(kind)[1]

    def _scan(self, kind: Kind) -> tuple[list[Any], list[IntegrityError]]:
        """Reads every record folder's summary; folders without one are problems."""
        summaries: list[Any] = []
        problems: list[IntegrityError] = []
        area = self.active_root / kind
        try:
            folders = list(area.iterdir())
        except OSError as exc:
            raise _fsutil.unavailable(exc, "list", area) from exc
        for folder in folders:
            try:
                record_id = uuid.UUID(folder.name)
            except ValueError:
                continue  # not ours
            manifest = folder / _MANIFEST[kind]
            try:
                summaries.append(json.loads(manifest.read_bytes())["summary"])
            except FileNotFoundError:
                if folder.exists():
                    problems.append(
                        IntegrityError(
                            f"record {record_id}: {manifest} is missing",
                            record_id=record_id,
                            blob=str(manifest),
                        )
                    )
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(
                    IntegrityError(
                        f"record {record_id}: {manifest} cannot be parsed ({exc})",
                        record_id=record_id,
                        blob=str(manifest),
                    )
                )
        return summaries, problems

    def _delete_record(self, kind: Kind, record_id: uuid.UUID) -> bool:
        root = self.active_root
        final = root / kind / str(record_id)
        trash = root / _STAGING / f"deleted-{record_id}-{uuid.uuid4().hex}"
        try:
            os.rename(final, trash)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR,):
                return False
            raise _fsutil.unavailable(exc, "delete", final) from exc
        _fsutil.fsync_dir(final.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return True


def _replaced(folder: Path, dir_fd: int) -> bool:
    """Tells whether ``folder`` no longer names the directory open as ``dir_fd``."""
    try:
        return os.stat(folder).st_ino != os.fstat(dir_fd).st_ino
    except FileNotFoundError:
        return True
