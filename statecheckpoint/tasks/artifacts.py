"""Prefect artifacts for saves and loads: what was stored, and how far a big one is.

After a save or load that runs inside a flow or task run, a table artifact lists
the record (id, epoch, loss, blob sizes, tags, creation time). A save or load of
more than :data:`PROGRESS_THRESHOLD` bytes also keeps a progress artifact up to
date while the bytes move, at most once per :data:`PROGRESS_INTERVAL` seconds.

Artifacts are a report, never part of the save: when the Prefect API refuses one,
a warning is logged and the save or load goes on.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext

from statecheckpoint import _progress
from statecheckpoint._codec import EncodedRecord, Kind
from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.models import InferenceSession, ModelCheckpoint

__all__ = [
    "PROGRESS_INTERVAL",
    "PROGRESS_THRESHOLD",
    "human_size",
    "in_run_context",
    "publish_loaded",
    "publish_saved",
    "record_row",
    "transfer_progress",
]

logger = logging.getLogger(__name__)

PROGRESS_THRESHOLD = 256 << 20
"""Saves and loads of more bytes than this get a progress artifact."""

PROGRESS_INTERVAL = 1.0
"""Least number of seconds between two updates of a progress artifact."""

_NOUN: dict[Kind, str] = {"models": "checkpoint", "sessions": "session"}


def in_run_context() -> bool:
    """Tells whether the caller runs inside a Prefect flow run or task run."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def human_size(nbytes: int) -> str:
    """Formats a byte count for people, e.g. ``1.50 GiB`` or ``512 B``."""
    if nbytes < 1024:
        return f"{nbytes} B"
    size = float(nbytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.2f} {unit}"


def _json_number(value: float | None) -> float | str | None:
    # A table artifact is JSON: NaN would become null and infinities are refused.
    if value is None or math.isfinite(value):
        return value
    return repr(value)


def record_row(
    kind: Kind,
    record_id: uuid.UUID | str,
    created_at: datetime | str | None,
    tags: Mapping[str, str],
    sizes: Mapping[str, int],
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """Builds the table row that describes one checkpoint or session.

    Args:
        kind: ``"models"`` or ``"sessions"``.
        record_id: The record's id.
        created_at: When the store saved it.
        tags: Its tags.
        sizes: Blob name to size in bytes.
        fields: The domain's own columns (epoch and loss, or fingerprint and
            token count), in display order.
    """
    created = created_at.isoformat() if isinstance(created_at, datetime) else None
    row: dict[str, Any] = {"id": str(record_id), **fields}
    row.update({name: human_size(size) for name, size in sizes.items()})
    row["total_bytes"] = sum(sizes.values())
    row["tags"] = ", ".join(f"{key}={value}" for key, value in sorted(tags.items()))
    row["created_at"] = created or (str(created_at) if created_at else "")
    return row


def _saved_row(record: EncodedRecord) -> dict[str, Any]:
    summary = record.summary
    if record.kind == "models":
        fields = {"epoch": summary["epoch"], "loss": _json_number(summary["loss"])}
    else:
        fields = {
            "model_fingerprint": summary["model_fingerprint"],
            "num_tokens": summary["num_tokens"],
        }
    sizes = {name: len(view) for name, view in record.blobs.items()}
    return record_row(
        record.kind, record.id, record.created_at, record.tags, sizes, fields
    )


def _loaded_row(
    record: ModelCheckpoint | InferenceSession,
) -> tuple[Kind, dict[str, Any]]:
    if isinstance(record, ModelCheckpoint):
        kind: Kind = "models"
        fields: dict[str, Any] = {
            "epoch": record.epoch,
            "loss": _json_number(record.loss),
        }
        blobs = {"weights": record.weights, "optimizer_state": record.optimizer_state}
    else:
        kind = "sessions"
        fields = {
            "model_fingerprint": record.model_fingerprint,
            "num_tokens": len(record.token_history),
        }
        blobs = {"kv_cache": record.kv_cache}
    sizes = {name: memoryview(blob).nbytes for name, blob in blobs.items()}
    assert record.id is not None
    return kind, record_row(
        kind, record.id, record.created_at, record.tags, sizes, fields
    )


def _store_name(store: CheckpointStore) -> str:
    name = getattr(store, "_block_document_name", None)
    slug = store.get_block_type_slug()
    return f"{slug}/{name}" if name else type(store).__name__


def _publish(
    kind: Kind, verb: str, row: dict[str, Any], store: CheckpointStore
) -> None:
    noun = _NOUN[kind]
    try:
        create_table_artifact(
            [row],
            key=f"{noun}-{verb}",
            description=f"{noun.capitalize()} `{row['id']}` {verb} "
            f"({_store_name(store)}).",
            _sync=True,  # type: ignore[call-arg]  # sync even where a loop runs
        )
    except Exception as exc:  # noqa: BLE001 - a report must not fail the save
        logger.warning("could not create the %s-%s artifact: %r", noun, verb, exc)


def publish_saved(store: CheckpointStore, record: EncodedRecord) -> None:
    """Creates the table artifact for a record just saved, inside a run only."""
    if in_run_context():
        _publish(record.kind, "saved", _saved_row(record), store)


def publish_loaded(
    store: CheckpointStore, record: ModelCheckpoint | InferenceSession | None
) -> None:
    """Creates the table artifact for a record just loaded, inside a run only.

    Nothing is created for ``None`` (no record with that id).
    """
    if record is not None and in_run_context():
        kind, row = _loaded_row(record)
        _publish(kind, "loaded", row, store)


class _ProgressReporter:
    """Mirrors a :class:`~statecheckpoint._progress.Transfer` into a progress
    artifact, created once the transfer is known to be big enough."""

    def __init__(self, noun: str, verb: str) -> None:
        self.key = f"{noun}-{verb}-progress"
        self.label = f"{noun} {verb}"
        self.artifact_id: uuid.UUID | None = None
        self.reported = -1.0
        self.last_time = 0.0
        self.broken = False

    def __call__(self, transfer: _progress.Transfer) -> None:
        fraction = transfer.fraction
        if self.broken or fraction is None:
            return
        if self.artifact_id is None and (transfer.total or 0) <= PROGRESS_THRESHOLD:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self.last_time < PROGRESS_INTERVAL:
            return
        self.last_time = now
        self.report(fraction * 100.0, transfer)

    def report(self, percent: float, transfer: _progress.Transfer) -> None:
        if percent == self.reported or self.broken:
            return
        description = (
            f"{self.label}: {human_size(transfer.done)} of "
            f"{human_size(transfer.total or 0)}"
        )
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(  # type: ignore[assignment]
                    percent,
                    key=self.key,
                    description=description,
                    _sync=True,  # type: ignore[call-arg]
                )
            else:
                update_progress_artifact(
                    self.artifact_id,
                    percent,
                    description=description,
                    _sync=True,  # type: ignore[call-arg]
                )
        except Exception as exc:  # noqa: BLE001 - a report must not fail the save
            self.broken = True
            logger.warning("could not update the %s artifact: %r", self.key, exc)
            return
        self.reported = percent


@contextmanager
def transfer_progress(kind: Kind, verb: str) -> Iterator[None]:
    """Keeps a progress artifact for the save or load run inside the block.

    Nothing is created outside a flow or task run, nor for a transfer of at most
    :data:`PROGRESS_THRESHOLD` bytes. The artifact reaches 100 only when the
    block ends without an error.

    Args:
        kind: ``"models"`` or ``"sessions"``.
        verb: ``"save"`` or ``"load"``; part of the artifact key.
    """
    if not in_run_context():
        yield
        return
    reporter = _ProgressReporter(_NOUN[kind], verb)
    with _progress.tracking(reporter) as transfer:
        yield
    if reporter.artifact_id is not None:
        transfer.done = transfer.total or transfer.done
        reporter.report(100.0, transfer)
