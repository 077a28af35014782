"""One Prefect API client for every task run a manager starts.

Outside a flow run, Prefect opens a new API client for each task run, and opening
one costs more than a small save: building its TLS context reads the whole CA
bundle (about 0.1 s on a busy two-core machine), even for a plain-HTTP local
server. A manager therefore keeps one client open from its first task run until
it is closed, and puts it in the context of each task run it starts. Inside a
flow run the flow's own client is used, as before.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

from prefect.context import SyncClientContext


class SharedClient:
    """A lazily opened Prefect API client, shared by a manager's task runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: SyncClientContext | None = None

    def context(self) -> SyncClientContext:
        """Returns the client context, opening the client on first use."""
        with self._lock:
            if self._context is None:
                self._context = contextvars.copy_context().run(_open)
            return self._context

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Calls ``fn(*args)`` with the shared client in context.

        A client already in context (a flow run's) is left in place.
        """
        if SyncClientContext.get() is not None:
            return fn(*args)
        token = SyncClientContext.__var__.set(self.context())
        try:
            return fn(*args)
        finally:
            SyncClientContext.__var__.reset(token)

    def close(self) -> None:
        """Closes the client; the next call opens a new one."""
        with self._lock:
            context, self._context = self._context, None
        if context is not None:
            context.client.__exit__(None, None, None)


def _open() -> SyncClientContext:
    # Runs in a throw-away copy of the context. Clearing it first makes the new
    # context open a client of its own rather than borrow the caller's, which
    # closes when the caller's flow run ends.
    SyncClientContext.__var__.set(None)  # type: ignore[arg-type]
    context = SyncClientContext()
    context.__enter__()  # opens the client and checks the server's API version
    return context
