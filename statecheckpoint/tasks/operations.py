"""The task definitions; see the package docstring."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from statecheckpoint import _codec
from statecheckpoint._codec import EncodedRecord
from statecheckpoint.blocks.base import CheckpointStore, Tag
from statecheckpoint.blocks.pointer import CheckpointPointer
from statecheckpoint.errors import BackendUnavailableError
from statecheckpoint.models import (
    CheckpointInfo,
    InferenceSession,
    ModelCheckpoint,
    SessionInfo,
)

DEFAULT_RETRIES = 2


def _retry_if_unavailable(task: Task[..., Any], run: TaskRun, state: State) -> bool:
    return isinstance(state.result(raise_on_failure=False), BackendUnavailableError)


_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": DEFAULT_RETRIES,
    "retry_delay_seconds": 1,
    "retry_condition_fn": _retry_if_unavailable,
}


@task(name="save-record", task_run_name="save-{record.kind}-{record.id}", **_OPTIONS)
def write_record(
    store: CheckpointStore, record: EncodedRecord, pointer_name: str | None = None
) -> uuid.UUID:
    """Stores an encoded record, then moves the pointer block to it.

    Managers submit this task with metadata frozen and mutable buffers already
    snapshotted at ``save`` time.

    Args:
        store: The store block.
        record: The record, from ``CheckpointManager`` or ``SessionManager``.
        pointer_name: A :class:`CheckpointPointer` to advance once the save is
            durable (checkpoints only).

    Returns:
        The record's id.
    """
    record_id = store.write_encoded(record)
    if pointer_name and record.kind == "models":
        CheckpointPointer.advance(
            pointer_name,
            record_id,
            epoch=record.summary.get("epoch"),
            loss=record.summary.get("loss"),
        )
    return record_id


@task(name="save-checkpoint", **_OPTIONS)
def save_checkpoint(
    store: CheckpointStore,
    checkpoint: ModelCheckpoint,
    existing_id: uuid.UUID | str | None = None,
    pointer_name: str | None = None,
) -> uuid.UUID:
    """Saves a checkpoint and returns its id once durable.

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
    record = _codec.encode_checkpoint(checkpoint, record_id)
    return write_record.fn(store, record, pointer_name)


@task(name="load-checkpoint", **_OPTIONS)
def load_checkpoint(
    store: CheckpointStore, checkpoint_id: uuid.UUID | str, verify: bool = True
) -> ModelCheckpoint | None:
    """Loads a checkpoint, or returns None when there is none with that id."""
    return store.load_checkpoint(checkpoint_id, verify=verify)


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
    store: CheckpointStore, session_id: uuid.UUID | str, verify: bool = True
) -> InferenceSession | None:
    """Loads an inference session, or returns None when there is none."""
    return store.load_session(session_id, verify=verify)


@task(name="list-sessions", **_OPTIONS)
def list_sessions(store: CheckpointStore, tag: Tag | None = None) -> list[SessionInfo]:
    """Lists inference sessions, newest first, optionally filtered by one tag."""
    return store.list_sessions(tag)


@task(name="delete-session", **_OPTIONS)
def delete_session(store: CheckpointStore, session_id: uuid.UUID | str) -> bool:
    """Deletes an inference session; returns False when it did not exist."""
    return store.delete_session(session_id)
