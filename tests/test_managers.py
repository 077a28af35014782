"""Managers over a real Prefect server: sync and background saves, pointer, resume."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from prefect import flow

from statecheckpoint import (
    BackendUnavailableError,
    BackgroundSaveError,
    BackgroundSaveOptions,
    CheckpointManager,
    CheckpointPointer,
    FileSystemStore,
    InferenceSession,
    InvalidInputError,
    ModelCheckpoint,
    SessionManager,
)
from statecheckpoint.flows import resume_training
from statecheckpoint.managers import snapshot

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]


def _background(**kwargs) -> BackgroundSaveOptions:
    return BackgroundSaveOptions(enabled=True, **kwargs)


def _break(store: FileSystemStore) -> None:
    """Makes every later save fail: models/ becomes a file."""
    models = store.active_root / "models"
    for child in models.iterdir():
        raise AssertionError(f"expected an empty store, found {child}")
    models.rmdir()
    models.write_text("not a folder")


def _repair(store: FileSystemStore) -> None:
    models = store.active_root / "models"
    models.unlink()
    models.mkdir()


def test_sync_manager_saves_loads_lists_and_deletes(filesystem_store):
    with CheckpointManager(filesystem_store) as manager:
        checkpoint_id = manager.save(
            ModelCheckpoint(epoch=1, weights=b"w", tags={"a": "1"})
        )
        loaded = manager.load(str(checkpoint_id))
        listed = manager.list(("a", "1"))
        deleted = manager.delete(checkpoint_id)

    assert bytes(loaded.weights) == b"w" and loaded.epoch == 1
    assert [info.id for info in listed] == [checkpoint_id]
    assert deleted is True
    assert filesystem_store.list_checkpoints() == []


def test_session_manager_round_trip(filesystem_store):
    with SessionManager(filesystem_store) as sessions:
        session_id = sessions.save(
            InferenceSession(kv_cache=b"kv", token_history=[1, 2])
        )
        loaded = sessions.load(session_id)

    assert bytes(loaded.kv_cache) == b"kv" and loaded.token_history == [1, 2]


@pytest.mark.parametrize("kind", ["numpy", "bytearray", "memoryview"])
def test_buffer_mutated_after_background_save_does_not_change_what_is_stored(
    filesystem_store, kind
):
    array = np.arange(250_000, dtype=np.float32)
    buffer = {
        "numpy": array,
        "bytearray": bytearray(array.tobytes()),
        "memoryview": memoryview(bytearray(array.tobytes())),
    }[kind]
    expected = array.tobytes()

    with CheckpointManager(filesystem_store, background=_background()) as manager:
        checkpoint_id = manager.save(
            ModelCheckpoint(weights=buffer, optimizer_state=buffer)
        )
        np.frombuffer(buffer, dtype=np.uint8)[:] = 7

    loaded = filesystem_store.load_checkpoint(checkpoint_id)
    assert bytes(loaded.weights) == expected
    assert bytes(loaded.optimizer_state) == expected


def test_metadata_mutated_after_background_save_does_not_change_what_is_stored(
    filesystem_store,
):
    tags = {"step": "1"}
    checkpoint = ModelCheckpoint(epoch=1, weights=b"w", tags=tags)

    with CheckpointManager(filesystem_store, background=_background()) as manager:
        checkpoint_id = manager.save(checkpoint)
        checkpoint.tags["step"] = "2"
        checkpoint.epoch = 2

    loaded = filesystem_store.load_checkpoint(checkpoint_id)
    assert loaded.tags == {"step": "1"} and loaded.epoch == 1


def test_snapshot_copies_mutable_buffers_and_shares_bytes():
    data = b"immutable"
    mutable = bytearray(b"mutable")

    shared = snapshot(memoryview(data), data)
    copied = snapshot(memoryview(mutable), mutable)
    mutable[0:1] = b"X"

    assert shared.obj is data
    assert bytes(copied) == b"mutable"


def test_failed_background_save_reaches_on_error_and_flush_and_is_not_listed(
    filesystem_store,
):
    errors: list[tuple[BaseException, uuid.UUID]] = []
    options = _background(
        on_error=lambda exc, record_id: errors.append((exc, record_id))
    )
    manager = CheckpointManager(filesystem_store, background=options, retries=0)
    _break(filesystem_store)

    failed_id = manager.save(ModelCheckpoint(weights=b"w"))
    with pytest.raises(BackgroundSaveError, match=str(failed_id)) as caught:
        manager.flush()
    manager.close()

    assert [record_id for _, record_id in errors] == [failed_id]
    assert isinstance(errors[0][0], BackendUnavailableError)
    assert caught.value.failures[0][0] == failed_id
    with pytest.raises(BackendUnavailableError, match="cannot list"):
        filesystem_store.list_checkpoints()
    _repair(filesystem_store)
    assert filesystem_store.list_checkpoints() == []
    assert list((filesystem_store.active_root / ".staging").iterdir()) == []


def test_context_manager_exit_raises_for_failed_background_saves(filesystem_store):
    with (
        pytest.raises(BackgroundSaveError),
        CheckpointManager(
            filesystem_store, background=_background(), retries=0
        ) as manager,
    ):
        _break(filesystem_store)
        manager.save(ModelCheckpoint(weights=b"w"))


def test_save_waits_for_a_slot_when_the_queue_is_full(filesystem_store, monkeypatch):
    release = threading.Event()
    original = FileSystemStore._write_record

    def slow_write(self, *args):
        assert release.wait(60)
        return original(self, *args)

    monkeypatch.setattr(FileSystemStore, "_write_record", slow_write)
    manager = CheckpointManager(
        filesystem_store, background=_background(queue_capacity=1)
    )
    manager.save(ModelCheckpoint(epoch=1))
    second_done = threading.Event()
    saver = threading.Thread(
        target=lambda: (manager.save(ModelCheckpoint(epoch=2)), second_done.set())
    )

    saver.start()
    blocked = not second_done.wait(1.0)
    release.set()
    saver.join(60)
    manager.close()

    assert blocked, "the second save should wait while the only slot is taken"
    assert second_done.is_set()
    assert sorted(info.epoch for info in filesystem_store.list_checkpoints()) == [1, 2]


def test_background_saves_outlive_the_flow_that_queued_them(filesystem_store):
    manager = CheckpointManager(
        filesystem_store, background=_background(queue_capacity=8)
    )

    @flow
    def train_and_return_at_once() -> list[uuid.UUID]:
        return [
            manager.save(ModelCheckpoint(epoch=e, weights=b"w" * 1000))
            for e in range(5)
        ]

    ids = train_and_return_at_once()
    manager.close()

    assert {info.id for info in filesystem_store.list_checkpoints()} == set(ids)


def test_pointer_names_the_last_durable_checkpoint(filesystem_store):
    name = f"run-{uuid.uuid4().hex[:8]}"

    with CheckpointManager(
        filesystem_store, background=_background(), pointer_name=name
    ) as m:
        ids = [m.save(ModelCheckpoint(epoch=e, loss=1.0 / (e + 1))) for e in range(3)]

    pointer = CheckpointPointer.read(name)
    assert pointer.checkpoint_id == ids[-1]
    assert pointer.epoch == 2


def test_pointer_is_not_moved_by_a_failed_save(filesystem_store):
    name = f"run-{uuid.uuid4().hex[:8]}"
    with CheckpointManager(filesystem_store, pointer_name=name) as manager:
        good = manager.save(ModelCheckpoint(epoch=1))
    manager = CheckpointManager(
        filesystem_store, background=_background(), pointer_name=name, retries=0
    )
    (filesystem_store.active_root / "models").rename(
        filesystem_store.active_root / "moved"
    )
    (filesystem_store.active_root / "models").write_text("x")

    manager.save(ModelCheckpoint(epoch=2))
    with pytest.raises(BackgroundSaveError):
        manager.close()

    assert CheckpointPointer.read(name).checkpoint_id == good


def test_invalid_pointer_name_is_refused(filesystem_store):
    with pytest.raises(InvalidInputError, match="pointer name"):
        CheckpointManager(filesystem_store, pointer_name="Bad Name/..")


def test_resume_flow_starts_fresh_without_a_pointer(filesystem_store):
    seen = []

    result = resume_training(
        filesystem_store, f"fresh-{uuid.uuid4().hex[:8]}", lambda c: seen.append(c) or 0
    )

    assert seen == [None] and result == 0


def test_resume_flow_hands_the_pointed_checkpoint_to_training(filesystem_store):
    name = f"run-{uuid.uuid4().hex[:8]}"
    with CheckpointManager(filesystem_store, pointer_name=name) as manager:
        manager.save(ModelCheckpoint(epoch=1, weights=b"one"))
        last = manager.save(ModelCheckpoint(epoch=2, weights=b"two"))

    resumed = resume_training(
        filesystem_store, name, lambda c: (c.id, bytes(c.weights))
    )

    assert resumed == (last, b"two")


async def test_async_manager_twins(filesystem_store):
    async with CheckpointManager(filesystem_store, background=_background()) as manager:
        checkpoint_id = await manager.asave(ModelCheckpoint(weights=b"async"))
        await manager.aflush()
        loaded = await manager.aload(checkpoint_id)
        listed = await manager.alist()
        deleted = await manager.adelete(checkpoint_id)

    assert bytes(loaded.weights) == b"async"
    assert [info.id for info in listed] == [checkpoint_id]
    assert deleted is True
