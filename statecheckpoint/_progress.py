"""Byte counters for long transfers, fed by the stores as they read and write.

A caller that wants to show progress opens a :func:`tracking` scope around a save
or a load. The code it runs calls :func:`expect` once the size of the blobs is
known and :func:`advance` after each chunk it moves. Outside such a scope both
cost one context-variable lookup per chunk and do nothing else.

The counter travels in a context variable, so it reaches the worker thread of an
async twin (``anyio.to_thread`` copies the context) without any argument passing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Transfer", "advance", "expect", "expect_summary", "tracking"]


class Transfer:
    """Bytes moved so far by one save or load.

    Attributes:
        total: Bytes the blobs hold; None until the store has said.
        done: Bytes moved since the store last called :func:`expect`.
    """

    def __init__(self, listener: Callable[[Transfer], None] | None = None) -> None:
        self.total: int | None = None
        self.done = 0
        self._listener = listener

    @property
    def fraction(self) -> float | None:
        """How much is done, from 0.0 to 1.0; None while the total is unknown."""
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else min(self.done / self.total, 1.0)

    def _changed(self) -> None:
        if self._listener is not None:
            self._listener(self)


_current: contextvars.ContextVar[Transfer | None] = contextvars.ContextVar(
    "statecheckpoint_transfer", default=None
)


def expect(total: int) -> None:
    """Announces the bytes about to move; a second call starts the count over."""
    transfer = _current.get()
    if transfer is not None:
        transfer.total = total
        transfer.done = 0
        transfer._changed()


def expect_summary(summary: object) -> None:
    """Announces the bytes of a stored record, from its summary document.

    A summary too damaged to count is ignored here; the integrity check that
    follows the read reports it.
    """
    if _current.get() is None:
        return
    try:
        blobs = summary["blobs"]  # type: ignore[index]
        total = sum(int(meta["size"]) for meta in blobs.values())
    except (KeyError, TypeError, ValueError, AttributeError):
        return
    expect(total)


def advance(nbytes: int) -> None:
    """Counts ``nbytes`` more as moved."""
    transfer = _current.get()
    if transfer is not None:
        transfer.done += nbytes
        transfer._changed()


@contextmanager
def tracking(listener: Callable[[Transfer], None] | None = None) -> Iterator[Transfer]:
    """Counts the bytes that stores move inside the ``with`` block.

    Args:
        listener: Called with the :class:`Transfer` after every change, in the
            thread that moves the bytes; it should return quickly.
    """
    transfer = Transfer(listener)
    token = _current.set(transfer)
    try:
        yield transfer
    finally:
        _current.reset(token)
