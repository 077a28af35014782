"""PostgreSQL fixtures: one throw-away database per test session, one schema per
test, on the server named by ``STATECHECKPOINT_POSTGRES_URL``.

When the server cannot be reached the PostgreSQL tests are skipped with the
reason, except where the environment variable ``CI`` is set: there they fail,
so that CI never passes without having run them. A session killed before its
teardown leaves its database behind; the next session drops it.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import skip_or_fail

POSTGRES_URL = os.environ.get(
    "STATECHECKPOINT_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_PREFIX = "statecheckpoint_test_"
# A live session's database loses its connection while a test restarts the
# server, so only a database older than any test session counts as abandoned.
_ABANDONED_AFTER_S = 6 * 3600


_unavailable = skip_or_fail


@dataclass
class PostgresDatabase:
    """The session's throw-away database."""

    name: str
    conninfo: str

    def connect(self, **kwargs: Any) -> Any:
        """Opens an autocommit connection to the database (close it yourself)."""
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True, **kwargs)

    def store(self, **fields: Any) -> Any:
        """Returns a store on this database, in a fresh schema unless one is given."""
        from statecheckpoint.blocks.postgres import PostgresStore

        fields.setdefault("schema_name", f"t_{uuid.uuid4().hex[:12]}")
        return PostgresStore(connection_string=self.conninfo, **fields)

    def drop_schema(self, schema: str) -> None:
        from psycopg import sql

        with self.connect() as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)
                )
            )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """Creates ``statecheckpoint_test_<time>_<random>`` and drops it after the
    session; first drops what sessions killed before their teardown left."""
    try:
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
    except ImportError:
        _unavailable(
            "psycopg is not installed: pip install 'statecheckpoint[postgres]'"
        )
    settings = conninfo_to_dict(POSTGRES_URL)
    where = f"{settings.get('host', 'localhost')}:{settings.get('port', 5432)}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        _unavailable(
            f"PostgreSQL at {where} cannot be reached ({detail}); start it or set "
            "STATECHECKPOINT_POSTGRES_URL"
        )
    name = f"{_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:8]}"
    with admin:
        _drop_abandoned(admin)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        force = " WITH (FORCE)" if admin.info.server_version >= 130000 else ""
    conninfo = make_conninfo(POSTGRES_URL, dbname=name)
    # Held open all session: a test database without a connection is abandoned.
    keeper = psycopg.connect(conninfo, autocommit=True)
    try:
        yield PostgresDatabase(name, conninfo)
    finally:
        keeper.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}" + force).format(
                    sql.Identifier(name)
                )
            )


def _drop_abandoned(admin: Any) -> None:
    """Drops test databases that nobody is connected to and that are older than
    any test session runs (a live session keeps a connection open, except while
    a test restarts the server)."""
    import psycopg
    from psycopg import sql

    rows = admin.execute(
        "SELECT datname FROM pg_database AS d WHERE datname LIKE %s AND NOT EXISTS "
        "(SELECT 1 FROM pg_stat_activity AS a WHERE a.datname = d.datname)",
        (_PREFIX.replace("_", "\\_") + "%",),
    ).fetchall()
    for (name,) in rows:
        stamp = name[len(_PREFIX) :].split("_")[0]
        if not stamp.isdigit() or time.time() - int(stamp) < _ABANDONED_AFTER_S:
            continue
        # Without FORCE: a session that connects meanwhile makes the drop fail.
        with contextlib.suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


@pytest.fixture
def postgres_store(postgres_database: PostgresDatabase) -> Iterator[Any]:
    """An empty PostgresStore in its own schema, dropped after the test."""
    store = postgres_database.store()
    yield store
    postgres_database.drop_schema(store.schema_name)
