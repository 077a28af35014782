"""Programs the reliability tests run in child processes, to kill or to race.

Usage: python -m tests.helpers.child MODE STORE_PICKLE [ARGS...]
"""

from __future__ import annotations

import pickle
import sys
import uuid


def _store(path: str):
    with open(path, "rb") as handle:
        cls, fields = pickle.load(handle)
    return cls(**fields)


def save_forever(store, pointer_name: str) -> None:
    """Saves checkpoints in the background until killed; prints 'ready' first."""
    import numpy as np

    from statecheckpoint import (
        BackgroundSaveOptions,
        CheckpointManager,
        ModelCheckpoint,
    )

    weights = np.zeros(512 * 1024, dtype=np.float32)
    options = BackgroundSaveOptions(enabled=True, queue_capacity=2)
    with CheckpointManager(store, background=options, pointer_name=pointer_name) as m:
        print("ready", flush=True)
        epoch = 0
        while True:
            weights[:] = epoch
            m.save(
                ModelCheckpoint(epoch=epoch, weights=weights, optimizer_state=weights)
            )
            epoch += 1


def overwrite(store, record_id: str, writer: str, times: str) -> None:
    """Overwrites one id again and again with content that names this writer."""
    from statecheckpoint import ModelCheckpoint

    for n in range(int(times)):
        payload = f"{writer}:{n};".encode() * 20_000
        store.save_checkpoint(
            ModelCheckpoint(epoch=n, weights=payload, tags={"writer": writer}),
            existing_id=uuid.UUID(record_id),
        )


def save_many(store, writer: str, times: str) -> None:
    """Saves distinct checkpoints and prints their ids, one a line."""
    from statecheckpoint import ModelCheckpoint

    for n in range(int(times)):
        print(store.save_checkpoint(ModelCheckpoint(epoch=n, tags={"writer": writer})))


def exit_with_pending(store) -> None:
    """Queues saves that cannot succeed (a file store whose models/ folder turns
    into a file) and exits without flushing."""
    from statecheckpoint import (
        BackgroundSaveOptions,
        CheckpointManager,
        ModelCheckpoint,
    )

    options = BackgroundSaveOptions(enabled=True, queue_capacity=4)
    manager = CheckpointManager(store, background=options, retries=0)
    manager.save(ModelCheckpoint(epoch=0, weights=b"kept"))
    manager.flush()
    models = store.active_root / "models"
    models.rename(store.active_root / "models-moved")
    models.write_text("not a folder")
    for epoch in (1, 2):
        print(manager.save(ModelCheckpoint(epoch=epoch, weights=b"x")), flush=True)


if __name__ == "__main__":
    mode, store_path, *rest = sys.argv[1:]
    {
        "save_forever": save_forever,
        "overwrite": overwrite,
        "save_many": save_many,
        "exit_with_pending": exit_with_pending,
    }[mode](_store(store_path), *rest)
