"""The pointer block: the last durable checkpoint of a named training run."""

from __future__ import annotations

import logging
import math
import re
import uuid
from datetime import UTC, datetime

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from pydantic import Field

from statecheckpoint.errors import InvalidInputError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def check_pointer_name(name: str) -> str:
    """Returns ``name`` when it can name a block document.

    Raises:
        InvalidInputError: Otherwise, saying what a name may hold.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"pointer name {name!r}: use lowercase letters, digits and dashes, "
            "starting with a letter or digit (e.g. 'gpt-small-run-1')"
        )
    return name


class CheckpointPointer(Block):
    """Remembers the last durable checkpoint of one training run.

    Managers update it only after the checkpoint it names is durable, so a resume
    flow that reads it always finds a loadable checkpoint.

    Example:
        ```python
        from statecheckpoint.blocks import CheckpointPointer

        pointer = CheckpointPointer.load("BLOCK_NAME")  # .read() gives None if absent
        print(pointer.checkpoint_id, pointer.epoch, pointer.loss)
        ```
    """

    _block_type_name = "Checkpoint Pointer"
    _description = "The id of the last durable checkpoint of a training run."
    _documentation_url = "https://pypi.org/project/statecheckpoint/"  # type: ignore[assignment]

    checkpoint_id: uuid.UUID | None = Field(
        default=None, description="Id of the last durable checkpoint."
    )
    epoch: int | None = Field(default=None, description="Its epoch.")
    loss: float | None = Field(default=None, description="Its loss.")
    updated_at: datetime | None = Field(
        default=None, description="When the pointer last moved (UTC)."
    )

    @classmethod
    def read(cls, name: str) -> CheckpointPointer | None:
        """Loads the pointer saved under ``name``, or None when there is none yet."""
        check_pointer_name(name)
        try:
            return cls.load(name, validate=True)  # type: ignore[return-value]
        except (ValueError, ObjectNotFound):
            return None

    @classmethod
    def advance(
        cls,
        name: str,
        checkpoint_id: uuid.UUID,
        *,
        epoch: int | None = None,
        loss: float | None = None,
    ) -> None:
        """Points ``name`` at a checkpoint; call only once it is durable."""
        pointer = cls(
            checkpoint_id=checkpoint_id,
            epoch=epoch,
            loss=loss if loss is None or math.isfinite(loss) else None,
            updated_at=datetime.now(UTC),
        )
        pointer.save(check_pointer_name(name), overwrite=True)
        logger.info("pointer %s now names checkpoint %s", name, checkpoint_id)
