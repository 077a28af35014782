"""The resume-training flow: continue a run from its last durable checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow
from prefect.logging import get_run_logger

from statecheckpoint import tasks
from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.blocks.pointer import CheckpointPointer
from statecheckpoint.errors import NotFoundError
from statecheckpoint.models import ModelCheckpoint

T = TypeVar("T")


@flow(name="resume-training", validate_parameters=False)
def resume_training(
    store: CheckpointStore,
    pointer_name: str,
    train: Callable[[ModelCheckpoint | None], T],
) -> T:
    """Loads the checkpoint a pointer block names and hands it to the training code.

    Args:
        store: The store block the run saves to.
        pointer_name: The :class:`CheckpointPointer` block of the run.
        train: Called with the checkpoint, or None when the run has no pointer
            yet and starts fresh; its result is the flow's result.

    Raises:
        NotFoundError: When the pointer names a checkpoint the store lacks.

    Example:
        ```python
        from statecheckpoint import FileSystemStore
        from statecheckpoint.flows import resume_training

        def train(checkpoint):
            start = 0 if checkpoint is None else checkpoint.epoch + 1
            ...

        resume_training(FileSystemStore(root="./ckpt"), "my-run", train)
        ```
    """
    log = get_run_logger()
    pointer = CheckpointPointer.read(pointer_name)
    checkpoint: ModelCheckpoint | None = None
    if pointer is None or pointer.checkpoint_id is None:
        log.info("pointer %s has no checkpoint yet: starting fresh", pointer_name)
    else:
        checkpoint = tasks.load_checkpoint(store, pointer.checkpoint_id)
        if checkpoint is None:
            raise NotFoundError(
                f"pointer {pointer_name} names checkpoint {pointer.checkpoint_id}, "
                "which the store does not hold; was it deleted?"
            )
        log.info(
            "resuming from checkpoint %s (epoch %s)", checkpoint.id, checkpoint.epoch
        )
    result: Any = train(checkpoint)
    return result
