"""SQL Server fixtures: a real server when ``STATECHECKPOINT_SQLSERVER_URL`` names
one, and an in-memory stand-in for pyodbc that runs the store's own statements.

The stand-in checks what real pyodbc would refuse or silently degrade: parameters
of an unsupported type, strings that UTF-16 cannot encode (lone surrogates), long
values bound without a MAX input size, aware datetimes. It records every
statement, so tests can check that values only ever travel as parameters. It
understands exactly the statement shapes the store sends, nothing more.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from pydantic import SecretStr

SQLSERVER_URL = os.environ.get("STATECHECKPOINT_SQLSERVER_URL", "")
FAKE_PASSWORD = "fake-Pa55;word}"

_UUID_COLUMNS = {"id", "blob_version", "record_id", "version"}
_KEYS = {
    "statecheckpoint_checkpoints": ("id",),
    "statecheckpoint_sessions": ("id",),
    "statecheckpoint_blobs": ("record_id", "version", "blob", "seq"),
    "statecheckpoint_tags": ("kind", "record_id", "tag_hash"),
}
_PARAM_TYPES = (str, bytes, bytearray, int, float, datetime, uuid.UUID, type(None))
_INSERT = re.compile(r"^INSERT INTO (\S+) \(([^)]*)\) VALUES \([?, ]*\)$")
_DELETE = re.compile(
    r"^DELETE FROM (\S+)(?: WITH \(HOLDLOCK\))?(?: OUTPUT deleted\.(\w+))? "
    r"WHERE (.+)$"
)
_TAGGED = re.compile(
    r"^SELECT r\.summary FROM (\S+) AS r WHERE EXISTS \(SELECT 1 FROM (\S+) AS t "
    r"WHERE t\.kind = \? AND t\.record_id = r\.id AND t\.tag_hash = \?\)$"
)
_SELECT = re.compile(r"^SELECT (.+?) FROM (\S+)(?: WHERE (.+?))?(?: ORDER BY (\w+))?$")
_CREATE = re.compile(r"CREATE TABLE (\S+) \(")


class FakeError(Exception):
    """pyodbc.Error's stand-in: ``args`` are ``(sqlstate, message)``."""


class FakeInterfaceError(FakeError):
    pass


class FakeDatabaseError(FakeError):
    pass


class FakeOperationalError(FakeDatabaseError):
    pass


class FakeProgrammingError(FakeDatabaseError):
    pass


def _short_name(table: str) -> str:
    return table.rsplit(".", 1)[-1].strip("[]")


class FakeServer:
    """An in-memory database plus the pyodbc-shaped module that reaches it."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.connection_strings: list[str] = []
        self.commits = 0
        self.drivers = ["FreeTDS"]
        self.connect_error: Exception | None = None
        self.fail: Callable[[str, tuple[Any, ...]], Exception | None] = lambda s, p: (
            None
        )
        self.module = _module(self)

    def store(self, **fields: Any) -> Any:
        from statecheckpoint.blocks.sqlserver import SqlServerStore

        settings: dict[str, Any] = {
            "server": "fake-host",
            "driver": "FreeTDS",
            "user": "trainer",
            "password": SecretStr(FAKE_PASSWORD),
            "chunk_bytes": 1024,
        }
        return SqlServerStore(**{**settings, **fields})

    def rows(self, short_name: str) -> list[dict[str, Any]]:
        """Returns the committed rows of a table, by its unqualified name."""
        for name, rows in self.tables.items():
            if _short_name(name) == short_name:
                return rows
        return []

    def statements(self) -> list[str]:
        return [sql for sql, _ in self.log]


class FakeConnection:
    def __init__(self, server: FakeServer, autocommit: bool) -> None:
        self.server = server
        self.autocommit = autocommit
        self.closed = False
        self.isolation = "READ COMMITTED"
        self._work: dict[str, list[dict[str, Any]]] | None = None

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        if self.autocommit:
            return self.server.tables
        if self._work is None:
            self._work = {
                name: [dict(row) for row in rows]
                for name, rows in self.server.tables.items()
            }
        return self._work

    def commit(self) -> None:
        if self._work is not None:
            self.server.tables = self._work
        self._work = None
        self.server.commits += 1

    def rollback(self) -> None:
        self._work = None

    def close(self) -> None:
        self._work = None
        self.closed = True


class FakeCursor:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.sizes: list[Any] | None = None
        self.rowcount = -1
        self._rows: list[tuple[Any, ...]] = []

    def setinputsizes(self, sizes: list[Any] | None) -> None:
        self.sizes = None if sizes is None else list(sizes)

    def execute(self, sql: str, *params: Any) -> FakeCursor:
        server = self.connection.server
        server.log.append((sql, params))
        _check_binding(sql, params, self.sizes)
        error = server.fail(sql, params)
        if error is not None:
            raise error
        self._rows, self.rowcount = self._run(sql, params)
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def _run(self, sql: str, params: tuple[Any, ...]) -> tuple[list[Any], int]:
        if sql.startswith("SET TRANSACTION ISOLATION LEVEL "):
            self.connection.isolation = sql.removeprefix(
                "SET TRANSACTION ISOLATION LEVEL "
            )
            return [], -1
        if sql.startswith("SET "):
            return [], -1
        if sql.startswith("IF "):
            created = _CREATE.search(sql)
            if created:
                self.connection.tables().setdefault(created.group(1), [])
            return [], -1
        tables = self.connection.tables()
        if match := _INSERT.match(sql):
            return [], _insert(tables, match.group(1), match.group(2), params)
        if match := _DELETE.match(sql):
            table, output, where = match.groups()
            rows = _table(tables, table)
            doomed = [row for row in rows if _matches(row, where, params)]
            rows[:] = [row for row in rows if row not in doomed]
            out = [(_out(output, row[output]),) for row in doomed] if output else []
            return out, len(doomed)
        if match := _TAGGED.match(sql):
            records, tags = (
                _table(tables, match.group(1)),
                _table(tables, match.group(2)),
            )
            kind, digest = params
            hits = {
                row["record_id"]
                for row in tags
                if row["kind"] == kind and row["tag_hash"] == digest
            }
            return [(row["summary"],) for row in records if row["id"] in hits], -1
        if match := _SELECT.match(sql):
            columns, table, where, order = match.groups()
            names = [name.strip() for name in columns.split(",")]
            rows = [
                row for row in _table(tables, table) if _matches(row, where, params)
            ]
            if order:
                rows.sort(key=lambda row: row[order])
            return [tuple(_out(n, row[n]) for n in names) for row in rows], -1
        raise FakeProgrammingError("42000", f"[42000] fake server cannot run: {sql}")


def _check_binding(sql: str, params: tuple[Any, ...], sizes: list[Any] | None) -> None:
    """Fails as pyodbc would, or where pyodbc would quietly use a legacy type."""
    if sql.count("?") != len(params):
        raise FakeProgrammingError(
            "07002", f"{sql.count('?')} markers but {len(params)} parameters"
        )
    if sizes is not None and len(sizes) != len(params):
        raise AssertionError(f"{len(sizes)} input sizes for {len(params)} parameters")
    for index, value in enumerate(params):
        if not isinstance(value, _PARAM_TYPES):
            raise FakeProgrammingError(
                "HY105",
                f"Invalid parameter type. param-index={index} "
                f"param-type={type(value).__name__}",
            )
        size = sizes[index] if sizes else None
        if isinstance(value, str):
            units = len(value.encode("utf-16-le")) // 2  # raises like pyodbc does
            if units * 2 > 4000 and size != (-9, 0, 0):
                raise AssertionError(
                    f"parameter {index}: {units} UTF-16 units bound as ntext, "
                    "not NVARCHAR(MAX)"
                )
        elif isinstance(value, bytes | bytearray):
            if len(value) > 8000 and size != (-3, 0, 0):
                raise AssertionError(
                    f"parameter {index}: {len(value)} bytes bound as image, "
                    "not VARBINARY(MAX)"
                )
        elif isinstance(value, datetime) and value.tzinfo is not None:
            raise AssertionError("pyodbc drops tzinfo: pass naive UTC datetimes")


def _table(tables: dict[str, list[dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    if name not in tables:
        raise FakeProgrammingError(
            "42S02", f"[42S02] Invalid object name '{name.strip('[]')}'. (208)"
        )
    return tables[name]


def _value(column: str, value: Any) -> Any:
    if column in _UUID_COLUMNS and value is not None:
        return uuid.UUID(str(value))
    return bytes(value) if isinstance(value, bytearray) else value


def _out(column: str, value: Any) -> Any:
    # Without pyodbc.native_uuid, UNIQUEIDENTIFIER columns come back as strings.
    return str(value).upper() if column in _UUID_COLUMNS else value


def _matches(row: dict[str, Any], where: str | None, params: tuple[Any, ...]) -> bool:
    if not where:
        return True
    conditions = [part.strip() for part in where.split(" AND ")]
    assert all(part.endswith(" = ?") for part in conditions), where
    columns = [part.removesuffix(" = ?") for part in conditions]
    return all(
        row[col] == _value(col, val) for col, val in zip(columns, params, strict=True)
    )


def _insert(
    tables: dict[str, list[dict[str, Any]]], table: str, columns: str, params: tuple
) -> int:
    rows = _table(tables, table)
    names = [name.strip() for name in columns.split(",")]
    row = {name: _value(name, value) for name, value in zip(names, params, strict=True)}
    key = _KEYS[_short_name(table)]
    if any(all(other[k] == row[k] for k in key) for other in rows):
        raise FakeDatabaseError(
            "23000", f"[23000] Violation of PRIMARY KEY constraint on {table}. (2627)"
        )
    rows.append(row)
    return 1


def _module(server: FakeServer) -> Any:
    class Module:
        Error = FakeError
        InterfaceError = FakeInterfaceError
        DatabaseError = FakeDatabaseError
        OperationalError = FakeOperationalError
        ProgrammingError = FakeProgrammingError
        SQL_WVARCHAR = -9
        SQL_VARBINARY = -3

        @staticmethod
        def drivers() -> list[str]:
            return list(server.drivers)

        @staticmethod
        def connect(text: str, autocommit: bool = False, timeout: int = 0) -> Any:
            server.connection_strings.append(text)
            if server.connect_error is not None:
                raise server.connect_error
            return FakeConnection(server, autocommit)

    return Module()


@pytest.fixture
def fake_sqlserver(monkeypatch) -> FakeServer:
    """An empty in-memory SQL Server that the store reaches through fake pyodbc."""
    from statecheckpoint.blocks import _odbc

    server = FakeServer()
    monkeypatch.setattr(_odbc, "import_pyodbc", lambda: server.module)
    return server


# -- a real server ------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlserver_schema():
    """A fresh SQL schema on the server named by the URL, dropped at the end."""
    if not SQLSERVER_URL:
        pytest.skip("STATECHECKPOINT_SQLSERVER_URL is not set")
    from statecheckpoint.blocks import _tsql
    from statecheckpoint.blocks.sqlserver import SqlServerStore

    schema = f"sc_test_{uuid.uuid4().hex[:10]}"
    store = SqlServerStore.from_url(SQLSERVER_URL, schema_name=schema)
    store.ensure_schema()
    yield schema
    tables = [*_tsql.TABLES.values(), _tsql.BLOBS, _tsql.TAGS]
    _run_admin(store, [f"DROP TABLE {store._sql.qualified(t)}" for t in tables])
    _run_admin(store, [f"DROP SCHEMA [{schema}]"])


@pytest.fixture
def sqlserver_store(sqlserver_schema):
    """An empty store on the real server (its tables emptied before each test)."""
    from statecheckpoint.blocks import _tsql
    from statecheckpoint.blocks.sqlserver import SqlServerStore

    store = SqlServerStore.from_url(SQLSERVER_URL, schema_name=sqlserver_schema)
    tables = [*_tsql.TABLES.values(), _tsql.BLOBS, _tsql.TAGS]
    _run_admin(store, [f"DELETE FROM {store._sql.qualified(t)}" for t in tables])
    return store


def _run_admin(store: Any, statements: list[str]) -> None:
    connection = store._open()
    try:
        connection.autocommit = True
        cursor = connection.cursor()
        for statement in statements:
            cursor.execute(statement)
    finally:
        connection.close()
