"""The SQL Server store: checkpoints and sessions in Microsoft SQL Server via ODBC.

Tables (in ``schema_name``, created by :meth:`SqlServerStore.ensure_schema`)::

    statecheckpoint_checkpoints, statecheckpoint_sessions
        id UNIQUEIDENTIFIER, blob_version UNIQUEIDENTIFIER, created_at,
        summary and body (the codec's JSON, in NVARCHAR(MAX))
    statecheckpoint_blobs
        (record_id, version, blob, seq) -> data VARBINARY(MAX), one row per chunk
    statecheckpoint_tags
        (kind, record_id, tag_hash): one SHA-256 per tag, to filter ``list`` by

A save runs in one transaction: it first streams the blobs in chunks under a fresh
``blob_version``, then swaps the record row (``DELETE ... WITH (HOLDLOCK)`` of the
old one, insert of the new one), drops the old version's chunks and rewrites the
tags. The record row is thus locked only for that short final step, and a reader,
which reads the row and then its chunks in one REPEATABLE READ transaction, sees
the old record or the new one. A failed or cancelled save rolls back and leaves
nothing. A delete is one transaction too.

pyodbc is imported on first use only, so ``import statecheckpoint`` works without
it; install it with ``pip install statecheckpoint[sqlserver]`` plus an ODBC driver
(Microsoft's ``msodbcsql18`` or FreeTDS's ``tdsodbc``) and unixODBC.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, field_validator

from statecheckpoint._codec import EncodedRecord, Kind
from statecheckpoint.blocks import _odbc, _tsql
from statecheckpoint.blocks._fsutil import Cancelled
from statecheckpoint.blocks.base import CheckpointStore, StoredRecord, Tag
from statecheckpoint.errors import BackendUnavailableError, StateCheckpointError

logger = logging.getLogger(__name__)

_MISSING_TABLE_STATE = "42S02"
_ALREADY_EXISTS = ("2714", "1913", "2759")


class SqlServerStore(CheckpointStore):
    """Stores checkpoints and sessions in SQL Server: JSON metadata in NVARCHAR(MAX),
    blobs in VARBINARY(MAX) rows of ``chunk_bytes`` each, so any size fits.

    Every value travels as a query parameter; values too long for NVARCHAR(4000)
    or VARBINARY(8000) are bound as MAX types, never truncated. Connection
    problems raise :class:`~statecheckpoint.errors.BackendUnavailableError`
    (the Prefect tasks retry it) naming the server and the driver, never the
    password; a missing driver or pyodbc raises
    :class:`~statecheckpoint.errors.StateCheckpointError`, as retrying cannot
    help.

    Example:
        ```python
        from pydantic import SecretStr
        from statecheckpoint import CheckpointManager, ModelCheckpoint
        from statecheckpoint.blocks import SqlServerStore

        store = SqlServerStore.load("BLOCK_NAME")  # saved in Prefect, or in code:
        store = SqlServerStore(
            server="db.example.internal",
            database="training",
            user="trainer",
            password=SecretStr("..."),
            driver="ODBC Driver 18 for SQL Server",
        )
        store.ensure_schema()
        with CheckpointManager(store) as manager:
            checkpoint_id = manager.save(ModelCheckpoint(epoch=1, weights=b"..."))
        ```
    """

    _block_type_name = "SQL Server Checkpoint Store"
    _description = (
        "Checkpoints and inference sessions in Microsoft SQL Server, through ODBC."
    )

    server: str = Field(
        default="localhost",
        description="Host name or address of the SQL Server; a named instance as "
        "host\\instance (the port is then not used).",
    )
    port: int = Field(default=1433, ge=1, le=65535, description="TCP port.")
    database: str | None = Field(
        default=None,
        description="Database holding the tables; the login's default database "
        "when empty.",
    )
    user: str | None = Field(default=None, description="SQL Server login name.")
    password: SecretStr | None = Field(
        default=None, description="Password of the login."
    )
    connection_string: SecretStr | None = Field(
        default=None,
        description="A complete ODBC connection string. When set it is used as is, "
        "and server, port, database, user, password, driver and "
        "trust_server_certificate are ignored.",
    )
    driver: str = Field(
        default="ODBC Driver 18 for SQL Server",
        description="Installed ODBC driver, as named in odbcinst.ini: 'ODBC Driver "
        "18 for SQL Server' (Microsoft) or 'FreeTDS'.",
    )
    trust_server_certificate: bool = Field(
        default=False,
        description="Accept the server's TLS certificate without validating it "
        "(self-signed certificates, local containers). Applies to Microsoft's "
        "driver; FreeTDS takes its TLS settings from freetds.conf.",
    )
    schema_name: str = Field(
        default="dbo",
        description="SQL schema of the tables; ensure_schema creates it if missing.",
    )
    create_tables: bool = Field(
        default=True,
        description="Create the schema and tables on first use when they are "
        "missing; when off, run ensure_schema() once yourself.",
    )
    chunk_bytes: int = Field(
        default=_tsql.DEFAULT_CHUNK_BYTES,
        ge=1024,
        le=_tsql.MAX_CHUNK_BYTES,
        description="Bytes per stored blob row (default 64 MiB); a blob of any size "
        "is split into rows of this size.",
    )
    login_timeout_s: int = Field(
        default=15, ge=1, le=600, description="Seconds to wait for a connection."
    )

    _prepared: bool = PrivateAttr(default=False)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("schema_name")
    @classmethod
    def _valid_schema(cls, value: str) -> str:
        return _tsql.check_schema_name(value)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> SqlServerStore:
        """Builds a store from ``mssql://user:password@host:port/database?driver=...``.

        Query keys: ``driver``, ``trust_server_certificate``, ``schema``,
        ``chunk_bytes``. Percent-encode special characters in the password.
        """
        settings = _odbc.settings_from_url(url)
        if "password" in settings:
            settings["password"] = SecretStr(settings["password"])
        return cls(**{**settings, **overrides})

    # -- connections ----------------------------------------------------------

    @property
    def _sql(self) -> _tsql.Statements:
        return _tsql.Statements(self.schema_name)

    def _target(self) -> tuple[str, str | None]:
        """Names the server and the driver (None when a DSN names it), for messages."""
        if self.connection_string is None:
            where = self.server if "\\" in self.server else f"{self.server}:{self.port}"
            return where, self.driver
        parts = _odbc.parse_connection_string(self.connection_string.get_secret_value())
        where = parts.get("server") or parts.get("dsn") or "(server not named)"
        if parts.get("port"):
            where = f"{where}:{parts['port']}"
        return where, parts.get("driver")

    def _connection_text(self) -> str:
        if self.connection_string is not None:
            return self.connection_string.get_secret_value()
        return _odbc.build_connection_string(
            driver=self.driver,
            server=self.server,
            port=self.port,
            database=self.database,
            user=self.user,
            password=None
            if self.password is None
            else self.password.get_secret_value(),
            trust_server_certificate=self.trust_server_certificate,
        )

    def _secrets(self) -> list[str]:
        secrets = []
        if self.password is not None:
            secrets.append(self.password.get_secret_value())
        if self.connection_string is not None:
            text = self.connection_string.get_secret_value()
            secrets.append(text)
            secrets.append(_odbc.parse_connection_string(text).get("pwd", ""))
        return [secret for secret in secrets if secret]

    def _describe(self, exc: BaseException) -> str:
        """Returns a driver error's message (which starts with its SQLSTATE) with
        any secret blanked out."""
        args = getattr(exc, "args", ())
        text = str(args[-1]) if args else str(exc)
        for secret in sorted(self._secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _open(self) -> Any:
        """Connects with autocommit off and the session settings applied."""
        pyodbc = _odbc.import_pyodbc()
        where, driver = self._target()
        installed = list(pyodbc.drivers())
        if driver is not None and not _odbc.installed(driver, installed):
            raise _odbc.missing_driver(where, driver, installed)
        logger.debug("connecting to SQL Server at %s with driver %s", where, driver)
        try:
            connection = pyodbc.connect(
                self._connection_text(), autocommit=False, timeout=self.login_timeout_s
            )
        except pyodbc.Error as exc:
            raise self._connect_error(exc, where, driver, installed) from exc
        try:
            connection.cursor().execute(self._sql.session_setup)
        except pyodbc.Error as exc:
            connection.close()
            raise self._operation_error(exc, "set up the session") from exc
        return connection

    def _connect_error(
        self, exc: Exception, where: str, driver: str | None, installed: list[str]
    ) -> StateCheckpointError:
        detail = self._describe(exc)
        state = exc.args[0] if len(exc.args) > 1 else ""
        if state in _odbc.MISSING_DRIVER_STATES or "can't open lib" in detail.lower():
            return _odbc.missing_driver(where, driver, installed, detail)
        if state in _odbc.LOGIN_STATES or "login failed" in detail.lower():
            user = self.user if self.connection_string is None else None
            who = f" for user {user!r}" if user else ""
            return BackendUnavailableError(
                f"login to SQL Server at {where} ({_odbc.via(driver)}) failed{who}: "
                f"{detail}; check the user, the password and the database"
            )
        return BackendUnavailableError(
            f"cannot connect to SQL Server at {where} ({_odbc.via(driver)}): {detail}; "
            "check that the server runs and that host and port are right"
        )

    def _operation_error(self, exc: Exception, action: str) -> StateCheckpointError:
        where, driver = self._target()
        detail = self._describe(exc)
        state = exc.args[0] if len(exc.args) > 1 else ""
        if state == _MISSING_TABLE_STATE:
            return StateCheckpointError(
                f"SQL Server at {where}: cannot {action}, a table is missing in "
                f"schema {self.schema_name!r} ({detail}); run ensure_schema() or "
                "set create_tables"
            )
        return BackendUnavailableError(
            f"SQL Server at {where} ({_odbc.via(driver)}): cannot {action}: {detail}"
        )

    @contextmanager
    def _transaction(self, action: str, *, repeatable: bool = False) -> Iterator[Any]:
        """Yields a cursor in a transaction, committed on success, else rolled back.

        Args:
            action: What the transaction does, for error messages.
            repeatable: Hold shared locks until the end (REPEATABLE READ) instead
                of READ COMMITTED.
        """
        self.prepare()
        pyodbc = _odbc.import_pyodbc()
        connection = self._open()
        sql = self._sql
        try:
            cursor = connection.cursor()
            try:
                level = sql.repeatable_read if repeatable else sql.read_committed
                self._run(cursor, level)
                yield cursor
                connection.commit()
            except BaseException:
                _quietly(connection.rollback)
                raise
        except pyodbc.Error as exc:
            raise self._operation_error(exc, action) from exc
        finally:
            _quietly(connection.close)

    @staticmethod
    def _run(cursor: Any, sql: str, *params: Any) -> Any:
        cursor.setinputsizes(_tsql.input_sizes(params))
        return cursor.execute(sql, *params)

    # -- set-up ---------------------------------------------------------------

    def prepare(self) -> None:
        """Connects once and, with ``create_tables``, creates missing tables.

        Raises:
            BackendUnavailableError: When the server cannot be reached or the
                login fails, naming server and driver.
            StateCheckpointError: When pyodbc or the ODBC driver is not installed.
        """
        with self._lock:
            if self._prepared:
                return
            if self.create_tables:
                self._create_schema()
            else:
                _quietly_close(self._open())
            self._prepared = True

    def ensure_schema(self) -> None:
        """Creates the SQL schema, tables and index when missing; safe to repeat.

        Raises:
            BackendUnavailableError: When the server cannot be reached.
        """
        with self._lock:
            self._create_schema()

    def _create_schema(self) -> None:
        pyodbc = _odbc.import_pyodbc()
        connection = self._open()
        try:
            connection.autocommit = True
            cursor = connection.cursor()
            for statement in self._sql.ddl:
                try:
                    cursor.execute(statement)
                except pyodbc.Error as exc:
                    # Another process created the same object between the check
                    # and the CREATE.
                    if not any(code in str(exc) for code in _ALREADY_EXISTS):
                        raise self._operation_error(exc, "create the tables") from exc
            logger.info("SQL Server tables ready in schema %s", self.schema_name)
        finally:
            _quietly(connection.close)

    # -- primitives -----------------------------------------------------------

    def _blob_location(self, kind: Kind, record_id: uuid.UUID, blob: str) -> str:
        where, _ = self._target()
        table = self._sql.qualified(_tsql.BLOBS)
        return f"{where} {table} record_id={record_id} blob={blob!r}"

    def _write_record(
        self, record: EncodedRecord, summary_text: str, cancel: threading.Event
    ) -> None:
        sql, kind, rid = self._sql, record.kind, record.id
        version = uuid.uuid4()
        with self._transaction(f"save {kind}/{rid}") as cursor:
            for name, view in record.blobs.items():
                chunks = _tsql.plan_chunks(len(view), self.chunk_bytes)
                for seq, (offset, length) in enumerate(chunks):
                    if cancel.is_set():
                        raise Cancelled(f"cancelled while saving {kind}/{rid}")
                    # pyodbc binds bytes, not memoryviews: one chunk copied at a time.
                    data = bytes(view[offset : offset + length])
                    self._run(cursor, sql.insert_chunk, rid, version, name, seq, data)
            old = self._run(cursor, sql.delete_record[kind], rid).fetchall()
            for (old_version,) in old:
                self._run(cursor, sql.delete_chunks, rid, _as_uuid(old_version))
            self._run(cursor, sql.delete_tags, kind, rid)
            created = record.created_at.replace(tzinfo=None)
            self._run(
                cursor,
                sql.insert_record[kind],
                rid,
                version,
                created,
                summary_text,
                record.body_text,
            )
            for key, value in record.tags.items():
                self._run(
                    cursor, sql.insert_tag, kind, rid, _tsql.tag_digest(key, value)
                )
        if old:
            logger.debug("replaced %s/%s", kind, rid)

    def _read_record(
        self,
        kind: Kind,
        record_id: uuid.UUID,
        cancel: threading.Event,
        digests: dict[str, str] | None = None,
    ) -> StoredRecord | None:
        sql = self._sql
        # REPEATABLE READ holds the row's shared lock until the chunks are read, so
        # an overwrite cannot swap versions in between.
        action = f"load {kind}/{record_id}"
        with self._transaction(action, repeatable=True) as cursor:
            row = self._run(cursor, sql.select_record[kind], record_id).fetchone()
            if row is None:
                return None
            summary_text, body_text, version = row[0], row[1], _as_uuid(row[2])
            try:
                sizes = {
                    name: int(meta["size"])
                    for name, meta in json.loads(summary_text)["blobs"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError):
                return summary_text, body_text, {}  # the base reports the damage
            blobs = {
                name: self._read_blob(cursor, record_id, version, name, size, cancel)
                for name, size in sizes.items()
            }
        return summary_text, body_text, blobs

    def _read_blob(
        self,
        cursor: Any,
        record_id: uuid.UUID,
        version: uuid.UUID,
        name: str,
        size: int,
        cancel: threading.Event,
    ) -> bytearray:
        """Assembles a blob's chunks into one buffer of the expected size.

        Chunks that do not add up come back at their true total length, so that
        the size check names the damage.
        """
        data = bytearray(size)
        pos = 0
        self._run(cursor, self._sql.select_chunks, record_id, version, name)
        while (row := cursor.fetchone()) is not None:
            if cancel.is_set():
                raise Cancelled(f"cancelled while reading {record_id}/{name}")
            chunk = row[1]
            data[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if pos < len(data):
            del data[pos:]
        return data

    def _list_summaries(self, kind: Kind, tag: Tag | None) -> list[str]:
        sql = self._sql
        with self._transaction(f"list {kind}") as cursor:
            if tag is None:
                rows = self._run(cursor, sql.list_all[kind]).fetchall()
            else:
                digest = _tsql.tag_digest(*tag)
                rows = self._run(cursor, sql.list_tagged[kind], kind, digest).fetchall()
        return [row[0] for row in rows]

    def _delete_record(self, kind: Kind, record_id: uuid.UUID) -> bool:
        sql = self._sql
        with self._transaction(f"delete {kind}/{record_id}") as cursor:
            old = self._run(cursor, sql.delete_record[kind], record_id).fetchall()
            for (version,) in old:
                self._run(cursor, sql.delete_chunks, record_id, _as_uuid(version))
            self._run(cursor, sql.delete_tags, kind, record_id)
        return bool(old)


def _as_uuid(value: Any) -> uuid.UUID:
    """Returns a UNIQUEIDENTIFIER as read (a UUID or its string) as ``uuid.UUID``."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:  # cleanup after an error already raised
        logger.debug("ignored an error while cleaning up", exc_info=True)


def _quietly_close(connection: Any) -> None:
    _quietly(connection.close)
