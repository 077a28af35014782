"""The abstract store block: both domains' save, load, list and delete.

A backend implements four primitives over *records* (two JSON documents plus named
blobs, see ``statecheckpoint._codec``); everything a user calls is written once,
here, on top of them. Each primitive must be atomic: a reader sees a whole record
or none, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import abc
import logging
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from prefect.blocks.core import Block
from pydantic_core import PydanticUndefined

from statecheckpoint import _codec, _progress
from statecheckpoint._codec import EncodedRecord, Kind
from statecheckpoint.errors import (
    FingerprintMismatchError,
    IntegrityError,
    InvalidInputError,
)
from statecheckpoint.models import (
    CheckpointInfo,
    InferenceSession,
    ModelCheckpoint,
    SessionInfo,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
_KINDS: tuple[Kind, ...] = ("models", "sessions")
Tag = tuple[str, str]
StoredRecord = tuple[str | dict[str, Any], str | dict[str, Any], dict[str, bytearray]]
"""What a backend reads back: summary and body (JSON text or parsed), blobs by name."""


class CheckpointStore(Block, abc.ABC):
    """Base class of every storage backend; use a concrete store such as
    :class:`~statecheckpoint.FileSystemStore`.

    Ids are ``uuid.UUID`` (their canonical string is accepted too); anything else
    is refused with :class:`~statecheckpoint.errors.InvalidInputError` before any
    I/O. Every public method has an async twin prefixed with ``a``.
    """

    _block_type_name = "Checkpoint Store"
    _documentation_url = "https://pypi.org/project/statecheckpoint/"  # type: ignore[assignment]

    # -- pickling -------------------------------------------------------------

    def __getstate__(self) -> dict[Any, Any]:
        # A copy sent to another process (a Dask worker) keeps the settings and
        # the block's identity, but not this process's locks, connections or
        # resolved paths: they are made anew there, on first use.
        state = super().__getstate__()
        private = state.get("__pydantic_private__") or {}
        state["__pydantic_private__"] = {
            name: value
            for name, value in private.items()
            if name in Block.__private_attributes__
        }
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        private = dict(self.__pydantic_private__ or {})
        for name, attribute in self.__private_attributes__.items():
            if name not in private:
                default = attribute.get_default(call_default_factory=True)
                if default is not PydanticUndefined:
                    private[name] = default
        object.__setattr__(self, "__pydantic_private__", private)

    # -- primitives a backend implements --------------------------------------

    @abc.abstractmethod
    def _write_record(
        self, record: EncodedRecord, summary_text: str, cancel: threading.Event
    ) -> None:
        """Stores the record atomically, replacing any record with its id."""

    @abc.abstractmethod
    def _read_record(
        self,
        kind: Kind,
        record_id: uuid.UUID,
        cancel: threading.Event,
        digests: dict[str, str] | None = None,
    ) -> StoredRecord | None:
        """Returns the stored parts of one record, or None when it does not exist.

        Given a dict, a backend that hashes blobs while it reads them may fill it
        with their checksums, which verification then uses instead of a second
        pass; a backend that does not leaves it empty.
        """

    @abc.abstractmethod
    def _list_summaries(self, kind: Kind, tag: Tag | None) -> list[str]:
        """Returns the summary texts of all records of a kind (tag filter optional)."""

    @abc.abstractmethod
    def _delete_record(self, kind: Kind, record_id: uuid.UUID) -> bool:
        """Deletes a record with everything it holds; False when it did not exist."""

    def _blob_location(self, kind: Kind, record_id: uuid.UUID, blob: str) -> str:
        """Names where a blob is stored, for error messages."""
        return f"{kind}/{record_id}/{blob}"

    # -- shared machinery -----------------------------------------------------

    def prepare(self) -> None:
        """Checks that the backend is usable; called once before the first use.

        Raises:
            BackendUnavailableError: When it is not, with what to fix.
        """

    def write_encoded(
        self, record: EncodedRecord, cancel: threading.Event | None = None
    ) -> uuid.UUID:
        """Checksums and stores an already encoded record; returns its id.

        Managers and tasks use this to store a record whose metadata was frozen
        when ``save`` was called.
        """
        cancel = cancel or threading.Event()
        _progress.expect(sum(len(view) for view in record.blobs.values()))
        digests = {name: _codec.checksum(view) for name, view in record.blobs.items()}
        self._write_record(record, record.summary_text(digests), cancel)
        logger.info("committed %s/%s", record.kind, record.id)
        return record.id

    def _load(
        self,
        kind: Kind,
        record_id: object,
        verify: bool,
        cancel: threading.Event | None = None,
    ) -> Any:
        rid = _codec.coerce_id(record_id)
        digests: dict[str, str] | None = {} if verify else None
        stored = self._read_record(kind, rid, cancel or threading.Event(), digests)
        if stored is None:
            return None
        summary_text, body_text, blobs = stored
        summary = _codec.parse_summary(summary_text, rid)
        if verify:
            _codec.verify_blobs(
                summary, blobs, rid, partial(self._blob_location, kind, rid), digests
            )
        logger.debug("loaded %s/%s", kind, rid)
        return _codec.decode_record(summary, body_text, blobs)

    def _list(self, kind: Kind, tag: Tag | None) -> list[Any]:
        if tag is not None and not (
            isinstance(tag, tuple | list)
            and len(tag) == 2
            and all(isinstance(part, str) for part in tag)
        ):
            raise _invalid_tag(tag)
        infos = []
        for text in self._list_summaries(kind, tag):
            info = _codec.summary_to_info(_codec.parse_summary(text))
            if tag is None or info.tags.get(tag[0]) == tag[1]:
                infos.append(info)
        infos.sort(key=lambda info: (info.created_at, str(info.id)), reverse=True)
        return infos

    def _delete(self, kind: Kind, record_id: object) -> bool:
        rid = _codec.coerce_id(record_id)
        deleted = self._delete_record(kind, rid)
        if deleted:
            logger.info("deleted %s/%s", kind, rid)
        return deleted

    def verify(self, record_id: object = None) -> list[IntegrityError]:
        """Reads back stored records and checks every blob against its checksum.

        Args:
            record_id: Check only this checkpoint or session; by default all.

        Returns:
            One :class:`IntegrityError` per damaged record, naming its id and
            blob; empty when everything verifies.
        """
        wanted = None if record_id is None else _codec.coerce_id(record_id)
        problems: list[IntegrityError] = []
        for kind in _KINDS:
            for text in self._list_summaries(kind, None):
                try:
                    rid = _codec.coerce_id(_codec.parse_summary(text)["id"])
                    if wanted is None or rid == wanted:
                        self._load(kind, rid, verify=True)
                except IntegrityError as exc:
                    problems.append(exc)
            problems.extend(
                problem
                for problem in self._unreadable(kind)
                if wanted is None or str(wanted) == str(problem.record_id)
            )
        return problems

    def _unreadable(self, kind: Kind) -> list[IntegrityError]:
        """Records a backend holds but cannot list, for :meth:`verify`."""
        return []

    # -- training checkpoints -------------------------------------------------

    def save_checkpoint(
        self, checkpoint: ModelCheckpoint, *, existing_id: object = None
    ) -> uuid.UUID:
        """Saves a checkpoint and returns its id once it is durable.

        Args:
            checkpoint: The checkpoint; its ``id`` and ``created_at`` are ignored.
            existing_id: Overwrite the checkpoint with this id, atomically
                (it is created when absent). Without it a new id is made.

        Returns:
            The checkpoint's id.

        Raises:
            InvalidInputError: For a bad id, tag or blob, before any write.
            BackendUnavailableError: When the backend cannot be written.
        """
        record_id = _new_or_given(existing_id)
        return self.write_encoded(_codec.encode_checkpoint(checkpoint, record_id))

    def load_checkpoint(
        self, checkpoint_id: object, *, verify: bool = True
    ) -> ModelCheckpoint | None:
        """Loads a checkpoint, or returns None when no checkpoint has that id.

        Args:
            checkpoint_id: The id, a UUID or its string.
            verify: Check every blob against the checksum stored with it.

        Raises:
            IntegrityError: When a blob or the manifest is damaged, naming both.
        """
        return self._load("models", checkpoint_id, verify)

    def list_checkpoints(self, tag: Tag | None = None) -> list[CheckpointInfo]:
        """Lists checkpoints, newest first, optionally those with one tag value.

        Args:
            tag: A ``(key, value)`` pair the checkpoint's tags must contain.
        """
        return self._list("models", tag)

    def delete_checkpoint(self, checkpoint_id: object) -> bool:
        """Deletes a checkpoint and its blobs; returns False when it did not exist."""
        return self._delete("models", checkpoint_id)

    # -- inference sessions ---------------------------------------------------

    def save_session(
        self, session: InferenceSession, *, existing_id: object = None
    ) -> uuid.UUID:
        """Saves an inference session; see :meth:`save_checkpoint`."""
        record_id = _new_or_given(existing_id)
        return self.write_encoded(_codec.encode_session(session, record_id))

    def load_session(
        self,
        session_id: object,
        *,
        verify: bool = True,
        expected_fingerprint: str | None = None,
    ) -> InferenceSession | None:
        """Loads a session, or None; see :meth:`load_checkpoint`.

        Args:
            session_id: The id, a UUID or its string.
            verify: Check the KV-cache against its stored checksum.
            expected_fingerprint: The fingerprint of the model at hand (see
                :func:`statecheckpoint.fingerprint`); a session saved with
                another model is refused.

        Raises:
            FingerprintMismatchError: When the session was saved with another
                model fingerprint than ``expected_fingerprint``.
        """
        session = self._load("sessions", session_id, verify)
        return _same_model(session, expected_fingerprint)

    def list_sessions(self, tag: Tag | None = None) -> list[SessionInfo]:
        """Lists sessions, newest first; see :meth:`list_checkpoints`."""
        return self._list("sessions", tag)

    def delete_session(self, session_id: object) -> bool:
        """Deletes a session; returns False when it did not exist."""
        return self._delete("sessions", session_id)

    # -- async twins ----------------------------------------------------------

    async def asave_checkpoint(
        self, checkpoint: ModelCheckpoint, *, existing_id: object = None
    ) -> uuid.UUID:
        """Async twin of :meth:`save_checkpoint`; cancellation stops the write."""
        record = _codec.encode_checkpoint(checkpoint, _new_or_given(existing_id))
        return await run_cancellable(self.write_encoded, record)

    async def aload_checkpoint(
        self, checkpoint_id: object, *, verify: bool = True
    ) -> ModelCheckpoint | None:
        """Async twin of :meth:`load_checkpoint`."""
        return await run_cancellable(
            partial(self._load, "models"), checkpoint_id, verify
        )

    async def alist_checkpoints(self, tag: Tag | None = None) -> list[CheckpointInfo]:
        """Async twin of :meth:`list_checkpoints`."""
        return await anyio.to_thread.run_sync(self.list_checkpoints, tag)

    async def adelete_checkpoint(self, checkpoint_id: object) -> bool:
        """Async twin of :meth:`delete_checkpoint`."""
        return await anyio.to_thread.run_sync(self.delete_checkpoint, checkpoint_id)

    async def asave_session(
        self, session: InferenceSession, *, existing_id: object = None
    ) -> uuid.UUID:
        """Async twin of :meth:`save_session`."""
        record = _codec.encode_session(session, _new_or_given(existing_id))
        return await run_cancellable(self.write_encoded, record)

    async def aload_session(
        self,
        session_id: object,
        *,
        verify: bool = True,
        expected_fingerprint: str | None = None,
    ) -> InferenceSession | None:
        """Async twin of :meth:`load_session`."""
        session = await run_cancellable(
            partial(self._load, "sessions"), session_id, verify
        )
        return _same_model(session, expected_fingerprint)

    async def alist_sessions(self, tag: Tag | None = None) -> list[SessionInfo]:
        """Async twin of :meth:`list_sessions`."""
        return await anyio.to_thread.run_sync(self.list_sessions, tag)

    async def adelete_session(self, session_id: object) -> bool:
        """Async twin of :meth:`delete_session`."""
        return await anyio.to_thread.run_sync(self.delete_session, session_id)


def _new_or_given(existing_id: object) -> uuid.UUID:
    return uuid.uuid4() if existing_id is None else _codec.coerce_id(existing_id)


def _same_model(
    session: InferenceSession | None, expected: str | None
) -> InferenceSession | None:
    if session is None or expected is None or session.model_fingerprint == expected:
        return session
    raise FingerprintMismatchError(session.id, expected, session.model_fingerprint)


def _invalid_tag(tag: object) -> InvalidInputError:
    return InvalidInputError(f"tag filter {tag!r}: expected a (str, str) pair")


async def run_cancellable(fn: Callable[..., T], *args: Any) -> T:
    """Runs blocking ``fn(*args, cancel=event)`` in a worker thread.

    When the awaiting task is cancelled the event is set, so the worker stops at
    its next chunk and cleans up, and the caller is released at once.
    """
    cancel = threading.Event()
    try:
        return await anyio.to_thread.run_sync(
            partial(fn, *args, cancel=cancel), abandon_on_cancel=True
        )
    except anyio.get_cancelled_exc_class():
        cancel.set()
        raise
