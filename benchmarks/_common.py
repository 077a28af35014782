"""What the benchmarks share: comparisons and their output, memory probes, workers.

A benchmark measures each comparison as a :class:`Comparison` and hands them all
to :func:`report`, which prints a table for people and then one JSON object per
line for machines, with at least ``name``, ``value``, ``baseline``, ``ratio``
(ours over the baseline, oriented so that higher is better), ``target`` and
``met``. Scenarios that must not disturb each other's memory run in a fresh
process each (:func:`run_worker` in the parent, :func:`worker_main` in the child)
and measure their peak with a :class:`MemoryProbe`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

MIB = 1 << 20
GB = 1e9


@dataclass
class Comparison:
    """One measured comparison and whether it meets its target.

    Attributes:
        name: Stable identifier, snake case.
        value: Our measurement, in ``unit``.
        unit: Unit of ``value`` and ``baseline``.
        baseline: What ours is compared with, in ``unit``; None when nothing is.
        baseline_name: What the baseline is, in words.
        ratio: Ours over the baseline, oriented so that higher is better (for
            durations and sizes: baseline / value); None without a baseline.
        target: The target in words, e.g. ``"ratio >= 0.9"``.
        met: Whether the target is met; None when there is no target.
        extra: More fields for the JSON line (throughputs, modes, rounds).
    """

    name: str
    value: float | None
    unit: str
    baseline: float | None
    baseline_name: str
    ratio: float | None
    target: str
    met: bool | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON object: the fixed fields first, then the extras."""
        fixed = {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": _round(self.baseline),
            "baseline_name": self.baseline_name,
            "ratio": _round(self.ratio),
            "target": self.target,
            "met": self.met,
        }
        return {**fixed, **{key: _round(value) for key, value in self.extra.items()}}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def inverse_ratio(value: float | None, baseline: float | None) -> float | None:
    """Returns ``baseline / value`` (for lower-is-better values), or None."""
    if value is None or baseline is None or value <= 0:
        return None
    return baseline / value


def faster(
    name: str,
    seconds: float,
    baseline_seconds: float,
    baseline_name: str,
    at_least: float | None,
    **extra: Any,
) -> Comparison:
    """Compares two durations; the ratio is above 1 when ours is faster.

    Args:
        name: The comparison's name.
        seconds: Our duration.
        baseline_seconds: The baseline's duration.
        baseline_name: What the baseline is.
        at_least: The smallest ratio that meets the target; None for none.
        **extra: More fields for the JSON line.
    """
    ratio = inverse_ratio(seconds, baseline_seconds)
    return Comparison(
        name,
        seconds,
        "s",
        baseline_seconds,
        baseline_name,
        ratio,
        "none (for information)" if at_least is None else f"ratio >= {at_least:g}",
        None if at_least is None else ratio is not None and ratio >= at_least,
        extra,
    )


def bounded(
    name: str,
    value: float,
    unit: str,
    *,
    most: float | None = None,
    least: float | None = None,
    target: str | None = None,
    baseline: float | None = None,
    baseline_name: str = "",
    ratio: float | None = None,
    **extra: Any,
) -> Comparison:
    """A value with an upper and/or lower bound.

    The ratio is ``baseline / value`` unless given.
    """
    met = (most is None or value <= most) and (least is None or value >= least)
    if target is None:
        parts = [f"value >= {least:g} {unit}"] if least is not None else []
        parts += [f"value <= {most:g} {unit}"] if most is not None else []
        target = " and ".join(parts)
    return Comparison(
        name,
        value,
        unit,
        baseline,
        baseline_name,
        inverse_ratio(value, baseline) if ratio is None else ratio,
        target,
        met,
        extra,
    )


# -- output -------------------------------------------------------------------


def _cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def format_table(comparisons: Sequence[Comparison]) -> str:
    """Formats the comparisons as a fixed-width table, one row each."""
    header = ("comparison", "ours", "baseline", "ratio", "target", "met")
    rows = [header]
    for item in comparisons:
        met = {True: "yes", False: "NO", None: "-"}[item.met]
        rows.append(
            (
                item.name,
                _cell(item.value, item.unit),
                _cell(item.baseline, item.unit)
                + (f" ({item.baseline_name})" if item.baseline_name else ""),
                _cell(item.ratio, "x"),
                item.target,
                met,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_markdown(comparisons: Sequence[Comparison]) -> str:
    """Formats the comparisons as a Markdown table (for the docs)."""
    lines = [
        "| comparison | ours | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for item in comparisons:
        baseline = _cell(item.baseline, item.unit)
        if item.baseline_name:
            baseline += f" ({item.baseline_name})"
        met = {True: "yes", False: "**no**", None: "-"}[item.met]
        lines.append(
            f"| `{item.name}` | {_cell(item.value, item.unit)} | {baseline} | "
            f"{_cell(item.ratio, 'x')} | {item.target} | {met} |"
        )
    return "\n".join(lines)


def report(comparisons: Sequence[Comparison], stream: TextIO | None = None) -> bool:
    """Prints the table, then one JSON object per line; True when all are met."""
    out = stream or sys.stdout
    print(format_table(comparisons), file=out)
    print(file=out)
    for item in comparisons:
        print(json.dumps(item.to_dict(), allow_nan=False), file=out)
    out.flush()
    return all(item.met is not False for item in comparisons)


_LIMIT_STYLES = (("tab:red", "--"), ("tab:purple", ":"), ("tab:green", "-."))


def throughput_plot(
    groups: Mapping[str, Sequence[tuple[str, float]]],
    limits: Mapping[str, Sequence[tuple[str, float]]],
    path: Path,
    title: str,
) -> Path:
    """Draws grouped throughput bars with each group's limits as dashed lines.

    Args:
        groups: Group title to ``(label, GB/s)`` bars, ours first.
        limits: Group title to ``(label, GB/s)`` of the limits drawn across it.
        path: Where the PNG goes; its folder is created.
        title: The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(
        1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False
    )
    for axis, (group, bars) in zip(axes[0], groups.items(), strict=True):
        labels = [label for label, _ in bars]
        values = [value for _, value in bars]
        colors = ["tab:blue"] + ["tab:gray"] * (len(bars) - 1)
        drawn = axis.bar(range(len(bars)), values, color=colors)
        axis.bar_label(drawn, fmt="%.2f")
        axis.set_xticks(range(len(bars)), labels, rotation=20, ha="right")
        for index, (name, limit) in enumerate(limits.get(group, ())):
            color, style = _LIMIT_STYLES[index % len(_LIMIT_STYLES)]
            axis.axhline(limit, color=color, linestyle=style, label=name)
        if limits.get(group):
            axis.legend(loc="lower right", fontsize="small")
        axis.set_title(group)
        axis.set_ylabel("GB/s")
        axis.margins(y=0.15)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- memory -------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", status.read(), re.M)
    if match is None:
        raise OSError(f"/proc/self/status has no {field_name}")
    return int(match.group(1))


class MemoryProbe:
    """Measures how far the resident set rises above where it was at the start.

    On entry the kernel's high-water mark is reset to the current resident set
    (``/proc/self/clear_refs``), so ``VmHWM`` at exit is the peak of what ran
    inside. Where that reset is refused, a thread samples the resident set every
    millisecond instead.
    """

    def __init__(self) -> None:
        self.start_kib = 0
        self.peak_kib = 0
        self._sampler: Any = None
        self._stop = False

    def __enter__(self) -> MemoryProbe:
        self.start_kib = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
        except OSError:
            import threading

            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc_info: object) -> None:
        if self._sampler is not None:
            self._stop = True
            self._sampler.join()
        else:
            self.peak_kib = _status_kib("VmHWM")
        self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))

    @property
    def growth_mib(self) -> float:
        """Peak resident set inside the block minus the one at its start, MiB."""
        return max(0, self.peak_kib - self.start_kib) / 1024


# -- workers ------------------------------------------------------------------


def run_worker(
    module: str,
    scenario: str,
    params: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Runs ``python -m MODULE SCENARIO PARAMS`` and returns what it reported.

    The child's output goes to ``log`` (appended), so Prefect's log lines do not
    mix with the report.

    Raises:
        RuntimeError: When the child fails, with the end of its log.
    """
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", module, scenario, json.dumps(dict(params))]
        with open(log or os.devnull, "ab") as sink:
            sink.write(f"\n=== {scenario} {json.dumps(dict(params))}\n".encode())
            sink.flush()
            proc = subprocess.run(
                command,
                env={**os.environ, **(env or {}), "BENCH_RESULT": str(out)},
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(
                f"benchmark worker {scenario!r} failed (exit {proc.returncode})\n{tail}"
            )
        return dict(json.loads(out.read_text()))


def worker_main(
    scenarios: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
    argv: Iterable[str] | None = None,
) -> int:
    """The child's side of :func:`run_worker`: runs one scenario, saves its result."""
    args = list(sys.argv[1:] if argv is None else argv)
    scenario, params = args[0], json.loads(args[1])
    result = scenarios[scenario](params)
    Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
    return 0
