"""What the CLI prints: tables on stdout, messages and progress bars on stderr."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from statecheckpoint import _progress
from statecheckpoint.models import CheckpointInfo, SessionInfo
from statecheckpoint.tasks.artifacts import human_size

_PIPE_WIDTH = 200
"""Width of tables written to a pipe or file, wide enough not to wrap ids."""


def emit(*renderables: Any) -> None:
    """Prints results on stdout; in a pipe as plain text, unwrapped, unpadded."""
    console = Console(highlight=False)
    if console.is_terminal:
        console.print(*renderables)
        return
    console = Console(highlight=False, width=_PIPE_WIDTH, no_color=True)
    with console.capture() as capture:
        console.print(*renderables)
    lines = capture.get().splitlines()
    print("\n".join(line.rstrip() for line in lines))


def say(text: str) -> None:
    """Prints one plain line of result on stdout (no markup, no wrapping)."""
    print(text, flush=True)


def err() -> Console:
    """The console for messages and progress bars (stderr)."""
    return Console(stderr=True, highlight=False)


def fail(message: str) -> None:
    """Prints an error message to stderr."""
    console = err()
    console.print("error:", style="bold red", end=" ")
    console.print(message, markup=False, soft_wrap=True)


def print_json(value: Any) -> None:
    """Prints a JSON document on stdout, plain, one value per call."""
    print(json.dumps(value, indent=2, default=str))


def _loss(value: float | None) -> str:
    if value is None:
        return "-"
    return repr(value) if not math.isfinite(value) else f"{value:.6g}"


def printable(text: str) -> str:
    """Escapes what a terminal cannot show (control characters, lone surrogates),
    as Python would in a string literal; other text is left alone."""
    return "".join(
        char
        if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF
        else char.encode("unicode_escape", "backslashreplace").decode("ascii")
        for char in text
    )


def _tags(tags: dict[str, str]) -> str:
    pairs = sorted(tags.items())
    return ", ".join(f"{printable(k)}={printable(v)}" for k, v in pairs) or "-"


def _size(info: CheckpointInfo | SessionInfo) -> str:
    return human_size(sum(info.sizes.values()))


def checkpoint_table(infos: Sequence[CheckpointInfo], title: str) -> Table:
    """Builds the ``list`` table of checkpoints."""
    table = Table(title=title, title_justify="left")
    for column in ("id", "epoch", "loss", "size", "tags", "created (UTC)"):
        table.add_column(column, no_wrap=column in ("id", "created (UTC)"))
    for info in infos:
        table.add_row(
            str(info.id),
            str(info.epoch),
            _loss(info.loss),
            _size(info),
            _tags(info.tags),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def session_table(infos: Sequence[SessionInfo], title: str) -> Table:
    """Builds the ``list --sessions`` table."""
    table = Table(title=title, title_justify="left")
    for column in ("id", "model", "tokens", "size", "tags", "created (UTC)"):
        table.add_column(column, no_wrap=column in ("id", "created (UTC)"))
    for info in infos:
        table.add_row(
            str(info.id),
            printable(info.model_fingerprint) or "-",
            str(info.num_tokens),
            _size(info),
            _tags(info.tags),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def details_table(rows: Sequence[tuple[str, str]]) -> Table:
    """Builds a two-column ``field  value`` table for ``show``."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def info_rows(info: CheckpointInfo | SessionInfo) -> list[tuple[str, str]]:
    """The rows ``show`` prints for a list entry."""
    if isinstance(info, CheckpointInfo):
        rows = [
            ("kind", "checkpoint"),
            ("id", str(info.id)),
            ("epoch", str(info.epoch)),
            ("loss", _loss(info.loss)),
        ]
    else:
        rows = [
            ("kind", "inference session"),
            ("id", str(info.id)),
            ("model", printable(info.model_fingerprint) or "-"),
            ("tokens", str(info.num_tokens)),
        ]
    rows.append(("created (UTC)", info.created_at.isoformat()))
    rows.append(("tags", _tags(info.tags)))
    for name, size in info.sizes.items():
        rows.append((name, f"{human_size(size)} ({size} bytes)"))
    return rows


@contextmanager
def transfer_bar(label: str) -> Iterator[None]:
    """Shows a byte progress bar for the store calls inside the block.

    Only on a terminal: in a pipe or a file nothing is drawn.
    """
    console = err()
    if not console.is_terminal:
        yield
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=None)

        def listener(transfer: _progress.Transfer) -> None:
            progress.update(task, total=transfer.total, completed=transfer.done)

        with _progress.tracking(listener):
            yield
