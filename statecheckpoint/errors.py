"""The exceptions raised by statecheckpoint.

Every error the library raises derives from :class:`StateCheckpointError`, so one
``except`` clause catches them all. Subclasses exist only where a caller can act on
the difference.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "StateCheckpointError",
    "InvalidInputError",
    "NotFoundError",
    "IntegrityError",
    "BackendUnavailableError",
    "BackgroundSaveError",
    "FingerprintMismatchError",
]


class StateCheckpointError(Exception):
    """Root of every error raised by statecheckpoint."""


class InvalidInputError(StateCheckpointError, ValueError):
    """Raised before any I/O when an id, tag, blob or field cannot be stored."""


class NotFoundError(StateCheckpointError, LookupError):
    """Raised when an operation needs a checkpoint or session that does not exist."""


class IntegrityError(StateCheckpointError):
    """Raised when a stored blob or manifest fails its checksum or cannot be parsed.

    Attributes:
        record_id: The id of the damaged checkpoint or session.
        blob: The name of the damaged blob or file, when known.
    """

    def __init__(self, message: str, *, record_id: object = None, blob: str = ""):
        super().__init__(message)
        self.record_id = record_id
        self.blob = blob


class BackendUnavailableError(StateCheckpointError):
    """Raised when the storage backend cannot be reached or written.

    It is the error the Prefect tasks retry: a full disk, a refused connection or
    an unwritable root.
    """


class BackgroundSaveError(StateCheckpointError):
    """Raised by ``flush()`` when one or more background saves failed.

    Attributes:
        failures: ``(id, exception)`` pairs, one per failed save.
    """

    def __init__(self, failures: Sequence[tuple[object, BaseException]]):
        ids = ", ".join(str(record_id) for record_id, _ in failures)
        first = failures[0][1] if failures else None
        super().__init__(
            f"{len(failures)} background save(s) failed: {ids}; first error: {first!r}"
        )
        self.failures = list(failures)


class FingerprintMismatchError(StateCheckpointError):
    """Raised when a session is loaded for a model other than the one it was
    saved with; its KV-cache would be meaningless there.

    Load the model the session names, or start a new session.

    Attributes:
        session_id: The session's id.
        expected: The fingerprint the caller's model has.
        actual: The fingerprint stored with the session ("" when none was).
    """

    def __init__(self, session_id: object, expected: str, actual: str):
        stored = f"model {actual[:16]}..." if actual else "no model fingerprint"
        super().__init__(
            f"session {session_id} was saved with {stored}, not with the expected "
            f"model {expected[:16]}...; load the model it was made with or start a "
            "new session"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual
