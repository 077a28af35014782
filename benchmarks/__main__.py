"""``python -m benchmarks NAME [options]``: runs one benchmark by name."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "filesystem": "benchmarks.filesystem",
    "postgres": "benchmarks.postgres",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatches to ``benchmarks.<name>.main`` (imported only when chosen)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        print(
            f"usage: python -m benchmarks {{{names}}} [options]\n"
            "       python -m benchmarks NAME --help for a benchmark's options",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(BENCHMARKS[args[0]])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
