"""The demo's printed report: labelled lines as steps finish, then the verdicts."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Report"]

_LABEL_WIDTH = 11


class Report:
    """Prints labelled lines at once and collects PASS/FAIL verdicts.

    Args:
        out: Where to print; standard output by default.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.started = time.perf_counter()
        self.verdicts: list[tuple[str, bool]] = []

    def line(self, label: str, text: str) -> None:
        """Prints one line of the report under a label ("" continues the last)."""
        print(f"{label:<{_LABEL_WIDTH}} {text}", file=self.out, flush=True)

    def verdict(self, what: str, passed: bool) -> None:
        """Records and prints the outcome of one identity check."""
        self.verdicts.append((what, passed))
        self.line("PASS" if passed else "FAIL", what)

    @property
    def passed(self) -> bool:
        """Whether there was at least one check and every check passed."""
        return bool(self.verdicts) and all(ok for _, ok in self.verdicts)

    def summary(self) -> None:
        """Prints the final tally and the elapsed time."""
        failed = sum(not ok for _, ok in self.verdicts)
        elapsed = time.perf_counter() - self.started
        outcome = "PASS" if self.passed else "FAIL"
        self.line(
            "result",
            f"{outcome}: {len(self.verdicts) - failed} of {len(self.verdicts)} "
            f"identity checks passed, in {elapsed:.1f} s",
        )
