"""Turns records into what every backend stores, and back.

A stored record is two JSON documents plus named blobs. The *summary* is small
(id, creation time, tags, epoch or fingerprint, blob sizes and checksums) and is
all that ``list`` reads; the *body* holds the rest (tokenizer, hyperparameters,
token history, sampling settings). Both are written with ``ensure_ascii`` and
``allow_nan``, so every Python ``str`` (lone surrogates included) and every float
(NaN, infinities, negative zero) survives the trip exactly.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from statecheckpoint import _xxh3
from statecheckpoint.errors import IntegrityError, InvalidInputError
from statecheckpoint.models import (
    CheckpointInfo,
    HyperParameters,
    InferenceSession,
    ModelCheckpoint,
    SessionInfo,
    as_byte_view,
)

Kind = Literal["models", "sessions"]
FORMAT_VERSION = 1
CHECKSUM = "xxh3_128"
MODEL_BLOBS = ("weights", "optimizer_state")
SESSION_BLOBS = ("kv_cache",)
_HASH_CHUNK = 16 << 20


class Hasher(Protocol):
    """The streaming interface of a checksum (an ``xxhash.xxh3_128``)."""

    def update(self, data: Any, /) -> None: ...

    def hexdigest(self) -> str: ...


def coerce_id(value: object) -> uuid.UUID:
    """Returns ``value`` as a UUID, accepting a UUID or its canonical string.

    Raises:
        InvalidInputError: For anything else, before any storage is touched.
    """
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            pass
        else:
            if str(parsed) == value.lower():
                return parsed
    raise InvalidInputError(
        f"invalid id {value!r}: expected a uuid.UUID or its canonical string "
        "such as '12345678-1234-5678-1234-567812345678'"
    )


def dumps(value: Any) -> str:
    """Encodes JSON exactly: ASCII only, NaN and infinities allowed."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True, separators=(",", ":"))


def new_hasher() -> Hasher:
    """Returns a streaming hasher for :data:`CHECKSUM`.

    Feed it a blob's bytes in order with ``update`` and read ``hexdigest()``:
    the result equals :func:`checksum` of the whole blob. Stores use it to hash
    each chunk while it is still in the CPU cache from being read or written.
    It lets other threads run while it hashes (see ``_xxh3``).
    """
    hasher: Hasher = _xxh3.new()
    return hasher


def checksum(view: memoryview) -> str:
    """Returns the hex xxh3-128 digest of a byte view."""
    hasher = new_hasher()
    for start in range(0, len(view), _HASH_CHUNK):
        hasher.update(view[start : start + _HASH_CHUNK])
    return hasher.hexdigest()


@dataclass
class EncodedRecord:
    """A record ready to store: metadata frozen as JSON, blobs as byte views."""

    kind: Kind
    id: uuid.UUID
    created_at: datetime
    tags: dict[str, str]
    summary: dict[str, Any]
    body_text: str
    blobs: dict[str, memoryview] = field(default_factory=dict)

    def summary_text(self, digests: dict[str, str]) -> str:
        """Returns the summary document with the blobs' sizes and checksums."""
        blobs = {
            name: {"size": len(view), CHECKSUM: digests[name]}
            for name, view in self.blobs.items()
        }
        return dumps({**self.summary, "blobs": blobs})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _check_extras(hp: HyperParameters) -> None:
    for name, value in (hp.model_extra or {}).items():
        try:
            back = json.loads(dumps(value))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"hyperparameters.{name}: {type(value).__name__} is not JSON-able "
                f"({exc}); use str, int, float, bool, None, list or dict with str keys"
            ) from None
        if not _same(value, back):
            raise InvalidInputError(
                f"hyperparameters.{name}: the value does not round-trip through JSON "
                "(tuples become lists, dict keys become str); store lists and dicts "
                "with str keys"
            )


def _check_tags(tags: dict[str, str]) -> None:
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"tags: key {key!r} must be a non-empty str")
        if not isinstance(value, str):
            raise InvalidInputError(f"tags.{key}: value {value!r} must be a str")


def _check_type(record: object, expected: type) -> None:
    if not isinstance(record, expected):
        raise InvalidInputError(
            f"expected {expected.__name__}, got {type(record).__name__}; "
            "checkpoints go to CheckpointManager, sessions to SessionManager"
        )


def _views(record: Any, names: tuple[str, ...]) -> dict[str, memoryview]:
    return {name: as_byte_view(getattr(record, name), name) for name in names}


def encode_checkpoint(
    checkpoint: ModelCheckpoint, record_id: uuid.UUID
) -> EncodedRecord:
    """Freezes a checkpoint's metadata for storage; blobs are viewed, not copied."""
    _check_type(checkpoint, ModelCheckpoint)
    _check_tags(checkpoint.tags)
    if checkpoint.hyperparameters is not None:
        _check_extras(checkpoint.hyperparameters)
    created = datetime.now(UTC)
    body = checkpoint.model_dump(
        mode="python", include={"tokenizer", "hyperparameters"}
    )
    summary = {
        "format": FORMAT_VERSION,
        "kind": "models",
        "id": str(record_id),
        "created_at": created.isoformat(),
        "tags": dict(checkpoint.tags),
        "epoch": checkpoint.epoch,
        "loss": checkpoint.loss,
    }
    return EncodedRecord(
        "models",
        record_id,
        created,
        dict(checkpoint.tags),
        summary,
        dumps(body),
        _views(checkpoint, MODEL_BLOBS),
    )


def encode_session(session: InferenceSession, record_id: uuid.UUID) -> EncodedRecord:
    """Freezes a session's metadata for storage; the KV-cache is viewed, not copied."""
    _check_type(session, InferenceSession)
    _check_tags(session.tags)
    created = datetime.now(UTC)
    body = session.model_dump(mode="python", include={"token_history", "sampling"})
    summary = {
        "format": FORMAT_VERSION,
        "kind": "sessions",
        "id": str(record_id),
        "created_at": created.isoformat(),
        "tags": dict(session.tags),
        "model_fingerprint": session.model_fingerprint,
        "num_tokens": len(session.token_history),
    }
    return EncodedRecord(
        "sessions",
        record_id,
        created,
        dict(session.tags),
        summary,
        dumps(body),
        _views(session, SESSION_BLOBS),
    )


def parse_summary(
    text: str | dict[str, Any], record_id: object = None
) -> dict[str, Any]:
    """Parses a stored summary document (a backend may hand it over parsed).

    Raises:
        IntegrityError: When it is not the JSON this library writes.
    """
    try:
        summary = json.loads(text) if isinstance(text, str) else text
        if not isinstance(summary, dict) or "blobs" not in summary:
            raise ValueError("not a summary document")
    except ValueError as exc:
        raise IntegrityError(
            f"record {record_id}: its summary cannot be parsed ({exc})",
            record_id=record_id,
            blob="summary",
        ) from None
    return summary


def summary_to_info(summary: dict[str, Any]) -> CheckpointInfo | SessionInfo:
    """Builds the ``list`` entry for a parsed summary."""
    sizes = {name: meta["size"] for name, meta in summary["blobs"].items()}
    if summary["kind"] == "models":
        return CheckpointInfo(
            id=summary["id"],
            created_at=summary["created_at"],
            epoch=summary["epoch"],
            loss=summary["loss"],
            tags=summary["tags"],
            sizes=sizes,
        )
    return SessionInfo(
        id=summary["id"],
        created_at=summary["created_at"],
        model_fingerprint=summary["model_fingerprint"],
        num_tokens=summary["num_tokens"],
        tags=summary["tags"],
        sizes=sizes,
    )


def verify_blobs(
    summary: dict[str, Any],
    blobs: dict[str, bytearray],
    record_id: uuid.UUID,
    locate: Callable[[str], str],
    digests: Mapping[str, str] | None = None,
) -> None:
    """Checks each blob's size and checksum against the summary.

    Args:
        summary: The parsed summary, with each blob's size and checksum.
        blobs: The blobs as read.
        record_id: The record's id, for the error.
        locate: Names where a blob is stored (a file path, a table row).
        digests: Checksums of the blobs computed while they were read; a blob
            without one here is hashed now.

    Raises:
        IntegrityError: Naming the record and the first damaged blob.
    """
    for name, meta in summary["blobs"].items():
        data = blobs.get(name)
        where = locate(name)
        if data is None:
            raise IntegrityError(
                f"record {record_id}: blob {name!r} is missing ({where})",
                record_id=record_id,
                blob=name,
            )
        if len(data) != meta["size"]:
            raise IntegrityError(
                f"record {record_id}: blob {name!r} ({where}) has {len(data)} "
                f"bytes, expected {meta['size']}",
                record_id=record_id,
                blob=name,
            )
        digest = (digests or {}).get(name) or checksum(memoryview(data))
        if digest != meta[CHECKSUM]:
            raise IntegrityError(
                f"record {record_id}: blob {name!r} ({where}) fails its {CHECKSUM} "
                "checksum; the stored copy is damaged",
                record_id=record_id,
                blob=name,
            )


def decode_record(
    summary: dict[str, Any],
    body_text: str | dict[str, Any],
    blobs: dict[str, bytearray],
) -> ModelCheckpoint | InferenceSession:
    """Rebuilds the record from its stored parts (blobs already verified)."""
    record_id = summary["id"]
    try:
        body = json.loads(body_text) if isinstance(body_text, str) else body_text
    except ValueError as exc:
        raise IntegrityError(
            f"record {record_id}: its body cannot be parsed ({exc})",
            record_id=record_id,
            blob="body",
        ) from None
    common = {
        "id": record_id,
        "created_at": summary["created_at"],
        "tags": summary["tags"],
    }
    if summary["kind"] == "models":
        return ModelCheckpoint(
            **common,
            **body,
            epoch=summary["epoch"],
            loss=summary["loss"],
            weights=blobs["weights"],
            optimizer_state=blobs["optimizer_state"],
        )
    return InferenceSession(
        **common,
        **body,
        model_fingerprint=summary["model_fingerprint"],
        kv_cache=blobs["kv_cache"],
    )
