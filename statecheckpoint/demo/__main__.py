"""Command line of the demo: ``python -m statecheckpoint.demo [--root DIR] ...``.

``python -m statecheckpoint.demo job NAME WORK [ARG]`` runs one of the demo's child
processes; the demo starts those itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m statecheckpoint.demo",
        description="Train, kill -9, resume and compare; generate, pause, restore "
        "and compare. Exits non-zero when an identity check fails.",
    )
    parser.add_argument(
        "--root",
        default=".demo-store",
        help="folder of the file-system store (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="number of epochs to train"
    )
    parser.add_argument(
        "--small", action="store_true", help="a tiny model and run, for the tests"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the demo, or one of its child jobs; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    if argv[:1] == ["job"]:
        from statecheckpoint.demo.jobs import JOBS

        name, work, *args = argv[1:]
        JOBS[name](Path(work), args)
        return 0

    parser = _parser()
    options = parser.parse_args(argv)
    from statecheckpoint.demo.run import run_demo
    from statecheckpoint.demo.spec import preset

    # Check the options before starting a server and processes.
    try:
        preset(options.small, run_id="", root=options.root, epochs=options.epochs)
    except ValueError as exc:
        parser.error(str(exc))

    passed = run_demo(options.root, epochs=options.epochs, small=options.small)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
