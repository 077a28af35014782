"""The measured steps of ``benchmarks.filesystem``, each run in a fresh process.

Every scenario builds its state first, then measures one operation inside a
:class:`~benchmarks._common.MemoryProbe`, so that its peak memory is its own.
Run as ``python -m benchmarks._fs_worker SCENARIO JSON_PARAMS`` by the parent.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import MIB, MemoryProbe, worker_main

BLOCK = 64 * MIB
"""Block size of the raw baselines' reads and writes."""

MATRIX = 256
"""Side of the square float32 matrices a training step multiplies."""

MATMULS = 8
"""Matrix products per training step."""

UPDATE = MIB // 4
"""Elements of weights and optimizer state a training step changes."""

ALIGN = 4096


def make_state(
    weights_mib: float, optimizer_mib: float, aligned: bool = False
) -> tuple[Any, Any]:
    """Returns float32 weights and optimizer state filled with varied bytes.

    The arrays are filled in place (no temporary copy), so the resident set is
    at its high-water mark when this returns. ``aligned`` starts them on a
    4 KiB boundary, as direct I/O needs.
    """
    arrays = []
    seed = np.random.default_rng(7).integers(0, 2**32, MIB // 4, dtype=np.uint32)
    for index, mib in enumerate((weights_mib, optimizer_mib)):
        size = int(mib * MIB) // 4
        if aligned:
            raw = np.empty(size * 4 + ALIGN, dtype=np.uint8)
            offset = -raw.ctypes.data % ALIGN
            array = raw[offset : offset + size * 4].view(np.float32)
        else:
            array = np.empty(size, dtype=np.float32)
        bits = array.view(np.uint32)
        for start in range(0, bits.size, seed.size):
            part = bits[start : start + seed.size]
            salt = np.uint32((start * 2654435761 + index) % 2**32)
            np.bitwise_xor(seed[: part.size], salt, out=part)
        arrays.append(array)
    return arrays[0], arrays[1]


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _timed(fn: Any) -> tuple[float, float, Any]:
    os.sync()
    with MemoryProbe() as probe:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, probe.growth_mib, result


def _measure(run: Any, undo: Any, before: Any = None) -> tuple[float, float, Any]:
    """Runs once untimed and undoes it, then times a second run.

    The first run pays what any process pays once: first calls, and memory the
    virtual machine's host has taken back (a balloon's free-page reporting makes
    first touches of fresh memory cost several times a copy here). Baselines and
    ours are measured alike. The memory peak covers both runs.
    """
    os.sync()
    with MemoryProbe() as probe:
        undo(run())
        if before is not None:
            before()
        os.sync()
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    return seconds, probe.growth_mib, result


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.sync()  # the discard of the freed blocks is not charged to the next step


# -- saves --------------------------------------------------------------------


def write_limit(p: dict[str, Any]) -> dict[str, Any]:
    """The same bytes written to one file in 64 MiB blocks, then fsync."""
    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"])
    path = Path(p["dir"]) / "limit.bin"

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for array in (weights, optimizer):
                view = memoryview(array).cast("B")
                for start in range(0, len(view), BLOCK):
                    _write_all(fd, view[start : start + BLOCK])
            os.fsync(fd)
        finally:
            os.close(fd)

    seconds, peak, _ = _measure(run, lambda _: _remove(path))
    _remove(path)
    return {"seconds": seconds, "peak_mib": peak}


def write_limit_direct(p: dict[str, Any]) -> dict[str, Any]:
    """The same bytes, 4 KiB-aligned, written with O_DIRECT in 64 MiB blocks."""
    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"], True)
    path = Path(p["dir"]) / "limit-direct.bin"

    def run() -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT
        fd = os.open(path, flags, 0o644)
        try:
            offset = 0
            for array in (weights, optimizer):
                view = memoryview(array).cast("B")
                for start in range(0, len(view), BLOCK):
                    offset += os.pwrite(fd, view[start : start + BLOCK], offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    seconds, peak, _ = _measure(run, lambda _: _remove(path))
    _remove(path)
    return {"seconds": seconds, "peak_mib": peak}


def _checkpoint(weights: Any, optimizer: Any, epoch: int = 1) -> Any:
    from statecheckpoint import ModelCheckpoint

    return ModelCheckpoint(
        epoch=epoch, loss=0.5, weights=weights, optimizer_state=optimizer
    )


def save_ours(p: dict[str, Any]) -> dict[str, Any]:
    """``FileSystemStore.save_checkpoint``, called directly."""
    from statecheckpoint import FileSystemStore

    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"])
    store = FileSystemStore(root=p["root"])
    store.prepare()
    checkpoint = _checkpoint(weights, optimizer)

    def undo(record_id: Any) -> None:
        store.delete_checkpoint(record_id)
        os.sync()

    seconds, peak, record_id = _measure(lambda: store.save_checkpoint(checkpoint), undo)
    if not p.get("keep"):
        store.delete_checkpoint(record_id)
        os.sync()
    return {"seconds": seconds, "peak_mib": peak, "id": str(record_id)}


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_safetensors(p: dict[str, Any]) -> dict[str, Any]:
    """``safetensors.numpy.save_file`` of the same tensors, then fsync."""
    from safetensors.numpy import save_file

    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"])
    path = Path(p["dir"]) / "state.safetensors"
    tensors = {"weights": weights, "optimizer_state": optimizer}
    seconds, peak, _ = _measure(
        lambda: (save_file(tensors, path), _fsync_path(path)), lambda _: _remove(path)
    )
    _remove(path)
    return {"seconds": seconds, "peak_mib": peak}


def save_torch(p: dict[str, Any]) -> dict[str, Any]:
    """``torch.save`` of equal tensors (sharing the numpy memory), then fsync."""
    import torch

    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"])
    path = Path(p["dir"]) / "state.pt"
    tensors = {
        "weights": torch.from_numpy(weights),
        "optimizer_state": torch.from_numpy(optimizer),
    }
    seconds, peak, _ = _measure(
        lambda: (torch.save(tensors, path), _fsync_path(path)), lambda _: _remove(path)
    )
    _remove(path)
    return {"seconds": seconds, "peak_mib": peak}


# -- loads --------------------------------------------------------------------


def read_raw(p: dict[str, Any]) -> dict[str, Any]:
    """Reads the files into fresh numpy buffers with 64 MiB reads."""

    def run() -> list[Any]:
        buffers = []
        for name in p["files"]:
            fd = os.open(name, os.O_RDONLY)
            try:
                buffer = np.empty(os.fstat(fd).st_size, dtype=np.uint8)
                view = memoryview(buffer)
                pos = 0
                while pos < len(view):
                    read = os.readv(fd, [view[pos : pos + BLOCK]])
                    if read == 0:
                        break
                    pos += read
                buffers.append(buffer)
            finally:
                os.close(fd)
        return buffers

    cache: list[str] = []
    seconds, peak, buffers = _measure(run, _drop, lambda: cache.append(_evict(p)))
    size = sum(buffer.size for buffer in buffers)
    return {"seconds": seconds, "peak_mib": peak, "bytes": size, "cache": cache[0]}


def _drop(_: Any) -> None:
    """Lets the warm-up's result go (the caller holds no other reference)."""


def _evict(p: dict[str, Any]) -> str:
    from benchmarks._cache import evict

    return evict(p["files"], p["drop_caches"])


def load_ours(p: dict[str, Any]) -> dict[str, Any]:
    """``FileSystemStore.load_checkpoint``, with or without verification."""
    from statecheckpoint import FileSystemStore

    store = FileSystemStore(root=p["root"])
    store.prepare()
    cache: list[str] = []
    seconds, peak, loaded = _measure(
        lambda: store.load_checkpoint(p["id"], verify=p["verify"]),
        _drop,
        lambda: cache.append(_evict(p)),
    )
    size = len(loaded.weights) + len(loaded.optimizer_state)
    return {"seconds": seconds, "peak_mib": peak, "bytes": size, "cache": cache[0]}


# -- background saves ---------------------------------------------------------


def copy_state(p: dict[str, Any]) -> dict[str, Any]:
    """One ``numpy.copy`` of the state (both arrays)."""
    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"])
    seconds, peak, copies = _measure(lambda: (weights.copy(), optimizer.copy()), _drop)
    return {
        "seconds": seconds,
        "peak_mib": peak,
        "bytes": sum(c.nbytes for c in copies),
    }


def _manager(root: str, background: bool) -> Any:
    from statecheckpoint import (
        BackgroundSaveOptions,
        CheckpointManager,
        FileSystemStore,
    )

    options = BackgroundSaveOptions(enabled=background)
    manager = CheckpointManager(FileSystemStore(root=root), background=options)
    # The first task run opens the API client and starts the task runner; a
    # training job pays that once, before its loop.
    manager.save(_checkpoint(b"w", b"o", epoch=0))
    manager.flush()
    return manager


def background_save(p: dict[str, Any]) -> dict[str, Any]:
    """How long ``save()`` blocks in background mode, and the save's memory."""
    weights, optimizer = make_state(p["weights_mib"], p["optimizer_mib"])
    if p["immutable"]:
        weights, optimizer = weights.tobytes(), optimizer.tobytes()
    manager = _manager(p["root"], background=True)
    checkpoint = _checkpoint(weights, optimizer)
    os.sync()
    # The probe spans both saves: the first allocates the snapshot buffer that
    # the manager keeps, the second (the one timed) reuses it.
    with MemoryProbe() as probe:
        start = time.perf_counter()
        manager.save(checkpoint)
        first = time.perf_counter() - start
        manager.flush()
        for info in manager.list():
            manager.delete(info.id)
        os.sync()
        start = time.perf_counter()
        manager.save(checkpoint)
        blocked = time.perf_counter() - start
        manager.flush()
        total = time.perf_counter() - start
    manager.close()
    for info in manager.list():
        manager.delete(info.id)
    os.sync()
    return {
        "blocked": blocked,
        "seconds": total,
        "peak_mib": probe.growth_mib,
        "first_blocked": first,
    }


# -- training loop ------------------------------------------------------------


def train_step(step: int, work: Any, scratch: Any, state: tuple[Any, Any]) -> None:
    """One step of fixed cost: matrix products, then a change to the state.

    Like a training step it is compute-bound; run with one BLAS thread it keeps
    one core busy, which leaves the other to a background save.
    """
    product = work
    for _ in range(MATMULS):
        product = np.tanh(product @ scratch)
    with np.errstate(all="ignore"):  # the state's bits are arbitrary floats
        for array in state:
            start = (step * UPDATE) % (array.size - UPDATE)
            array[start : start + UPDATE] += product[0, 0]


def work_arrays() -> tuple[Any, Any]:
    """Returns the matrices a training step multiplies."""
    rng = np.random.default_rng(11)
    shape = (MATRIX, MATRIX)
    return (
        rng.standard_normal(shape, dtype=np.float32),
        rng.standard_normal(shape, dtype=np.float32) / np.sqrt(MATRIX),
    )


def calibrate(p: dict[str, Any]) -> dict[str, Any]:
    """Times one training step, and a sync save of the state through a manager.

    Returns the median of ``steps`` timed steps and of two timed saves (after
    an untimed one), which is what a checkpoint costs the loop in sync mode.
    """
    state = make_state(p["weights_mib"], p["optimizer_mib"])
    work, scratch = work_arrays()
    steps = []
    for step in range(p["steps"]):
        start = time.perf_counter()
        train_step(step, work, scratch, state)
        steps.append(time.perf_counter() - start)
    manager = _manager(p["root"], background=False)
    saves = []
    for epoch in range(3):
        start = time.perf_counter()
        manager.save(_checkpoint(*state, epoch=epoch))
        saves.append(time.perf_counter() - start)
    for info in manager.list():
        manager.delete(info.id)
    manager.close()
    os.sync()
    return {
        "step_seconds": statistics.median(steps[2:] or steps),
        "save_seconds": statistics.median(saves[1:]),
    }


def train(p: dict[str, Any]) -> dict[str, Any]:
    """Alternates intervals of ``every`` steps with and without a checkpoint.

    A checkpointed interval is a ``save`` followed by the steps; when a
    background save is still running at its end, waiting for it is counted
    too. The intervals alternate in the order plain, checkpointed,
    checkpointed, plain, ... so that the machine's drift, which moved whole
    loops with no checkpoints by 12-16 % between runs here, cancels between
    the two sums.
    """
    state = make_state(p["weights_mib"], p["optimizer_mib"])
    work, scratch = work_arrays()
    manager = _manager(p["root"], p["mode"] == "background")
    # A job's first checkpoint also allocates the snapshot buffer that later
    # ones reuse (see background_save's first_blocked); the loop measures the
    # steady state, the same way in both modes.
    manager.save(_checkpoint(*state, epoch=0))
    manager.flush()
    os.sync()

    step, plain, checkpointed, blocked = 0, [], [], []
    for pair in range(p["pairs"]):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for saving in order:
            start = time.perf_counter()
            if saving:
                manager.save(_checkpoint(*state, epoch=step))
                blocked.append(time.perf_counter() - start)
            for _ in range(p["every"]):
                step += 1
                train_step(step, work, scratch, state)
            if saving:
                manager.flush()
            (checkpointed if saving else plain).append(time.perf_counter() - start)
    for info in manager.list():
        manager.delete(info.id)
    manager.close()
    os.sync()
    return {"plain": plain, "checkpointed": checkpointed, "blocked": blocked}


# -- Prefect ------------------------------------------------------------------


def prefect_overhead(p: dict[str, Any]) -> dict[str, Any]:
    """A small save through the Prefect task (sync manager) and directly."""
    from statecheckpoint import CheckpointManager, FileSystemStore

    store = FileSystemStore(root=p["root"])
    blob = os.urandom(p["size_kib"] * 1024)
    checkpoint = _checkpoint(blob, blob)
    direct, task = [], []
    with CheckpointManager(store) as manager:
        for _ in range(3):
            store.save_checkpoint(checkpoint)
            manager.save(checkpoint)
        for _ in range(p["rounds"]):
            start = time.perf_counter()
            store.save_checkpoint(checkpoint)
            direct.append(time.perf_counter() - start)
            start = time.perf_counter()
            manager.save(checkpoint)
            task.append(time.perf_counter() - start)
    return {"direct": direct, "task": task}


SCENARIOS = {
    "write_limit": write_limit,
    "write_limit_direct": write_limit_direct,
    "save_ours": save_ours,
    "save_safetensors": save_safetensors,
    "save_torch": save_torch,
    "read_raw": read_raw,
    "load_ours": load_ours,
    "copy_state": copy_state,
    "background_save": background_save,
    "calibrate": calibrate,
    "train": train,
    "prefect_overhead": prefect_overhead,
}

if __name__ == "__main__":
    sys.exit(worker_main(SCENARIOS))
