"""Shared fixtures: the contract suite's ``store``, one Prefect server a session."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault(
    "PREFECT_HOME", tempfile.mkdtemp(prefix="statecheckpoint-prefect-")
)

import pytest  # noqa: E402

from tests.helpers import skip_or_fail  # noqa: E402

pytest_plugins = ["tests.plugins.postgres", "tests.plugins.sqlserver"]

# Each backend's plugin defines a ``<name>_store`` fixture; the contract suite runs
# against every entry here.
STORE_BACKENDS = [
    pytest.param("filesystem", id="filesystem"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
if os.environ.get("STATECHECKPOINT_SQLSERVER_URL"):
    STORE_BACKENDS.append(
        pytest.param("sqlserver", id="sqlserver", marks=pytest.mark.sqlserver)
    )


@pytest.fixture
def filesystem_store(tmp_path):
    from statecheckpoint import FileSystemStore

    return FileSystemStore(root=str(tmp_path / "store"))


@pytest.fixture(params=STORE_BACKENDS)
def store(request):
    """A fresh, empty store of each backend in turn."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def tmpfs():
    """Mounts small tmpfs file systems (for full or read-only disks) and unmounts
    them after the test. Needs root; in CI a failure to mount fails the test."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            skip_or_fail(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def prefect_server():
    """A Prefect server for the whole session; child processes reach it too."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
