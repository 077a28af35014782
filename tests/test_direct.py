"""Direct-I/O writes of large blobs: exact bytes, checksums, fallback, cancel."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import uuid

import numpy as np
import pytest

from statecheckpoint import FileSystemStore, ModelCheckpoint
from statecheckpoint._codec import checksum, encode_checkpoint, new_hasher
from statecheckpoint.blocks import _direct, _fsutil
from statecheckpoint.managers import snapshot

SIZE = 2 * _direct.ALIGNED_CHUNK + 12_345  # several chunks, an unaligned tail


def _payload(size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)


@pytest.mark.parametrize("offset", [0, 1, 4096], ids=["aligned", "odd", "page"])
def test_direct_write_stores_exact_bytes_and_their_checksum(tmp_path, offset):
    data = _payload(SIZE + offset)
    view = memoryview(snapshot(memoryview(data), data))[offset:]
    hasher = new_hasher()

    _fsutil.write_file(tmp_path / "blob.bin", view, threading.Event(), hasher)

    assert (tmp_path / "blob.bin").read_bytes() == view.tobytes()
    assert hasher.hexdigest() == checksum(view)


def test_direct_write_falls_back_when_the_device_refuses_direct_io(
    tmp_path, monkeypatch
):
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd, data, offset):
        if _flags(fd) & _direct._O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    view = memoryview(_payload())

    _fsutil.write_file(tmp_path / "blob.bin", view, threading.Event())

    assert refused, "the direct path was not taken"
    assert (tmp_path / "blob.bin").read_bytes() == view.tobytes()


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_snapshot_of_a_numpy_array_is_aligned_for_direct_io():
    data = _payload(1 << 20)

    copy = snapshot(memoryview(data), data)

    assert _direct.address(copy) % _direct.ALIGN == 0
    assert bytes(copy) == data.tobytes()


class _CancelOnCheck(threading.Event):
    """Reports cancellation from its nth check on."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.checks, self.nth = 0, nth

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks >= self.nth


def test_cancel_during_a_direct_write_leaves_nothing(tmp_path):
    store = FileSystemStore(root=str(tmp_path / "store"))
    store.prepare()
    data = _payload()
    encoded = encode_checkpoint(ModelCheckpoint(epoch=1, weights=data), uuid.uuid4())
    with pytest.raises(_fsutil.Cancelled, match="cancelled while writing"):
        store.write_encoded(encoded, cancel=_CancelOnCheck(nth=3))

    assert store.list_checkpoints() == []
    assert list((store.active_root / ".staging").iterdir()) == []
