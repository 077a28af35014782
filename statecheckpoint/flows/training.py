"""The scheduled training flow: a toy trainer that resumes where the last run ended.

Each run reads the pointer block, loads the checkpoint it names (through
:func:`~statecheckpoint.flows.resume_training`), trains a few more epochs and
saves a checkpoint per epoch through a :class:`~statecheckpoint.CheckpointManager`
that moves the pointer once each save is durable. The model is a line fitted to
fixed points by gradient descent with momentum, in pure Python, so the flow runs
anywhere Prefect runs; swap :func:`_fit_epoch` for real training code.

``deployments/prefect.yaml`` deploys :func:`train_toy` on a cron schedule.
"""

from __future__ import annotations

import math
import struct
from functools import partial
from typing import Any

from prefect import flow
from prefect.blocks.core import Block
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.errors import InvalidInputError
from statecheckpoint.flows.resume import resume_training
from statecheckpoint.managers import CheckpointManager
from statecheckpoint.models import HyperParameters, ModelCheckpoint

__all__ = ["load_store", "train_toy"]

_PARAMS = struct.Struct("<2d")
_POINTS = [(x / 8.0, 3.0 * (x / 8.0) - 2.0) for x in range(-8, 9)]
"""Points on y = 3x - 2 that the toy model fits."""


def load_store(reference: str) -> CheckpointStore:
    """Loads a store block saved as ``block-type-slug/name``.

    Raises:
        InvalidInputError: When the reference is malformed or names a block
            that is not a checkpoint store.
    """
    if reference.count("/") != 1:
        raise InvalidInputError(
            f"store block {reference!r}: expected 'block-type-slug/name', e.g. "
            "'file-system-checkpoint-store/prod'"
        )
    block = Block.load(reference)
    if not isinstance(block, CheckpointStore):
        raise InvalidInputError(
            f"block {reference!r} is a {type(block).__name__}, not a checkpoint store"
        )
    return block


def _fit_epoch(
    params: tuple[float, float], velocity: tuple[float, float], lr: float, mu: float
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """One full-batch step of gradient descent with momentum; returns the loss."""
    (w, b), (vw, vb) = params, velocity
    n = len(_POINTS)
    grad_w = sum(2 * (w * x + b - y) * x for x, y in _POINTS) / n
    grad_b = sum(2 * (w * x + b - y) for x, y in _POINTS) / n
    vw, vb = mu * vw - lr * grad_w, mu * vb - lr * grad_b
    w, b = w + vw, b + vb
    loss = sum((w * x + b - y) ** 2 for x, y in _POINTS) / n
    return (w, b), (vw, vb), loss


def _train(
    checkpoint: ModelCheckpoint | None,
    *,
    store: CheckpointStore,
    pointer_name: str,
    epochs: int,
    learning_rate: float,
    momentum: float,
    run_id: str,
) -> dict[str, Any]:
    log = get_run_logger()

    if checkpoint is None:
        params, velocity, start = (0.0, 0.0), (0.0, 0.0), 1
        resumed_from = None
    else:
        params = _PARAMS.unpack(bytes(checkpoint.weights))
        velocity = _PARAMS.unpack(bytes(checkpoint.optimizer_state))
        start = checkpoint.epoch + 1
        resumed_from = str(checkpoint.id)

    hyper = HyperParameters(learning_rate=learning_rate, momentum=momentum)
    tags = {"run": pointer_name, "flow_run": run_id}
    if resumed_from is not None:
        tags["resumed_from"] = resumed_from
    last_id, loss = None, math.nan
    with CheckpointManager(store, pointer_name=pointer_name) as manager:
        for epoch in range(start, start + epochs):
            params, velocity, loss = _fit_epoch(
                params, velocity, learning_rate, momentum
            )
            last_id = manager.save(
                ModelCheckpoint(
                    epoch=epoch,
                    loss=loss,
                    weights=_PARAMS.pack(*params),
                    optimizer_state=_PARAMS.pack(*velocity),
                    hyperparameters=hyper,
                    tags=tags,
                )
            )
            log.info("epoch %d: loss %.6f, checkpoint %s", epoch, loss, last_id)

    return {
        "resumed_from": resumed_from,
        "first_epoch": start,
        "last_epoch": start + epochs - 1,
        "loss": loss,
        "checkpoint_id": str(last_id),
    }


@flow(name="toy-training")
def train_toy(
    store_block: str = "file-system-checkpoint-store/toy-training",
    pointer_name: str = "toy-run",
    epochs_per_run: int = 2,
    learning_rate: float = 0.2,
    momentum: float = 0.5,
) -> dict[str, Any]:
    """Trains the toy model a few epochs, resuming from the run's pointer block.

    Args:
        store_block: The store block, as ``block-type-slug/name``.
        pointer_name: The :class:`~statecheckpoint.CheckpointPointer` block of
            the run; created by the first save.
        epochs_per_run: Epochs to train in this run, one checkpoint each.
        learning_rate: Step size of gradient descent.
        momentum: Momentum of gradient descent (kept in the optimizer state).

    Returns:
        ``resumed_from`` (the checkpoint id loaded, or None on a fresh start),
        ``first_epoch``, ``last_epoch``, ``loss`` and ``checkpoint_id`` (the
        last one saved).

    Example:
        ```python
        from statecheckpoint import FileSystemStore
        from statecheckpoint.flows.training import train_toy

        FileSystemStore(root="/tmp/toy-ckpt").save("toy-training", overwrite=True)
        first = train_toy()   # epochs 1-2
        second = train_toy()  # epochs 3-4, from the checkpoint of epoch 2
        assert second["resumed_from"] == first["checkpoint_id"]
        ```
    """
    if epochs_per_run < 1:
        raise InvalidInputError(f"epochs_per_run {epochs_per_run}: must be at least 1")
    store = load_store(store_block)
    context = FlowRunContext.get()
    train = partial(
        _train,
        store=store,
        pointer_name=pointer_name,
        epochs=epochs_per_run,
        learning_rate=learning_rate,
        momentum=momentum,
        run_id=str(context.flow_run.id) if context and context.flow_run else "",
    )
    return resume_training(store, pointer_name, train)
