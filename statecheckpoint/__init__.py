"""statecheckpoint: training checkpoints and inference sessions, persisted safely
and run as Prefect tasks, blocks and flows."""

from statecheckpoint.blocks import (
    CheckpointPointer,
    CheckpointStore,
    FileSystemStore,
    PostgresStore,
    SqlServerStore,
)
from statecheckpoint.errors import (
    BackendUnavailableError,
    BackgroundSaveError,
    FingerprintMismatchError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StateCheckpointError,
)
from statecheckpoint.fingerprint import fingerprint
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
from statecheckpoint.retention import RetentionPolicy

__all__ = [
    "BackendUnavailableError",
    "BackgroundSaveError",
    "BackgroundSaveOptions",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointPointer",
    "CheckpointStore",
    "FileSystemStore",
    "FingerprintMismatchError",
    "HyperParameters",
    "InferenceSession",
    "IntegrityError",
    "InvalidInputError",
    "MergeRule",
    "ModelCheckpoint",
    "NotFoundError",
    "RetentionPolicy",
    "PostgresStore",
    "SamplingConfig",
    "SessionInfo",
    "SessionManager",
    "SqlServerStore",
    "StateCheckpointError",
    "TokenizerData",
    "fingerprint",
]
