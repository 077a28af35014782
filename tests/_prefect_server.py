"""A real ``prefect server start`` subprocess for the tests that need one.

The UI and deployment tests need what ``prefect_test_harness`` does not give: the
UI, the scheduler and workers in other processes. Each such test module starts one
server on a free loopback port, with its own PREFECT_HOME (so its own database),
and stops it at the end.
"""

from __future__ import annotations

import abc
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect.blocks.core import Block

import statecheckpoint.blocks

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _concrete_blocks() -> list[type[Block]]:
    return sorted(
        (
            cls
            for _, cls in inspect.getmembers(statecheckpoint.blocks)
            if Block.is_block_class(cls) and abc.ABC not in cls.__bases__
        ),
        key=lambda cls: cls.__name__,
    )


BLOCKS = _concrete_blocks()
"""Every concrete block the package exports: each store and the pointer."""
STARTUP_TIMEOUT = 120.0


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalServer:
    """A running server: where it listens and the environment that reaches it."""

    url: str
    home: Path
    env: dict[str, str]
    log: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def prefect(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``prefect ARGS`` against this server and returns what it did."""
        return subprocess.run(
            [PREFECT, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, *args: str, log_name: str) -> subprocess.Popen[bytes]:
        """Starts a long-running command (a worker) that is stopped with the server."""
        log = open(self.home / log_name, "wb")  # noqa: SIM115 - closed by the child
        child = subprocess.Popen(
            [PREFECT, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.children.append(child)
        return child

    def log_tail(self, name: str = "server.log", lines: int = 40) -> str:
        path = self.home / name
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def running_server(home: Path, **settings: str) -> Iterator[LocalServer]:
    """Starts ``prefect server start`` on a free port and stops it afterwards.

    While it runs, this process's Prefect client and ``os.environ`` (inherited by
    child processes) point at it.

    Args:
        home: An empty folder for PREFECT_HOME: database, logs, memo store.
        settings: More PREFECT_* variables for the server and its clients.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        **settings,
    }
    env.pop("PREFECT_API_KEY", None)
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LocalServer(url=url, home=home, env=env, log=log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(server.api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server did not start on {url}:\n{server.log_tail()}"
                )
            time.sleep(0.25)

        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                try:
                    yield server
                finally:
                    for child in reversed(server.children):
                        _stop(child)
                    _drain_clients()
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
    finally:
        for child in reversed(server.children):
            _stop(child)
        _stop(process)


def _drain_clients() -> None:
    """Sends what this process still queues for the server, while it is up.

    Events and logs wait in process-wide workers; left for later, they would be
    retried against a stopped server when the next test harness drains them.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # drain_all() stops the running instances only; instance() would start one.
    APILogWorker.drain_all()
    EventsWorker.drain_all()


def chromium_path() -> str | None:
    """Returns Debian's Chromium, or None when it is not installed."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None
