"""Prefect tasks for every store operation of both domains.

Each task retries only what can succeed on a second try (a
:class:`~statecheckpoint.errors.BackendUnavailableError`: a full disk, a refused
connection), never hashes its inputs for caching and never persists its result,
so a multi-GB blob passes through at no extra cost. Change the retry policy with
``.with_options(retries=..., retry_delay_seconds=...)``.
"""

from statecheckpoint.tasks.operations import (
    DEFAULT_RETRIES,
    delete_checkpoint,
    delete_session,
    list_checkpoints,
    list_sessions,
    load_checkpoint,
    load_session,
    save_checkpoint,
    save_session,
    write_record,
)

__all__ = [
    "DEFAULT_RETRIES",
    "delete_checkpoint",
    "delete_session",
    "list_checkpoints",
    "list_sessions",
    "load_checkpoint",
    "load_session",
    "save_checkpoint",
    "save_session",
    "write_record",
]
