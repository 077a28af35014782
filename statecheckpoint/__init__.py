"""statecheckpoint: training checkpoints and inference sessions, persisted safely
and run as Prefect tasks, blocks and flows."""

from statecheckpoint.blocks import CheckpointPointer, CheckpointStore, FileSystemStore
from statecheckpoint.errors import (
    BackendUnavailableError,
    BackgroundSaveError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StateCheckpointError,
)
from statecheckpoint.managers import (
    BackgroundSaveOptions,
    CheckpointManager,
    SessionManager,
)
from statecheckpoint.models import (
    CheckpointInfo,
    HyperParameters,
    InferenceSession,
    MergeRule,
    ModelCheckpoint,
    SamplingConfig,
    SessionInfo,
    TokenizerData,
)

__all__ = [
    "BackendUnavailableError",
    "BackgroundSaveError",
    "BackgroundSaveOptions",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointPointer",
    "CheckpointStore",
    "FileSystemStore",
    "HyperParameters",
    "InferenceSession",
    "IntegrityError",
    "InvalidInputError",
    "MergeRule",
    "ModelCheckpoint",
    "NotFoundError",
    "SamplingConfig",
    "SessionInfo",
    "SessionManager",
    "StateCheckpointError",
    "TokenizerData",
]
