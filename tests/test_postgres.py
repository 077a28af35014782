"""PostgreSQL-specific behaviour; the shared contract runs in test_store_contract."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid

import anyio
import pytest
from pydantic import SecretStr

from statecheckpoint import (
    BackendUnavailableError,
    InferenceSession,
    ModelCheckpoint,
    PostgresStore,
    StateCheckpointError,
    _codec,
)
from statecheckpoint.blocks import _postgres_sql

pytestmark = pytest.mark.postgres

SECRET = "s3cr3t-Pa55;word"
HIGH, LOW = chr(0xD800), chr(0xDFFF)  # lone surrogates (ruff cannot tell them apart)
MIB = 1 << 20


def _count(database, sql: str, *params) -> int:
    with database.connect() as connection:
        return connection.execute(sql, params).fetchone()[0]


def _chunk_rows(database, store, record_id) -> int:
    return _count(
        database,
        f'SELECT count(*) FROM "{store.schema_name}".statecheckpoint_chunks '
        "WHERE record_id = %s",
        record_id,
    )


def _record_rows(database, store, record_id) -> int:
    return _count(
        database,
        f'SELECT count(*) FROM "{store.schema_name}".statecheckpoint_records '
        "WHERE id = %s",
        record_id,
    )


def _large_objects(database) -> int:
    return _count(database, "SELECT count(*) FROM pg_largeobject_metadata")


def _terminate_copy(database, schema: str) -> int:
    """Kills the backend running the store's COPY in ``schema``; returns its pid."""
    with database.connect() as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE %s",
            (f'COPY "{schema}".statecheckpoint_chunks%FROM STDIN%',),
        ).fetchall()
        assert len(rows) == 1, rows
        (pid,) = rows[0]
        assert connection.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[
            0
        ]
        for _ in range(100):
            gone = connection.execute(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()[0]
            if gone:
                return pid
            time.sleep(0.05)
    raise AssertionError(f"backend {pid} survived pg_terminate_backend")


class _KillOnCheck(threading.Event):
    """A cancel event that never cancels: on its nth check it kills the backend
    that is saving, from another connection, and lets the save go on."""

    def __init__(self, database, schema: str, nth: int) -> None:
        super().__init__()
        self.database, self.schema, self.nth = database, schema, nth
        self.checks = 0
        self.killed: int | None = None

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks == self.nth:
            self.killed = _terminate_copy(self.database, self.schema)
        return False


class _CancelOnCheck(threading.Event):
    def __init__(self, nth: int) -> None:
        super().__init__()
        self.nth, self.checks = nth, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks >= self.nth


# -- atomicity ------------------------------------------------------------------


def test_postgres_killed_save_leaves_no_row_chunk_or_large_object(postgres_database):
    store = postgres_database.store(chunk_bytes=64 * 1024)
    store.prepare()
    objects_before = _large_objects(postgres_database)
    record = _codec.encode_checkpoint(
        ModelCheckpoint(weights=os.urandom(4 * MIB), tags={"run": "killed"}),
        uuid.uuid4(),
    )
    cancel = _KillOnCheck(postgres_database, store.schema_name, nth=10)

    with pytest.raises(BackendUnavailableError, match=postgres_database.name):
        store.write_encoded(record, cancel=cancel)

    assert cancel.killed is not None
    assert _record_rows(postgres_database, store, record.id) == 0
    assert _chunk_rows(postgres_database, store, record.id) == 0
    assert _large_objects(postgres_database) == objects_before
    assert store.load_checkpoint(record.id) is None
    assert store.list_checkpoints(("run", "killed")) == []
    postgres_database.drop_schema(store.schema_name)


def test_postgres_killed_overwrite_keeps_the_old_record(postgres_database):
    store = postgres_database.store(chunk_bytes=64 * 1024)
    old_weights = os.urandom(300 * 1024)
    record_id = store.save_checkpoint(ModelCheckpoint(epoch=1, weights=old_weights))
    old_rows = _chunk_rows(postgres_database, store, record_id)
    record = _codec.encode_checkpoint(
        ModelCheckpoint(epoch=2, weights=os.urandom(4 * MIB)), record_id
    )

    with pytest.raises(BackendUnavailableError, match="cannot save"):
        store.write_encoded(
            record, cancel=_KillOnCheck(postgres_database, store.schema_name, nth=5)
        )
    loaded = store.load_checkpoint(record_id)

    assert loaded.epoch == 1 and loaded.weights == old_weights
    assert _chunk_rows(postgres_database, store, record_id) == old_rows == 5
    postgres_database.drop_schema(store.schema_name)


def test_postgres_cancel_between_chunks_rolls_back(postgres_database):
    store = postgres_database.store(chunk_bytes=4096)
    record = _codec.encode_session(
        InferenceSession(kv_cache=os.urandom(64 * 1024)), uuid.uuid4()
    )

    with pytest.raises(StateCheckpointError, match="cancelled while saving"):
        store.write_encoded(record, cancel=_CancelOnCheck(nth=8))

    assert _record_rows(postgres_database, store, record.id) == 0
    assert _chunk_rows(postgres_database, store, record.id) == 0
    postgres_database.drop_schema(store.schema_name)


async def test_postgres_cancelled_async_save_leaves_nothing(
    postgres_database, monkeypatch
):
    store = postgres_database.store(chunk_bytes=64 * 1024)
    store.prepare()
    original = _postgres_sql.write_chunks

    class SlowCopy:
        def __init__(self, copy):
            self.copy = copy

        def write(self, buffer):
            time.sleep(0.005)
            self.copy.write(buffer)

    def slow_write_chunks(copy, *args):
        return original(SlowCopy(copy), *args)

    monkeypatch.setattr(_postgres_sql, "write_chunks", slow_write_chunks)
    checkpoint = ModelCheckpoint(weights=os.urandom(4 * MIB), tags={"a": "sync"})

    with anyio.move_on_after(0.3) as scope:
        await store.asave_checkpoint(checkpoint)
    # The worker stops at its next chunk and its transaction is rolled back.
    for _ in range(200):
        busy = _count(
            postgres_database,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'COPY %%' AND pid <> pg_backend_pid()",
        )
        if not busy:
            break
        await anyio.sleep(0.05)

    assert scope.cancelled_caught
    assert busy == 0
    assert store.list_checkpoints() == []
    assert (
        _count(
            postgres_database,
            f'SELECT count(*) FROM "{store.schema_name}".statecheckpoint_chunks',
        )
        == 0
    )
    postgres_database.drop_schema(store.schema_name)


# -- blobs ------------------------------------------------------------------------


def test_postgres_blobs_span_chunk_rows_and_delete_frees_them(postgres_database):
    store = postgres_database.store(chunk_bytes=1024)
    weights = os.urandom(10_000)
    kv = os.urandom(3000)
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=weights, optimizer_state=b"o" * 1024)
    )
    session_id = store.save_session(InferenceSession(kv_cache=kv))

    assert _chunk_rows(postgres_database, store, checkpoint_id) == 10 + 1
    assert _chunk_rows(postgres_database, store, session_id) == 3
    assert store.load_checkpoint(checkpoint_id).weights == weights
    assert store.load_session(session_id).kv_cache == kv

    store.save_checkpoint(
        ModelCheckpoint(weights=b"w" * 2048), existing_id=checkpoint_id
    )
    assert _chunk_rows(postgres_database, store, checkpoint_id) == 2
    assert store.delete_checkpoint(checkpoint_id) is True
    assert _chunk_rows(postgres_database, store, checkpoint_id) == 0
    assert _record_rows(postgres_database, store, checkpoint_id) == 0
    assert _chunk_rows(postgres_database, store, session_id) == 3
    postgres_database.drop_schema(store.schema_name)


def test_postgres_save_and_load_add_no_second_copy(postgres_database):
    store = postgres_database.store(chunk_bytes=MIB)
    weights = os.urandom(32 * MIB)

    tracemalloc.start()
    try:
        checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=weights))
        _, save_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        loaded = store.load_checkpoint(checkpoint_id)
        _, load_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert loaded.weights == weights
    assert save_peak < 4 * MIB
    assert load_peak < 32 * MIB + 4 * MIB
    postgres_database.drop_schema(store.schema_name)


@pytest.mark.slow
def test_postgres_blob_over_2gb_round_trips(postgres_database):
    # Only booleans reach the asserts: a failing assert would otherwise have
    # pytest render gigabytes.
    store = postgres_database.store()
    size = (2 << 30) + MIB + 7
    data = bytearray(size)
    block = memoryview(os.urandom(64 * MIB))
    for start in range(0, size, len(block)):
        end = min(start + len(block), size)
        data[start:end] = block[: end - start]
    for offset in range(0, size - 8, MIB):  # every chunk differs from every other
        data[offset : offset + 8] = offset.to_bytes(8, "little")

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=data))
    weights = store.load_checkpoint(checkpoint_id).weights
    loaded_size, same = len(weights), weights == data
    del weights
    assert loaded_size == size
    assert same

    # A session past the 1 GB a single bytea can hold, from a view of the same bytes.
    kv = memoryview(data)[: (1 << 30) + 12_345]
    session_id = store.save_session(InferenceSession(kv_cache=kv))
    cache = store.load_session(session_id).kv_cache
    same = cache == kv
    del cache
    assert same

    largest = _count(
        postgres_database,
        f'SELECT max(octet_length(data)) FROM "{store.schema_name}".'
        "statecheckpoint_chunks",
    )
    assert largest == store.chunk_bytes
    assert store.delete_checkpoint(checkpoint_id) is True
    assert store.delete_session(session_id) is True
    assert _chunk_rows(postgres_database, store, checkpoint_id) == 0
    assert _chunk_rows(postgres_database, store, session_id) == 0
    postgres_database.drop_schema(store.schema_name)


# -- metadata and tags ------------------------------------------------------------


def test_postgres_awkward_tags_filter_exactly_in_sql(postgres_store):
    a = postgres_store.save_checkpoint(
        ModelCheckpoint(tags={HIGH: "a", LOW: "b", "k": "\x00", "\ufffd": "x"})
    )
    b = postgres_store.save_checkpoint(
        ModelCheckpoint(tags={HIGH: "b", "k": "\ufffd", "plain": "\\u0000"})
    )
    cases = [
        ((HIGH, "a"), [a]),
        ((LOW, "b"), [a]),
        ((LOW, "a"), []),
        (("k", "\x00"), [a]),
        (("k", "\ufffd"), [b]),
        (("plain", "\\u0000"), [b]),
        (("plain", "\x00"), []),
        (("\ufffd", "x"), [a]),
        ((HIGH, "b"), [b]),
    ]

    for tag, expected in cases:
        # The SQL filter alone is exact, before the base class re-checks.
        summaries = postgres_store._list_summaries("models", tag)
        found = [_codec.parse_summary(text)["id"] for text in summaries]
        assert found == [str(i) for i in expected], tag
        assert [info.id for info in postgres_store.list_checkpoints(tag)] == expected


def test_postgres_plain_tags_read_naturally_in_sql(postgres_store, postgres_database):
    postgres_store.save_session(InferenceSession(tags={"user": "zoë", "odd": "\x00"}))

    with postgres_database.connect() as connection:
        (tags,) = connection.execute(
            f'SELECT tags FROM "{postgres_store.schema_name}".statecheckpoint_records'
        ).fetchone()

    assert tags == {"user": "zoë", "odd": "\ufffd\\u0000"}


def test_postgres_tag_filter_uses_the_gin_index(postgres_store, postgres_database):
    from psycopg.types.json import Jsonb

    postgres_store.save_checkpoint(ModelCheckpoint(tags={"run": "3"}))
    statements = _postgres_sql.Statements(postgres_store.schema_name)

    with postgres_database.connect() as connection:
        connection.execute(
            f"INSERT INTO {statements.records} "
            "SELECT 'models', gen_random_uuid(), now(), "
            "jsonb_build_object('run', i::text), '{}', '{}' "
            "FROM generate_series(1000, 5000) AS i"
        )
        connection.execute(f"ANALYZE {statements.records}")
        plan = connection.execute(
            "EXPLAIN " + statements.list_tagged, ("models", Jsonb({"run": "3"}))
        ).fetchall()

    assert "statecheckpoint_records_tags" in "\n".join(row[0] for row in plan)
    assert len(postgres_store.list_checkpoints(("run", "3"))) == 1


def test_postgres_metadata_is_stored_as_the_codec_text(
    postgres_store, postgres_database
):
    checkpoint_id = postgres_store.save_checkpoint(
        ModelCheckpoint(loss=float("nan"), tags={"\x00": "\ud800"})
    )

    with postgres_database.connect() as connection:
        summary, created_at = connection.execute(
            f'SELECT summary, created_at FROM "{postgres_store.schema_name}".'
            "statecheckpoint_records WHERE id = %s",
            (checkpoint_id,),
        ).fetchone()

    assert '"loss":NaN' in summary and '"\\u0000":"\\ud800"' in summary
    assert created_at == postgres_store.load_checkpoint(checkpoint_id).created_at


# -- schema -----------------------------------------------------------------------


def test_postgres_ensure_schema_is_safe_from_concurrent_callers(postgres_database):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    stores = [postgres_database.store(schema_name=schema) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def create(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.ensure_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stores[0].ensure_schema()

    assert errors == []
    checkpoint_id = stores[1].save_checkpoint(ModelCheckpoint(weights=b"w"))
    assert stores[2].load_checkpoint(checkpoint_id).weights == b"w"
    postgres_database.drop_schema(schema)


def test_postgres_missing_tables_without_create_tables_say_what_to_run(
    postgres_database,
):
    store = postgres_database.store(create_tables=False)

    with pytest.raises(StateCheckpointError, match="run ensure_schema"):
        store.list_checkpoints()
    store.ensure_schema()

    assert store.list_checkpoints() == []
    postgres_database.drop_schema(store.schema_name)


def test_postgres_schema_name_is_checked():
    with pytest.raises(ValueError, match="schema_name"):
        PostgresStore(schema_name="")


# -- connections and secrets ------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {
            "host": "127.0.0.1",
            "port": 1,
            "database": "nope",
            "user": "trainer",
            "password": SecretStr(SECRET),
        },
        {
            "connection_string": SecretStr(
                f"postgresql://trainer:{SECRET}@127.0.0.1:1/nope"
            )
        },
        {
            "connection_string": SecretStr(
                f"host=127.0.0.1 port=1 dbname=nope password='{SECRET}'"
            )
        },
    ],
    ids=["fields", "url", "keywords"],
)
def test_postgres_connection_failure_names_host_and_database_not_password(fields):
    store = PostgresStore(connect_timeout_s=2, **fields)

    with pytest.raises(
        BackendUnavailableError, match=r"127\.0\.0\.1:1, database 'nope'"
    ) as info:
        store.list_checkpoints()

    text, error = "", info.value
    while error is not None:
        text += f"{error} {error!r} "
        error = error.__cause__ or error.__context__
    assert SECRET not in text
    assert SECRET not in repr(store) and SECRET not in str(store)
    assert SECRET not in store.model_dump_json()


def test_postgres_unparsable_connection_string_hides_it():
    store = PostgresStore(connection_string=SecretStr(f"password={SECRET} bogus"))

    with pytest.raises(StateCheckpointError, match="cannot be parsed") as info:
        store.prepare()

    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_postgres_without_psycopg_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails

    with pytest.raises(StateCheckpointError, match=r"statecheckpoint\[postgres\]"):
        PostgresStore().list_checkpoints()


def test_postgres_import_statecheckpoint_does_not_import_psycopg():
    code = (
        "import sys, statecheckpoint\n"
        "assert statecheckpoint.PostgresStore\n"
        "assert 'psycopg' not in sys.modules, 'psycopg was imported'\n"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
