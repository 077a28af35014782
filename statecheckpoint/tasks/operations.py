"""The task definitions; see the package docstring."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from prefect.states import State

from statecheckpoint import _codec
from statecheckpoint._codec import EncodedRecord
from statecheckpoint.blocks.base import CheckpointStore, Tag
from statecheckpoint.blocks.pointer import CheckpointPointer
from statecheckpoint.errors import BackendUnavailableError, InvalidInputError
from statecheckpoint.models import (
    CheckpointInfo,
    InferenceSession,
    ModelCheckpoint,
    SessionInfo,
)
from statecheckpoint.retention import (
    RUN_TAG,
    RetentionPolicy,
    apply_retention,
    with_run_tag,
)
from statecheckpoint.tasks import artifacts

DEFAULT_RETRIES = 2


def _retry_if_unavailable(task: Task[..., Any], run: TaskRun, state: State) -> bool:
    return isinstance(state.result(raise_on_failure=False), BackendUnavailableError)


_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    # Never written to (results are not persisted), but naming it spares each task
    # run outside a flow an API round trip to ask the server for its default.
    "result_storage": Path(PREFECT_LOCAL_STORAGE_PATH.value()),
    "retries": DEFAULT_RETRIES,
    "retry_delay_seconds": 1,
    "retry_condition_fn": _retry_if_unavailable,
}


@task(name="save-record", task_run_name="save-{record.kind}-{record.id}", **_OPTIONS)
def write_record(
    store: CheckpointStore,
    record: EncodedRecord,
    pointer_name: str | None = None,
    retention: RetentionPolicy | None = None,
) -> uuid.UUID:
    """Stores an encoded record, moves the pointer block to it, then prunes.

    Managers submit this task with metadata frozen and mutable buffers already
    snapshotted at ``save`` time.

    Args:
        store: The store block.
        record: The record, from ``CheckpointManager`` or ``SessionManager``.
        pointer_name: A :class:`CheckpointPointer` to advance once the save is
            durable (checkpoints only).
        retention: Applied to the checkpoint's run (its ``run`` tag) once the
            save is durable and the pointer moved.

    Returns:
        The record's id.
    """
    run = record.tags.get(RUN_TAG) if record.kind == "models" else None
    if retention is not None and record.kind == "models" and run is None:
        raise InvalidInputError(
            f"checkpoint {record.id}: retention needs a run tag (run=<name>)"
        )
    with artifacts.transfer_progress(record.kind, "save"):
        record_id = store.write_encoded(record)
    artifacts.publish_saved(store, record)
    if pointer_name and record.kind == "models":
        CheckpointPointer.advance(
            pointer_name,
            record_id,
            epoch=record.summary.get("epoch"),
            loss=record.summary.get("loss"),
        )
    if retention is not None and run is not None:
        apply_retention(store, retention, run, protect={record_id})
    return record_id


@task(name="save-checkpoint", **_OPTIONS)
def save_checkpoint(
    store: CheckpointStore,
    checkpoint: ModelCheckpoint,
    existing_id: uuid.UUID | str | None = None,
    pointer_name: str | None = None,
    retention: RetentionPolicy | None = None,
) -> uuid.UUID:
    """Saves a checkpoint and returns its id once durable.

    With ``retention``, the run's checkpoints the policy does not keep are
    deleted afterwards; the run is the checkpoint's ``run`` tag, else
    ``pointer_name`` (then added as its ``run`` tag).

    Example:
        ```python
        from prefect import flow
        from statecheckpoint import FileSystemStore, ModelCheckpoint
        from statecheckpoint.tasks import save_checkpoint

        @flow
        def train():
            store = FileSystemStore(root="./checkpoints")
            return save_checkpoint(store, ModelCheckpoint(epoch=1, weights=b"w"))
        ```
    """
    record_id = uuid.uuid4() if existing_id is None else _codec.coerce_id(existing_id)
    if retention is not None:
        checkpoint = with_run_tag(checkpoint, pointer_name)
    record = _codec.encode_checkpoint(checkpoint, record_id)
    return write_record.fn(store, record, pointer_name, retention)


@task(name="load-checkpoint", **_OPTIONS)
def load_checkpoint(
    store: CheckpointStore, checkpoint_id: uuid.UUID | str, verify: bool = True
) -> ModelCheckpoint | None:
    """Loads a checkpoint, or returns None when there is none with that id."""
    with artifacts.transfer_progress("models", "load"):
        checkpoint = store.load_checkpoint(checkpoint_id, verify=verify)
    artifacts.publish_loaded(store, checkpoint)
    return checkpoint


@task(name="list-checkpoints", **_OPTIONS)
def list_checkpoints(
    store: CheckpointStore, tag: Tag | None = None
) -> list[CheckpointInfo]:
    """Lists checkpoints, newest first, optionally filtered by one tag."""
    return store.list_checkpoints(tag)


@task(name="delete-checkpoint", **_OPTIONS)
def delete_checkpoint(store: CheckpointStore, checkpoint_id: uuid.UUID | str) -> bool:
    """Deletes a checkpoint; returns False when it did not exist."""
    return store.delete_checkpoint(checkpoint_id)


@task(name="save-session", **_OPTIONS)
def save_session(
    store: CheckpointStore,
    session: InferenceSession,
    existing_id: uuid.UUID | str | None = None,
) -> uuid.UUID:
    """Saves an inference session and returns its id once durable."""
    record_id = uuid.uuid4() if existing_id is None else _codec.coerce_id(existing_id)
    return write_record.fn(store, _codec.encode_session(session, record_id))


@task(name="load-session", **_OPTIONS)
def load_session(
    store: CheckpointStore,
    session_id: uuid.UUID | str,
    verify: bool = True,
    expected_fingerprint: str | None = None,
) -> InferenceSession | None:
    """Loads an inference session, or returns None when there is none.

    With ``expected_fingerprint``, a session saved for another model raises
    :class:`~statecheckpoint.errors.FingerprintMismatchError`.
    """
    with artifacts.transfer_progress("sessions", "load"):
        session = store.load_session(
            session_id, verify=verify, expected_fingerprint=expected_fingerprint
        )
    artifacts.publish_loaded(store, session)
    return session


@task(name="list-sessions", **_OPTIONS)
def list_sessions(store: CheckpointStore, tag: Tag | None = None) -> list[SessionInfo]:
    """Lists inference sessions, newest first, optionally filtered by one tag."""
    return store.list_sessions(tag)


@task(name="delete-session", **_OPTIONS)
def delete_session(store: CheckpointStore, session_id: uuid.UUID | str) -> bool:
    """Deletes an inference session; returns False when it did not exist."""
    return store.delete_session(session_id)
