"""Snapshot copies: threads, alignment, and the buffers a manager keeps."""

from __future__ import annotations

import numpy as np
import pytest

from statecheckpoint import (
    BackgroundSaveOptions,
    CheckpointManager,
    ModelCheckpoint,
    _copy,
)


@pytest.mark.parametrize("size", [1, 4096, 3 * _copy.MIN_PART + 17])
def test_copy_into_copies_every_byte(size):
    source = np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8)
    target = np.zeros_like(source)

    _copy.copy_into(target, source)

    assert np.array_equal(target, source)


def test_aligned_empty_starts_on_the_alignment():
    for size in (1, 12345, 1 << 20):
        buffer = _copy.aligned_empty(size)
        assert buffer.size == size and buffer.ctypes.data % _copy.ALIGN == 0


def test_pool_reuses_a_given_buffer_of_the_same_size_only():
    pool = _copy.BufferPool()
    first = pool.take(1000)
    pool.give([first])

    assert pool.take(999) is not first
    assert pool.take(1000) is first
    assert pool.take(1000) is not first  # taken once, gone from the pool


def test_pool_keeps_one_saves_worth_until_cleared():
    pool = _copy.BufferPool()
    old, new = pool.take(10), pool.take(10)
    pool.give([old])
    pool.give([new])

    assert pool.take(10) is new
    pool.give([new])
    pool.clear()
    assert pool.take(10) is not new


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_background_saves_reuse_the_last_snapshot_buffer(filesystem_store, monkeypatch):
    allocated = []
    real = _copy.aligned_empty
    monkeypatch.setattr(
        _copy, "aligned_empty", lambda size: allocated.append(size) or real(size)
    )
    weights = np.arange(1 << 20, dtype=np.float32)
    options = BackgroundSaveOptions(enabled=True)

    with CheckpointManager(filesystem_store, background=options) as manager:
        ids = []
        for epoch in range(3):
            weights[:] = epoch
            ids.append(manager.save(ModelCheckpoint(epoch=epoch, weights=weights)))
            manager.flush()

    assert allocated == [weights.nbytes]
    for epoch, checkpoint_id in enumerate(ids):
        loaded = filesystem_store.load_checkpoint(checkpoint_id)
        assert np.frombuffer(loaded.weights, np.float32)[0] == epoch
