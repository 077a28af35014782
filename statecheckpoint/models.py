"""Pydantic records for both domains: training checkpoints and inference sessions.

Blob fields (weights, optimizer state, KV-cache) hold any object that exposes a
contiguous buffer: ``bytes``, ``bytearray``, ``memoryview`` or a numpy array. The
record keeps the object itself, never a copy; stores read it through a memoryview.
Loaded blobs come back as ``bytearray``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

__all__ = [
    "Blob",
    "MergeRule",
    "TokenizerData",
    "HyperParameters",
    "SamplingConfig",
    "ModelCheckpoint",
    "InferenceSession",
    "CheckpointInfo",
    "SessionInfo",
    "as_byte_view",
]


def as_byte_view(value: Any, field: str = "blob") -> memoryview:
    """Returns a flat, read-only byte view over a buffer, without copying it.

    Args:
        value: Any object exposing a C-contiguous buffer.
        field: The field name used in the error message.

    Raises:
        InvalidInputError: When the object has no buffer or it is not contiguous.
    """
    from statecheckpoint.errors import InvalidInputError

    try:
        view = memoryview(value)
    except TypeError:
        raise InvalidInputError(
            f"{field}: expected bytes, bytearray, memoryview or a numpy array, "
            f"got {type(value).__name__}"
        ) from None
    if "O" in view.format:
        raise InvalidInputError(
            f"{field}: an array of Python objects holds pointers, not data; "
            "convert it to a numeric dtype"
        )
    if not view.c_contiguous:
        raise InvalidInputError(
            f"{field}: the buffer is not C-contiguous; pass a contiguous copy "
            "(numpy.ascontiguousarray)"
        )
    return view.cast("B").toreadonly()


def _check_blob(value: Any) -> Any:
    as_byte_view(value)
    return value


Blob = Annotated[
    Any,
    BeforeValidator(_check_blob),
    PlainSerializer(lambda value: None, when_used="always"),
]
"""A bytes-like payload kept by reference: bytes, bytearray, memoryview, ndarray."""


class MergeRule(NamedTuple):
    """One BPE merge: the pair of symbols joined into a new token."""

    left: str
    right: str


class TokenizerData(BaseModel):
    """A complete tokenizer: vocabulary both ways, merge rules and special tokens."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field("ByteLevelBPE", description="Tokenizer family, free text.")
    token_to_id: dict[str, int] = Field(default_factory=dict)
    id_to_token: dict[int, str] = Field(default_factory=dict)
    merge_rules: list[MergeRule] = Field(default_factory=list)
    special_tokens: dict[str, int] = Field(
        default_factory=dict, description="Special token names (bos, eos, ...) to ids."
    )

    def get_special_token_id(self, name: str) -> int | None:
        """Returns the id of a special token such as ``"eos"``, or None if unknown."""
        return self.special_tokens.get(name)


class HyperParameters(BaseModel):
    """Model and training settings; any extra JSON-able field is kept as given."""

    model_config = ConfigDict(extra="allow")

    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    learning_rate: float | None = None


class SamplingConfig(BaseModel):
    """How tokens are drawn during generation; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    max_new_tokens: int | None = None


class _Record(BaseModel):
    model_config = ConfigDict(
        arbitrary_types_allowed=True, validate_assignment=True, extra="forbid"
    )

    id: uuid.UUID | None = Field(None, description="Set by the store on save.")
    created_at: datetime | None = Field(None, description="Set by the store on save.")
    tags: dict[str, str] = Field(default_factory=dict)


class ModelCheckpoint(_Record):
    """A training checkpoint: weights, optimizer state, tokenizer and metadata."""

    epoch: int = 0
    loss: float | None = None
    weights: Blob = Field(b"", repr=False)
    optimizer_state: Blob = Field(b"", repr=False)
    tokenizer: TokenizerData | None = None
    hyperparameters: HyperParameters | None = None


class InferenceSession(_Record):
    """A paused generation: KV-cache bytes, token history and sampling settings."""

    kv_cache: Blob = Field(b"", repr=False)
    token_history: list[int] = Field(default_factory=list)
    sampling: SamplingConfig | None = None
    model_fingerprint: str = ""


class CheckpointInfo(BaseModel):
    """What ``list`` returns for a checkpoint: its metadata without the blobs."""

    id: uuid.UUID
    created_at: datetime
    epoch: int
    loss: float | None
    tags: dict[str, str]
    sizes: dict[str, int] = Field(description="Blob name to size in bytes.")


class SessionInfo(BaseModel):
    """What ``list`` returns for a session: its metadata without the KV-cache."""

    id: uuid.UUID
    created_at: datetime
    model_fingerprint: str
    num_tokens: int
    tags: dict[str, str]
    sizes: dict[str, int] = Field(description="Blob name to size in bytes.")
