"""Helpers shared by the tests."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(reason: str) -> NoReturn:
    """Skips a test that cannot run here; where ``CI`` is set, fails it instead,
    so that CI never passes without having run it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this test must run)")
    pytest.skip(reason)
