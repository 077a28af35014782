"""The ``statecheckpoint`` command: list, show, delete, verify, export, import, demo.

The store is a folder (``--root DIR``) or a store block saved in Prefect
(``--block file-system-checkpoint-store/prod``). Results go to stdout, messages
and progress bars to stderr; bars are drawn only on a terminal. Exit status: 0
done, 1 failure, 2 usage error.
"""

from statecheckpoint.cli._app import app, main

__all__ = ["app", "main"]
