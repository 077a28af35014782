"""The file-system store, side by side with what it competes with, in one run.

Usage::

    python -m benchmarks filesystem --size-mb 1024

On the same bytes (N MiB of weights and 2N MiB of optimizer state, float32) it
measures:

1. a save (``FileSystemStore.save_checkpoint``) against the limit: the same
   bytes written to one file in 64 MiB blocks, then fsync; and, for
   information, the same with ``O_DIRECT`` from an aligned buffer;
2. the same save against ``safetensors.numpy.save_file`` and, when torch is
   installed, ``torch.save`` of equal tensors, each followed by fsync;
3. a cold load against reading the same files with 64 MiB reads into fresh
   numpy buffers, and a load with checksum verification on. The page cache is
   dropped through ``/proc/sys/vm/drop_caches`` where allowed (or, with
   ``--evict fadvise``, only the files are evicted); residency is checked with
   ``mincore`` and the line says "warm" when the files stayed cached;
4. how long a background ``save()`` blocks the caller: for the numpy state
   against one ``numpy.copy`` of it, and for immutable ``bytes`` in ms (at
   1 MiB and at the full size);
5. a training loop of fixed steps (single-threaded matrix products) that
   checkpoints every K steps: its wall-time overhead over the same steps
   without checkpoints, in sync and background mode. One loop per mode runs
   intervals of K steps that start with a checkpoint (``--pairs`` in
   background mode, ``--sync-pairs`` in sync mode), alternating with as many
   intervals without one (plain, checkpointed, checkpointed, plain, ...), so
   that the machine's drift cancels; a background save still running at the
   end of its interval is waited for inside it. The line gives the standard
   error of the mean difference too, and ``blocked_pct``: the part of the
   overhead that is ``save()`` blocking the loop (the snapshot copy and
   handing the save to the task runner). K is chosen from the median of two
   sync saves so that sync checkpoints add about ``--sync-overhead`` percent
   to the loop's time, the regime the target is set in;
6. Prefect's overhead per save: a small save through the Prefect task (a sync
   ``CheckpointManager``) against the store called directly;
7. the peak resident memory of each, as growth over the process's baseline.

Every save, load and copy runs in a fresh process (``benchmarks._fs_worker``)
that first runs it once untimed, in rotating order each round (``--rounds``,
and ``--load-rounds`` for the loads, whose cold reads vary most); the best
round of each side counts, the highest memory. A background save of the state
is timed on the second save of its process: a job's first one also allocates
the snapshot buffer that later ones reuse (reported, the worst round, as
``first_save_blocked_s``). Prefect's overhead is the median of
``--prefect-rounds`` saves each way, after three untimed ones.

Prints a table, then one JSON object per comparison per line (see
``benchmarks._common``), and writes a PNG of save and load throughput against
the limits plus the raw numbers to ``--results``. Exits with 0 when every
target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import format_markdown, report, run_worker
from benchmarks._fs_report import compare, machine, plot

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
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side")
    parser.add_argument(
        "--load-rounds",
        type=int,
        default=3,
        help="rounds per side for loads, which are quick and the noisiest",
    )
    parser.add_argument("--results", default="bench-results", help="output folder")
    parser.add_argument("--dir", help="scratch folder (default RESULTS/data)")
    parser.add_argument("--plot", help="PNG path (default RESULTS/filesystem-N.png)")
    parser.add_argument("--api-url", help="Prefect API to use; default: a local one")
    parser.add_argument(
        "--pairs",
        type=int,
        help="training: intervals with a background checkpoint (and as many "
        "without); default: the even number, 4 to 12, that fits in "
        "--training-seconds (an even count cancels a steady drift)",
    )
    parser.add_argument(
        "--training-seconds",
        type=float,
        default=100,
        help="training: about how long the background loop may run",
    )
    parser.add_argument(
        "--sync-pairs",
        type=int,
        default=2,
        help="training: intervals with a sync checkpoint (and as many without)",
    )
    parser.add_argument(
        "--sync-overhead",
        type=float,
        default=35,
        help="training: what sync checkpoints should add to the loop's time, in %%",
    )
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
            raw["train"] = self.training()
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
        for index in range(self.args.load_rounds):
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

    def training(self) -> dict[str, Any]:
        # One BLAS thread: the loop keeps one core busy, as a training step that
        # leaves a core to the background save (see _fs_worker.train_step).
        self.env = {**self.env, **ONE_THREAD}
        found = self.worker("calibrate", root=self.root, steps=40, **self.state)
        step, save_seconds = found["step_seconds"], found["save_seconds"]
        every = max(1, round(save_seconds / (self.args.sync_overhead / 100) / step))
        found["every"] = every
        background = self.args.pairs
        if background is None:
            fit = self.args.training_seconds / (4 * every * step)
            background = 2 * min(6, max(2, round(fit)))
        pairs = {"sync": self.args.sync_pairs, "background": background}
        _say(
            f"training: {step * 1e3:.1f} ms a step, a sync save {save_seconds:.2f} s,"
            f" a checkpoint every {every} steps, {background} background pairs"
        )
        for mode in ("sync", "background"):
            result = self.worker(
                "train",
                root=self.root,
                mode=mode,
                every=every,
                pairs=pairs[mode],
                **self.state,
            )
            found[mode] = result
            _say(
                f"training {mode}: {sum(result['checkpointed']):.1f} s with"
                f" checkpoints, {sum(result['plain']):.1f} s without"
            )
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
