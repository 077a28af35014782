"""The SQL Server store's T-SQL and its pure helpers: chunk planning, tag digests,
parameter sizes. Nothing here talks to a server, so all of it is tested without one.

Every statement is fixed text. The only name spliced into it is the SQL schema,
which :func:`check_schema_name` restricts to a plain identifier; every value (ids,
tags, JSON, blob bytes) travels as a parameter.

Tags are not filtered with ``JSON_VALUE`` or ``OPENJSON``: the summary holds NaN
and infinities (which T-SQL's JSON functions refuse), ``JSON_VALUE`` returns at
most 4000 characters, and a lone surrogate in a tag cannot even be bound as an
NVARCHAR parameter. Instead each ``(key, value)`` pair is stored as the SHA-256
of its exact JSON text in a side table and matched by that digest; the store
re-checks every match against the summary in Python.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from statecheckpoint import _codec
from statecheckpoint._codec import Kind
from statecheckpoint.errors import InvalidInputError

# ODBC's SQL type codes (sql.h / sqlext.h); fixed by the ODBC standard, so they are
# spelled here rather than imported from pyodbc.
SQL_WVARCHAR = -9
SQL_VARBINARY = -3
MAX_SIZE = 0
"""Column size 0 with SQL_WVARCHAR or SQL_VARBINARY binds NVARCHAR(MAX) or
VARBINARY(MAX)."""

# pyodbc binds longer values as the legacy ntext and image types, and the
# NVARCHAR limit counts UTF-16 units (2000 characters can already exceed 4000
# bytes); binding as MAX well below those limits never truncates.
_INLINE_CHARS = 1000
_INLINE_BYTES = 4000

DEFAULT_CHUNK_BYTES = 64 << 20
MAX_CHUNK_BYTES = 1 << 30
"""Rows stay far below VARBINARY(MAX)'s 2 GiB value limit."""

TABLES: dict[Kind, str] = {
    "models": "statecheckpoint_checkpoints",
    "sessions": "statecheckpoint_sessions",
}
BLOBS = "statecheckpoint_blobs"
TAGS = "statecheckpoint_tags"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_schema_name(name: str) -> str:
    """Returns ``name`` when it is a plain SQL identifier.

    Raises:
        InvalidInputError: Otherwise, saying what a schema name may hold.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidInputError(
            f"schema_name {name!r}: use letters, digits and underscores, starting "
            "with a letter or underscore, at most 64 characters (e.g. 'dbo')"
        )
    return name


def plan_chunks(size: int, chunk_size: int) -> list[tuple[int, int]]:
    """Splits ``size`` bytes into ``(offset, length)`` pieces of ``chunk_size``.

    The pieces are contiguous, in order, cover every byte once, and only the last
    may be shorter. An empty blob has no pieces.

    Raises:
        ValueError: For a negative size or a chunk size below 1.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [
        (offset, min(chunk_size, size - offset))
        for offset in range(0, size, chunk_size)
    ]


def tag_digest(key: str, value: str) -> bytes:
    """Returns the 32-byte digest a ``(key, value)`` tag is stored and found by.

    It hashes the codec's exact JSON text of the pair, so any two distinct pairs of
    Python strings (lone surrogates included) give distinct texts.
    """
    return hashlib.sha256(_codec.dumps([key, value]).encode("ascii")).digest()


def input_sizes(params: Sequence[Any]) -> list[tuple[int, int, int] | None] | None:
    """Returns what ``cursor.setinputsizes`` needs so long values bind as MAX types.

    Strings longer than a few hundred characters bind as NVARCHAR(MAX), byte
    strings longer than a few thousand bytes as VARBINARY(MAX); everything else
    keeps pyodbc's own binding (``None``). Returns None when nothing needs it.
    """
    sizes: list[tuple[int, int, int] | None] = []
    for value in params:
        if isinstance(value, str) and len(value) > _INLINE_CHARS:
            sizes.append((SQL_WVARCHAR, MAX_SIZE, 0))
        elif isinstance(value, bytes | bytearray) and len(value) > _INLINE_BYTES:
            sizes.append((SQL_VARBINARY, MAX_SIZE, 0))
        else:
            sizes.append(None)
    return sizes if any(sizes) else None


@dataclass(frozen=True)
class Statements:
    """Every statement the store sends, for one SQL schema."""

    schema: str
    ddl: tuple[str, ...] = field(init=False)
    session_setup: str = field(init=False)
    read_committed: str = field(init=False)
    repeatable_read: str = field(init=False)
    delete_record: dict[str, str] = field(init=False)
    insert_record: dict[str, str] = field(init=False)
    select_record: dict[str, str] = field(init=False)
    list_all: dict[str, str] = field(init=False)
    list_tagged: dict[str, str] = field(init=False)
    insert_chunk: str = field(init=False)
    select_chunks: str = field(init=False)
    delete_chunks: str = field(init=False)
    insert_tag: str = field(init=False)
    delete_tags: str = field(init=False)

    def __post_init__(self) -> None:
        check_schema_name(self.schema)
        q = self.qualified
        blobs, tags = q(BLOBS), q(TAGS)
        put = object.__setattr__
        put(self, "ddl", self._ddl())
        # TEXTSIZE: FreeTDS leaves the server's 4 KB default, which silently cuts
        # VARBINARY(MAX) and NVARCHAR(MAX) values on the way out. XACT_ABORT: any
        # error rolls the whole transaction back on the server.
        put(self, "session_setup", "SET TEXTSIZE 2147483647; SET XACT_ABORT ON;")
        # Set in every transaction: a pooled connection may keep the last level.
        put(self, "read_committed", "SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        put(self, "repeatable_read", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        put(
            self,
            "delete_record",
            {
                kind: f"DELETE FROM {q(table)} WITH (HOLDLOCK) "
                "OUTPUT deleted.blob_version WHERE id = ?"
                for kind, table in TABLES.items()
            },
        )
        put(
            self,
            "insert_record",
            {
                kind: f"INSERT INTO {q(table)} (id, blob_version, created_at, summary, "
                "body) VALUES (?, ?, ?, ?, ?)"
                for kind, table in TABLES.items()
            },
        )
        put(
            self,
            "select_record",
            {
                kind: f"SELECT summary, body, blob_version FROM {q(table)} WHERE id = ?"
                for kind, table in TABLES.items()
            },
        )
        put(
            self,
            "list_all",
            {kind: f"SELECT summary FROM {q(table)}" for kind, table in TABLES.items()},
        )
        put(
            self,
            "list_tagged",
            {
                kind: f"SELECT r.summary FROM {q(table)} AS r WHERE EXISTS "
                f"(SELECT 1 FROM {tags} AS t WHERE t.kind = ? AND t.record_id = r.id "
                "AND t.tag_hash = ?)"
                for kind, table in TABLES.items()
            },
        )
        put(
            self,
            "insert_chunk",
            f"INSERT INTO {blobs} (record_id, version, blob, seq, data) "
            "VALUES (?, ?, ?, ?, ?)",
        )
        put(
            self,
            "select_chunks",
            f"SELECT seq, data FROM {blobs} WHERE record_id = ? AND version = ? "
            "AND blob = ? ORDER BY seq",
        )
        put(
            self,
            "delete_chunks",
            f"DELETE FROM {blobs} WHERE record_id = ? AND version = ?",
        )
        put(
            self,
            "insert_tag",
            f"INSERT INTO {tags} (kind, record_id, tag_hash) VALUES (?, ?, ?)",
        )
        put(self, "delete_tags", f"DELETE FROM {tags} WHERE kind = ? AND record_id = ?")

    def qualified(self, table: str) -> str:
        """Returns ``[schema].[table]``."""
        return f"[{self.schema}].[{table}]"

    def all_texts(self) -> set[str]:
        """Returns every statement, for tests that check what was sent."""
        texts: set[str] = set(self.ddl)
        for value in vars(self).values():
            if isinstance(value, str) and value != self.schema:
                texts.add(value)
            elif isinstance(value, dict):
                texts.update(value.values())
        return texts

    def _ddl(self) -> tuple[str, ...]:
        s, q = self.schema, self.qualified
        records = [
            f"IF OBJECT_ID(N'{q(table)}', N'U') IS NULL CREATE TABLE {q(table)} ("
            "id UNIQUEIDENTIFIER NOT NULL, "
            "blob_version UNIQUEIDENTIFIER NOT NULL, "
            "created_at DATETIME2(6) NOT NULL, "
            "summary NVARCHAR(MAX) NOT NULL, "
            "body NVARCHAR(MAX) NOT NULL, "
            f"CONSTRAINT [pk_{table}] PRIMARY KEY (id))"
            for table in TABLES.values()
        ]
        return (
            f"IF SCHEMA_ID(N'{s}') IS NULL EXEC(N'CREATE SCHEMA [{s}]')",
            *records,
            f"IF OBJECT_ID(N'{q(BLOBS)}', N'U') IS NULL CREATE TABLE {q(BLOBS)} ("
            "record_id UNIQUEIDENTIFIER NOT NULL, "
            "version UNIQUEIDENTIFIER NOT NULL, "
            "blob NVARCHAR(32) NOT NULL, "
            "seq INT NOT NULL, "
            "data VARBINARY(MAX) NOT NULL, "
            f"CONSTRAINT [pk_{BLOBS}] PRIMARY KEY (record_id, version, blob, seq))",
            f"IF OBJECT_ID(N'{q(TAGS)}', N'U') IS NULL CREATE TABLE {q(TAGS)} ("
            "kind NVARCHAR(16) NOT NULL, "
            "record_id UNIQUEIDENTIFIER NOT NULL, "
            "tag_hash BINARY(32) NOT NULL, "
            f"CONSTRAINT [pk_{TAGS}] PRIMARY KEY (kind, record_id, tag_hash))",
            f"IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_{TAGS}_hash' "
            f"AND object_id = OBJECT_ID(N'{q(TAGS)}')) "
            f"CREATE INDEX [ix_{TAGS}_hash] ON {q(TAGS)} (kind, tag_hash)",
        )
