"""The file-system store, side by side with what it competes with, in one run.

Usage::

    python -m benchmarks filesystem --size-mb 1024

On the same bytes (N MiB of weights and 2N MiB of optimizer state, float32) it
measures:

1. a save against the disk's limit: the same bytes written to one file in
   64 MiB blocks, then fsync;
2. the same save against ``safetensors.numpy.save_file`` and, when torch is
   installed, ``torch.save`` of equal tensors, each followed by fsync;
3. a cold load against reading the same files with 64 MiB reads into fresh
   numpy buffers, and a load with checksum verification on. The page cache is
   dropped through ``/proc/sys/vm/drop_caches`` where allowed, else the files
   are evicted with ``posix_fadvise(DONTNEED)``; residency is checked with
   ``mincore`` and the line says "warm" when the files stayed cached;
4. how long a background ``save()`` blocks the caller: for the numpy state
   against one ``numpy.copy`` of it, and for immutable ``bytes`` in ms;
5. a training loop of fixed steps checkpointing every K steps: its wall-time
   overhead over the same loop without checkpoints, in sync and background
   mode. K is chosen from the measured save time so that sync checkpoints
   cost about ``--sync-share`` of the loop, the regime the target is set in;
6. Prefect's overhead per save: a small save through the Prefect task (a sync
   ``CheckpointManager``) against the store called directly;
7. the peak resident memory of each, as growth over the process's baseline.

Every timed operation runs in a fresh process (``benchmarks._fs_worker``), in
rotating order each round; the best round of each side counts. Prints a table,
then one JSON object per comparison per line (see ``benchmarks._common``), and
writes a PNG of save and load throughput against the limits plus the raw
numbers to ``--results``. Exits with 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import mmap
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import (
    GB,
    MIB,
    Comparison,
    bounded,
    faster,
    format_markdown,
    report,
    run_worker,
    throughput_plot,
)

WORKER = "benchmarks._fs_worker"
ONE_THREAD = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_START = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0 when every target is met, else 1."""
    args = _parser().parse_args(argv)
    results = Path(args.results)
    data = Path(args.dir) if args.dir else results / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    run = _Run(args, data, results / f"filesystem-{args.size_mb}mib-workers.log")
    try:
        raw = run.measure()
    finally:
        shutil.rmtree(data, ignore_errors=True)

    comparisons = compare(raw, args)
    raw["machine"] = machine()
    stem = results / f"filesystem-{args.size_mb}mib"
    stem.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    stem.with_suffix(".md").write_text(format_markdown(comparisons) + "\n")
    plot(raw, Path(args.plot) if args.plot else stem.with_suffix(".png"))
    ok = report(comparisons)
    _say(f"done in {time.perf_counter() - _START:.0f} s on {raw['machine']}")
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks filesystem")
    parser.add_argument("--size-mb", type=int, default=1024, help="weights, MiB (N)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side")
    parser.add_argument("--results", default="bench-results", help="output folder")
    parser.add_argument("--dir", help="scratch folder (default RESULTS/data)")
    parser.add_argument("--plot", help="PNG path (default RESULTS/filesystem-N.png)")
    parser.add_argument("--api-url", help="Prefect API to use; default: a local one")
    parser.add_argument("--checkpoints", type=int, default=4, help="in the loop")
    parser.add_argument("--sync-share", type=float, default=0.35, help="of the loop")
    parser.add_argument("--prefect-rounds", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true", help="skip torch.save")
    parser.add_argument(
        "--evict",
        choices=("drop_caches", "fadvise"),
        default="drop_caches",
        help="before a cold load, drop the whole page cache (where allowed) or "
        "evict only the checkpoint's files",
    )
    return parser


def _say(message: str) -> None:
    print(f"[{time.perf_counter() - _START:5.0f} s] {message}", file=sys.stderr)


class _Run:
    """Runs the workers in order and keeps their raw results."""

    def __init__(self, args: argparse.Namespace, data: Path, log: Path) -> None:
        self.args = args
        self.data = data
        self.root = str(data / "store")
        self.log = log
        self.env: dict[str, str] = {}
        self.state = {"weights_mib": args.size_mb, "optimizer_mib": 2 * args.size_mb}
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def worker(self, scenario: str, **params: Any) -> dict[str, Any]:
        return run_worker(WORKER, scenario, params, env=self.env, log=self.log)

    def measure(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"size_mb": self.args.size_mb, "rounds": self.args.rounds}
        raw["save"], record_id = self.saves()
        raw["load"] = self.loads(record_id)
        with _prefect_api(self.args.api_url) as env:
            self.env = env
            raw["background"] = self.background()
            raw["prefect"] = self.worker(
                "prefect_overhead",
                root=self.root,
                rounds=self.args.prefect_rounds,
                size_kib=64,
            )
            raw["train"] = self.training(min(raw["save"]["ours"]["seconds"]))
        return raw

    def saves(self) -> tuple[dict[str, Any], str]:
        sides = ["limit", "ours", "safetensors"]
        if hasattr(os, "O_DIRECT"):
            sides.insert(1, "direct")
        if not self.args.no_torch and importlib.util.find_spec("torch") is not None:
            sides.append("torch")
        scenario = {
            "limit": "write_limit",
            "direct": "write_limit_direct",
            "ours": "save_ours",
            "safetensors": "save_safetensors",
            "torch": "save_torch",
        }
        found: dict[str, dict[str, list[float]]] = {}
        record_id = ""
        for index in range(self.args.rounds):
            last = index == self.args.rounds - 1
            for side in _rotated(sides, index):
                result = self.worker(
                    scenario[side],
                    dir=str(self.data),
                    root=self.root,
                    keep=last,
                    **self.state,
                )
                _append(found, side, result)
                if side == "ours":
                    record_id = result["id"]
                _say(f"save round {index + 1}: {side} {result['seconds']:.2f} s")
        return found, record_id

    def loads(self, record_id: str) -> dict[str, Any]:
        folder = Path(self.root) / "models" / record_id
        files = [str(folder / "weights.bin"), str(folder / "optimizer.bin")]
        found: dict[str, Any] = {}
        drop = self.args.evict == "drop_caches"
        for index in range(self.args.rounds):
            for side in _rotated(["raw", "ours", "verified"], index):
                if side == "raw":
                    result = self.worker("read_raw", files=files, drop_caches=drop)
                else:
                    result = self.worker(
                        "load_ours",
                        root=self.root,
                        id=record_id,
                        verify=side == "verified",
                        files=files,
                        drop_caches=drop,
                    )
                _append(found, side, result)
                _say(f"load round {index + 1}: {side} {result['seconds']:.2f} s")
        modes = {
            mode
            for side in ("raw", "ours", "verified")
            for mode in found[side]["cache"]
        }
        found["cache"] = "warm" if "warm" in modes else modes.pop()
        return found

    def background(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for index in range(self.args.rounds):
            for side in _rotated(["mutable", "copy"], index):
                if side == "copy":
                    result = self.worker("copy_state", **self.state)
                else:
                    result = self.worker(
                        "background_save", root=self.root, immutable=False, **self.state
                    )
                _append(found, side, result)
                _say(f"background round {index + 1}: {side} {result['seconds']:.2f} s")
        found["bytes"] = {}
        for label, scale in (("1 MiB", 1 / (3 * self.args.size_mb)), ("full", 1.0)):
            result = self.worker(
                "background_save",
                root=self.root,
                immutable=True,
                weights_mib=self.args.size_mb * scale,
                optimizer_mib=2 * self.args.size_mb * scale,
            )
            found["bytes"][label] = result
            _say(f"background bytes {label}: blocked {result['blocked'] * 1e3:.1f} ms")
        return found

    def training(self, save_seconds: float) -> dict[str, Any]:
        # One BLAS thread: the loop keeps one core busy, as a training step that
        # leaves a core to the background save (see _fs_worker.train_step).
        self.env = {**self.env, **ONE_THREAD}
        step = self.worker("step_seconds", steps=40, **self.state)["seconds"]
        saves, share = self.args.checkpoints, self.args.sync_share
        interval = saves * save_seconds / ((saves + 1) * share)
        every = max(1, round(interval / step))
        found: dict[str, Any] = {"step_seconds": step, "every": every}
        found["checkpoints"] = saves
        _say(f"training: {step * 1e3:.1f} ms a step, a checkpoint every {every}")
        for mode in ("none", "sync", "background"):
            result = self.worker(
                "train",
                root=self.root,
                mode=mode,
                every=every,
                checkpoints=saves,
                **self.state,
            )
            found[mode] = result
            _say(f"training {mode}: {result['seconds']:.1f} s")
        return found


def _rotated(sides: list[str], index: int) -> list[str]:
    shift = index % len(sides)
    return sides[shift:] + sides[:shift]


def _append(found: dict[str, Any], side: str, result: dict[str, Any]) -> None:
    entry = found.setdefault(side, {})
    for key, value in result.items():
        entry.setdefault(key, []).append(value)


@contextlib.contextmanager
def _prefect_api(url: str | None) -> Iterator[dict[str, str]]:
    """Yields the environment that points workers at a Prefect API.

    Without a URL a temporary local server runs for the duration.
    """
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    if url:
        yield {**env, "PREFECT_API_URL": url}
        return
    os.environ.update(env)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    _say("starting a local Prefect server")
    with prefect_test_harness(server_startup_timeout=180):
        yield {**env, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


# -- page cache -----------------------------------------------------------------


def evict(paths: list[str], drop_caches: bool = True) -> str:
    """Drops the files from the page cache; says how ("warm" when it could not).

    With ``drop_caches`` the whole page cache is dropped where the machine
    allows it; otherwise, or where it does not, only these files are evicted.
    """
    os.sync()
    how = "cold (drop_caches)"
    try:
        if not drop_caches:
            raise PermissionError("not asked to")
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("1")
    except OSError:
        how = "cold (posix_fadvise DONTNEED)"
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    cached = max((resident_fraction(path) for path in paths), default=0.0)
    return how if cached < 0.05 else "warm"


def resident_fraction(path: str) -> float:
    """Returns the fraction of a file's pages in the page cache (``mincore``)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with (
        open(path, "rb") as file,
        mmap.mmap(file.fileno(), size, mmap.MAP_PRIVATE) as m,
    ):
        anchor = ctypes.c_char.from_buffer(m)
        failed = libc.mincore(
            ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vector
        )
        del anchor
    if failed:
        return 1.0
    return sum(bytes(vector)) / pages


# -- results --------------------------------------------------------------------


def _best(found: dict[str, Any], side: str, key: str = "seconds") -> float:
    return float(min(found[side][key]))


def _peak(found: dict[str, Any], side: str) -> float:
    return float(max(found[side]["peak_mib"]))


def compare(raw: dict[str, Any], args: argparse.Namespace) -> list[Comparison]:
    """Turns the raw measurements into the comparisons and their targets."""
    size_mib = 3 * args.size_mb
    gbps = size_mib * MIB / GB
    save, load, bg = raw["save"], raw["load"], raw["background"]
    rounds = {"rounds": args.rounds, "size_mib": size_mib}
    ours = _best(save, "ours")

    def rates(value: float, baseline: float) -> dict[str, float]:
        return {"value_gbps": gbps / value, "baseline_gbps": gbps / baseline}

    items = [
        faster(
            "save_vs_fsync_write_limit",
            ours,
            _best(save, "limit"),
            "write + fsync, 64 MiB blocks",
            0.9,
            **rates(ours, _best(save, "limit")),
            **rounds,
        ),
        faster(
            "save_vs_safetensors",
            ours,
            _best(save, "safetensors"),
            "safetensors save_file + fsync",
            1.0,
            **rates(ours, _best(save, "safetensors")),
            **rounds,
        ),
    ]
    if "direct" in save:
        items.append(
            faster(
                "save_vs_direct_io_write",
                ours,
                _best(save, "direct"),
                "O_DIRECT write + fsync, 64 MiB blocks",
                None,
                **rates(ours, _best(save, "direct")),
                **rounds,
            )
        )
    if "torch" in save:
        items.append(
            faster(
                "save_vs_torch_save",
                ours,
                _best(save, "torch"),
                "torch.save + fsync",
                None,
                **rates(ours, _best(save, "torch")),
                **rounds,
            )
        )
    raw_read = _best(load, "raw")
    for name, side, least in (
        ("load_vs_raw_read", "ours", 0.9),
        ("load_verified_vs_raw_read", "verified", 0.8),
    ):
        items.append(
            faster(
                name,
                _best(load, side),
                raw_read,
                "64 MiB reads into numpy",
                least,
                cache=load["cache"],
                **rates(_best(load, side), raw_read),
                **rounds,
            )
        )

    copy = _best(bg, "copy")
    blocked = _best(bg, "mutable", "blocked")
    items.append(
        bounded(
            "background_save_blocking_vs_numpy_copy",
            blocked,
            "s",
            most=1.25 * copy,
            target="value <= 1.25 x baseline",
            baseline=copy,
            baseline_name="numpy.copy of the state",
            first_save_blocked_s=min(bg["mutable"]["first_blocked"]),
            **rounds,
        )
    )
    by_size = {label: r["blocked"] * 1e3 for label, r in bg["bytes"].items()}
    items.append(
        bounded(
            "background_save_blocking_bytes",
            max(by_size.values()),
            "ms",
            most=50,
            target="value <= 50 ms at any size",
            baseline=copy * 1e3,
            baseline_name="numpy.copy of the full state",
            blocked_ms_by_size=by_size,
        )
    )
    items += _training(raw["train"])
    items.append(_prefect(raw["prefect"]))
    items += [
        bounded(
            "peak_memory_sync_save",
            _peak(save, "ours"),
            "MiB",
            most=64,
            baseline=_peak(save, "safetensors"),
            baseline_name="safetensors save",
            limit_write_mib=_peak(save, "limit"),
        ),
        bounded(
            "peak_memory_background_save_mutable",
            _peak(bg, "mutable"),
            "MiB",
            most=1.1 * size_mib,
            target=f"value <= 1.1 x state size ({1.1 * size_mib:.0f} MiB)",
            baseline=_peak(bg, "copy"),
            baseline_name="numpy.copy of the state",
        ),
        bounded(
            "peak_memory_load",
            max(_peak(load, "ours"), _peak(load, "verified")),
            "MiB",
            most=1.1 * size_mib,
            target=f"value <= 1.1 x checkpoint size ({1.1 * size_mib:.0f} MiB)",
            baseline=_peak(load, "raw"),
            baseline_name="raw read",
        ),
    ]
    return items


def _training(train: dict[str, Any]) -> list[Comparison]:
    plain = train["none"]["seconds"]
    sync = 100 * (train["sync"]["seconds"] - plain) / plain
    background = 100 * (train["background"]["seconds"] - plain) / plain
    loop = {
        "loop_seconds": plain,
        "every_steps": train["every"],
        "checkpoints": train["checkpoints"],
        "step_ms": train["step_seconds"] * 1e3,
    }
    return [
        bounded(
            "training_overhead_sync",
            sync,
            "%",
            least=30,
            target="value >= 30 % (the regime of the background target)",
            **loop,
        ),
        Comparison(
            "training_overhead_background",
            background,
            "%",
            sync,
            "sync mode",
            sync / background if background > 0 else None,
            "value <= 3.5 % where sync >= 30 %",
            background <= 3.5 and sync >= 30,
            {**loop, "blocked_s": train["background"]["blocked"]},
        ),
    ]


def _prefect(found: dict[str, Any]) -> Comparison:
    direct = statistics.median(found["direct"])
    task = statistics.median(found["task"])
    return Comparison(
        "prefect_task_overhead_per_save",
        (task - direct) * 1e3,
        "ms",
        direct * 1e3,
        "store called directly",
        direct / task,
        "value <= 100 ms",
        (task - direct) * 1e3 <= 100,
        {"task_ms": task * 1e3, "saves": len(found["task"]), "blob_kib": 2 * 64},
    )


def plot(raw: dict[str, Any], path: Path) -> Path:
    """Draws save and load throughput against the write limit and the raw read."""
    gbps = 3 * raw["size_mb"] * MIB / GB
    save, load = raw["save"], raw["load"]
    names = {"ours": "statecheckpoint", "safetensors": "safetensors", "torch": "torch"}
    saves = [
        (label, gbps / _best(save, side))
        for side, label in names.items()
        if side in save
    ]
    loads = [
        ("statecheckpoint", gbps / _best(load, "ours")),
        ("statecheckpoint\n(verified)", gbps / _best(load, "verified")),
    ]
    return throughput_plot(
        {
            "save (fsync)": saves,
            f"load ({load['cache']})": loads,
        },
        {
            "save (fsync)": [
                ("write + fsync", gbps / _best(save, "limit")),
                *(
                    [("O_DIRECT write + fsync", gbps / _best(save, "direct"))]
                    if "direct" in save
                    else []
                ),
            ],
            f"load ({load['cache']})": [("raw read", gbps / _best(load, "raw"))],
        },
        path,
        f"FileSystemStore, {raw['size_mb']} MiB weights + "
        f"{2 * raw['size_mb']} MiB optimizer state",
    )


def machine() -> str:
    """Describes the machine: CPU, cores, memory, kernel, file system."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )
