"""Opening the store a command names, and finding records in it."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import typer

from statecheckpoint import _codec
from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.blocks.filesystem import FileSystemStore
from statecheckpoint.errors import InvalidInputError, StateCheckpointError
from statecheckpoint.models import CheckpointInfo, SessionInfo


class CommandFailed(StateCheckpointError):
    """Raised by a command that cannot do what was asked; the CLI exits 1."""


def open_store(
    root: Path | None, block: str | None, *, create: bool = False
) -> CheckpointStore:
    """Returns the store named by ``--root`` or ``--block`` (exactly one).

    Args:
        root: Folder of a file-system store.
        block: A saved store block, as ``block-type-slug/name``.
        create: Create a missing root folder (for writes); reads refuse one.

    Raises:
        typer.BadParameter: For a usage mistake (exit status 2).
        CommandFailed: When the block cannot be loaded (exit status 1).
    """
    if (root is None) == (block is None):
        raise typer.BadParameter(
            "give the store as --root DIR or as --block BLOCK-TYPE-SLUG/NAME "
            "(or set STATECHECKPOINT_ROOT or STATECHECKPOINT_BLOCK)",
            param_hint="'--root' / '--block'",
        )
    if root is not None:
        return FileSystemStore(
            root=str(root), create_root=create, check_writable=create
        )
    assert block is not None
    if block.count("/") != 1 or not all(block.split("/")):
        raise typer.BadParameter(
            f"{block!r}: expected block-type-slug/name, e.g. "
            "file-system-checkpoint-store/prod",
            param_hint="'--block'",
        )
    return _load_block(block)


def _load_block(reference: str) -> CheckpointStore:
    from prefect.blocks.core import Block

    # Loading emits a Prefect event; the events worker warns on stderr when the
    # command exits before it was sent, which is noise for a one-shot command.
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)

    try:
        loaded = Block.load(reference)
    except ValueError as exc:
        raise CommandFailed(f"block {reference}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - HTTP, connection, registry errors
        raise CommandFailed(
            f"block {reference} could not be loaded from the Prefect API "
            f"({type(exc).__name__}: {exc}); is PREFECT_API_URL right and the "
            "server up?"
        ) from None
    if not isinstance(loaded, CheckpointStore):
        raise CommandFailed(
            f"block {reference} is a {type(loaded).__name__}, not a checkpoint store"
        )
    return loaded


def parse_id(value: str) -> uuid.UUID:
    """Parses a record id argument; a malformed one is a usage error."""
    try:
        return _codec.coerce_id(value)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc), param_hint="'ID'") from None


def parse_tags(values: list[str]) -> list[tuple[str, str]]:
    """Parses repeated ``--tag KEY=VALUE`` options."""
    tags = []
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(
                f"{value!r}: expected KEY=VALUE", param_hint="'--tag'"
            )
        tags.append((key, tag_value))
    return tags


def find_info(
    store: CheckpointStore, record_id: uuid.UUID
) -> CheckpointInfo | SessionInfo:
    """Returns the list entry of a checkpoint or session.

    Raises:
        CommandFailed: When the store holds neither with that id.
    """
    for infos in (store.list_checkpoints(), store.list_sessions()):
        for info in infos:
            if info.id == record_id:
                return info
    raise CommandFailed(f"no checkpoint or session {record_id} in this store")
