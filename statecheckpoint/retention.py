"""Retention: how many checkpoints of a training run are kept, and which.

A :class:`RetentionPolicy` keeps the last N checkpoints of a run, the best K by a
metric, or both (their union). The policy is applied after each save is durable
and the run's pointer has moved, over what the store holds for the run: nothing
is remembered in memory, so a resumed run (a new manager in a new process)
continues the same policy over the checkpoints already stored.

Never deleted: the newest checkpoint of the run, the one just saved, and any
checkpoint a :class:`~statecheckpoint.CheckpointPointer` block names. A run is
the value of the checkpoints' ``run`` tag; a manager with a ``pointer_name``
adds ``run=<pointer_name>`` to checkpoints that lack one.

Example:
    ```python
    from statecheckpoint import CheckpointManager, FileSystemStore, RetentionPolicy

    policy = RetentionPolicy(keep_last=3, keep_best=2)     # best by loss, lowest
    manager = CheckpointManager(
        FileSystemStore(root="./checkpoints"), pointer_name="gpt-small",
        retention=policy,
    )
    ```
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.blocks.pointer import CheckpointPointer
from statecheckpoint.errors import InvalidInputError, StateCheckpointError
from statecheckpoint.models import CheckpointInfo, ModelCheckpoint

__all__ = [
    "RUN_TAG",
    "RetentionPolicy",
    "apply_retention",
    "pointed_checkpoints",
    "with_run_tag",
]

logger = logging.getLogger(__name__)

RUN_TAG = "run"
"""The tag that names a checkpoint's training run."""

_PAGE = 200


@dataclass(frozen=True)
class RetentionPolicy:
    """Which checkpoints of a run survive; at least one of the limits is set.

    Attributes:
        keep_last: Keep the N newest checkpoints.
        keep_best: Keep the K best checkpoints by ``metric``.
        metric: ``"loss"``, or the name of a tag holding a number (such as
            ``"val_accuracy"``). A checkpoint without a finite value is never
            among the best.
        mode: ``"min"`` when lower is better (loss), ``"max"`` when higher is.
    """

    keep_last: int | None = None
    keep_best: int | None = None
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_best"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise InvalidInputError(
                    f"{name}={value!r}: must be an int of 1 or more"
                )
        if self.keep_last is None and self.keep_best is None:
            raise InvalidInputError("a retention policy needs keep_last or keep_best")
        if self.mode not in ("min", "max"):
            raise InvalidInputError(f"mode={self.mode!r}: use 'min' or 'max'")
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidInputError(f"metric={self.metric!r}: use 'loss' or a tag name")

    def score(self, info: CheckpointInfo) -> float | None:
        """Returns the checkpoint's metric value, or None when it has no number."""
        if self.metric == "loss":
            value = info.loss
        else:
            try:
                value = float(info.tags[self.metric])
            except (KeyError, ValueError):
                return None
        return value if value is not None and math.isfinite(value) else None

    def select(
        self, infos: Sequence[CheckpointInfo], protect: Collection[uuid.UUID] = ()
    ) -> list[CheckpointInfo]:
        """Returns the checkpoints of one run that the policy deletes.

        Args:
            infos: The run's checkpoints, as ``list_checkpoints`` returns them
                (newest first).
            protect: Ids never deleted (the one just saved, pointed-at ones).
        """
        newest = sorted(infos, key=lambda i: (i.created_at, str(i.id)), reverse=True)
        keep = set(protect)
        keep.update(info.id for info in newest[: max(self.keep_last or 0, 1)])
        if self.keep_best:
            scored = [(self.score(info), n, info) for n, info in enumerate(newest)]
            ranked = sorted(
                ((s, n, info) for s, n, info in scored if s is not None),
                # Best first; between equals the newer one.
                key=lambda item: (item[0] if self.mode == "min" else -item[0], item[1]),
            )
            keep.update(info.id for _, _, info in ranked[: self.keep_best])
        return [info for info in newest if info.id not in keep]


def with_run_tag(
    checkpoint: ModelCheckpoint, pointer_name: str | None
) -> ModelCheckpoint:
    """Returns the checkpoint tagged with its run, for retention to find it.

    A checkpoint that has a ``run`` tag is returned as it is; otherwise a copy
    (sharing its blobs) tagged ``run=<pointer_name>``.

    Raises:
        InvalidInputError: When there is neither a ``run`` tag nor a pointer.
    """
    if RUN_TAG in checkpoint.tags:
        return checkpoint
    if pointer_name is None:
        raise InvalidInputError(
            "retention applies per training run: tag the checkpoint with "
            "run=<name> or give the manager a pointer_name"
        )
    return checkpoint.model_copy(
        update={"tags": {**checkpoint.tags, RUN_TAG: pointer_name}}
    )


def pointed_checkpoints() -> set[uuid.UUID]:
    """Returns the ids every :class:`CheckpointPointer` block names.

    Raises:
        Exception: Whatever the Prefect client raises when the API is down.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    slug = CheckpointPointer.get_block_type_slug()
    ids: set[uuid.UUID] = set()
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            try:
                page = client.read_block_documents_by_type(
                    slug, offset=offset, limit=_PAGE, include_secrets=False
                )
            except ObjectNotFound:
                return ids  # no pointer was ever saved
            for document in page:
                value = (document.data or {}).get("checkpoint_id")
                if value:
                    ids.add(uuid.UUID(str(value)))
            if len(page) < _PAGE:
                return ids
            offset += _PAGE


def apply_retention(
    store: CheckpointStore,
    policy: RetentionPolicy,
    run: str,
    *,
    protect: Collection[uuid.UUID] = (),
) -> list[uuid.UUID]:
    """Deletes the checkpoints of a run that the policy does not keep.

    It never raises for the backend: when the run cannot be listed or the
    pointer blocks cannot be read, nothing is deleted and a WARNING says so; the
    next save prunes what this one left.

    Args:
        store: The store holding the run.
        policy: The policy.
        run: The run's name: the value of its checkpoints' ``run`` tag.
        protect: More ids to keep, such as the checkpoint just saved.

    Returns:
        The ids deleted.
    """
    try:
        infos = store.list_checkpoints((RUN_TAG, run))
    except StateCheckpointError as exc:
        logger.warning("retention of run %s skipped: cannot list it (%s)", run, exc)
        return []
    doomed = policy.select(infos, protect)
    if not doomed:
        return []
    try:
        pointed = pointed_checkpoints()
    except Exception as exc:  # noqa: BLE001 - unsure what is pointed at: keep all
        logger.warning(
            "retention of run %s skipped: cannot read the pointer blocks (%r)", run, exc
        )
        return []

    deleted = []
    for info in doomed:
        if info.id in pointed:
            continue
        try:
            if store.delete_checkpoint(info.id):
                deleted.append(info.id)
        except StateCheckpointError as exc:
            logger.warning("retention could not delete checkpoint %s: %s", info.id, exc)
    if deleted:
        logger.info(
            "pruned %d checkpoint(s) of run %s: %s",
            len(deleted),
            run,
            ", ".join(map(str, deleted)),
        )
    return deleted
