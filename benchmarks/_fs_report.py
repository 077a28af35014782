"""Turns ``benchmarks.filesystem``'s raw numbers into comparisons and a plot."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from benchmarks._common import (
    GB,
    MIB,
    Comparison,
    bounded,
    faster,
    throughput_plot,
)


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
                **{**rounds, "rounds": args.load_rounds},
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
            first_save_blocked_s=max(bg["mutable"]["first_blocked"]),
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


SIDES = ("plain", "checkpointed")
"""The training loop's intervals: without and with a checkpoint."""


def _training(train: dict[str, Any]) -> list[Comparison]:
    def overhead(mode: str) -> float:
        plain, checkpointed = (sum(train[mode][side]) for side in SIDES)
        return 100 * (checkpointed - plain) / plain

    def error(mode: str) -> float | None:
        """The standard error of the overhead, from the pairs' differences."""
        plain, checkpointed = (train[mode][side] for side in SIDES)
        if len(plain) < 2:
            return None
        differences = [c - p for p, c in zip(plain, checkpointed, strict=True)]
        spread = statistics.stdev(differences) / len(differences) ** 0.5
        return 100 * spread / statistics.mean(plain)

    sync, background = overhead("sync"), overhead("background")
    # The part of the background overhead that is save() blocking the loop: the
    # snapshot copy, the floor of any design that copies, and the hand-off.
    blocked = 100 * sum(train["background"]["blocked"])
    blocked /= sum(train["background"]["plain"])
    loop = {
        "every_steps": train["every"],
        "step_ms": train["step_seconds"] * 1e3,
        "sync_save_s": train["save_seconds"],
        **{
            f"{mode}_{side}_s": train[mode][side]
            for mode in ("sync", "background")
            for side in SIDES
        },
    }
    return [
        bounded(
            "training_overhead_sync",
            sync,
            "%",
            least=30,
            target="value >= 30 % (the regime of the background target)",
            standard_error_pct=error("sync"),
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
            {
                "standard_error_pct": error("background"),
                "blocked_pct": blocked,
                **loop,
                "blocked_s": train["background"]["blocked"],
            },
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
            f"load, {load['cache']}": loads,
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
            f"load, {load['cache']}": [("raw read", gbps / _best(load, "raw"))],
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
