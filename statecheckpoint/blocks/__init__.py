"""Storage backends as Prefect blocks, and the pointer block.

Register them with ``prefect block register -m statecheckpoint.blocks``.
"""

from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.blocks.filesystem import FileSystemStore
from statecheckpoint.blocks.pointer import CheckpointPointer
from statecheckpoint.blocks.postgres import PostgresStore
from statecheckpoint.blocks.sqlserver import SqlServerStore

__all__ = [
    "CheckpointPointer",
    "CheckpointStore",
    "FileSystemStore",
    "PostgresStore",
    "SqlServerStore",
]
