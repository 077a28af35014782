"""The SQL Server store, tested without a server: chunk planning, tags, parameter
binding, connection strings, the real driver errors of unixODBC and FreeTDS, and the
whole contract suite over an in-memory stand-in for pyodbc (tests/plugins).

The contract suite runs against a real server only when
``STATECHECKPOINT_SQLSERVER_URL`` names one; see the README section
"The SQL Server store".
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from statecheckpoint import (
    BackendUnavailableError,
    InferenceSession,
    IntegrityError,
    InvalidInputError,
    ModelCheckpoint,
    SqlServerStore,
    StateCheckpointError,
)
from statecheckpoint._codec import MODEL_BLOBS, SESSION_BLOBS, encode_checkpoint
from statecheckpoint.blocks import _odbc, _tsql
from statecheckpoint.blocks._fsutil import Cancelled
from tests import test_store_contract
from tests.plugins.sqlserver import (
    FAKE_PASSWORD,
    SQLSERVER_URL,
    FakeOperationalError,
    FakeServer,
)

# The whole contract suite, once more, over the in-memory server: every statement
# the store sends is run, and checked by ``store`` below.
globals().update(
    {
        name: test
        for name, test in vars(test_store_contract).items()
        if name[:5] == "test_"
    }
)

# Kinds and blob names are parameters too, but they also name tables and columns.
_CONSTANTS = {*_tsql.TABLES, *MODEL_BLOBS, *SESSION_BLOBS}
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=50)


@pytest.fixture
def store(fake_sqlserver: FakeServer):
    """A store over the in-memory server; afterwards, checks that no value was
    ever spliced into SQL text."""
    store = fake_sqlserver.store()
    yield store
    _assert_only_parameters(fake_sqlserver, store)


def _assert_only_parameters(server: FakeServer, store: SqlServerStore) -> None:
    allowed = store._sql.all_texts()
    for sql, params in server.log:
        assert sql in allowed, f"unexpected SQL text: {sql}"
        for value in params:
            if isinstance(value, uuid.UUID):
                forms = (str(value), value.hex, str(value).upper())
                assert not any(form in sql for form in forms)
            elif isinstance(value, str) and value not in _CONSTANTS:
                assert value not in sql


# -- chunk planning -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(chunk=st.integers(1, 1 << 31), pieces=st.integers(0, 300), tail=st.integers(0))
def test_plan_chunks_covers_every_byte_once_in_order(chunk, pieces, tail):
    size = chunk * pieces + tail % chunk

    plan = _tsql.plan_chunks(size, chunk)

    assert sum(length for _, length in plan) == size
    assert [offset for offset, _ in plan] == list(range(0, size, chunk))
    assert all(0 < length <= chunk for _, length in plan)
    assert all(length == chunk for _, length in plan[:-1])
    assert len(plan) == -(-size // chunk)


def test_plan_chunks_edges():
    assert _tsql.plan_chunks(0, 10) == []
    assert _tsql.plan_chunks(10, 10) == [(0, 10)]
    assert _tsql.plan_chunks(11, 10) == [(0, 10), (10, 1)]
    with pytest.raises(ValueError, match="size must be >= 0"):
        _tsql.plan_chunks(-1, 10)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        _tsql.plan_chunks(10, 0)


def test_chunk_rows_stay_far_below_the_2_gib_value_limit():
    assert SqlServerStore().chunk_bytes == 64 << 20
    assert _tsql.MAX_CHUNK_BYTES < 2**31 - 1
    with pytest.raises(ValueError, match="chunk_bytes"):
        SqlServerStore(chunk_bytes=2**31)
    plan = _tsql.plan_chunks(50 << 30, SqlServerStore().chunk_bytes)
    assert len(plan) == 800 and max(length for _, length in plan) == 64 << 20


def test_blob_over_several_chunks_round_trips(fake_sqlserver):
    store = fake_sqlserver.store(chunk_bytes=1024)
    weights = bytes(range(256)) * 20 + b"tail"

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=weights))
    loaded = store.load_checkpoint(checkpoint_id)

    chunks = [r for r in fake_sqlserver.rows(_tsql.BLOBS) if r["blob"] == "weights"]
    assert sorted(r["seq"] for r in chunks) == list(range(6))
    assert max(len(r["data"]) for r in chunks) == 1024
    assert bytes(loaded.weights) == weights
    assert isinstance(loaded.weights, bytearray)


# -- ids and tags -----------------------------------------------------------------


def test_ids_are_checked_before_connecting(fake_sqlserver):
    store = fake_sqlserver.store()

    with pytest.raises(InvalidInputError, match="invalid id"):
        store.load_checkpoint("1'; DROP TABLE x; --")
    with pytest.raises(InvalidInputError, match="invalid id"):
        store.delete_session(b"\x00" * 16)

    assert fake_sqlserver.connection_strings == []


def test_ids_are_stored_as_uniqueidentifier_and_returned_as_uuid(fake_sqlserver):
    store = fake_sqlserver.store()

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))
    (row,) = fake_sqlserver.rows(_tsql.TABLES["models"])
    (info,) = store.list_checkpoints()

    assert isinstance(row["id"], uuid.UUID) and row["id"] == checkpoint_id
    assert isinstance(info.id, uuid.UUID) and info.id == checkpoint_id
    assert "id UNIQUEIDENTIFIER NOT NULL" in " ".join(store._sql.ddl)


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(ANY_TEXT, ANY_TEXT), b=st.tuples(ANY_TEXT, ANY_TEXT))
def test_tag_digests_differ_for_different_pairs(a, b):
    assert len(_tsql.tag_digest(*a)) == 32
    assert (_tsql.tag_digest(*a) == _tsql.tag_digest(*b)) == (a == b)


@pytest.mark.parametrize(
    "value",
    ["x" * 4001, "x" * 9000, "\ud800" * 5000, "🙂" * 3000, "'; DROP TABLE t; --"],
    ids=["4001", "9000", "surrogates", "astral", "quote"],
)
def test_tag_filter_finds_long_and_unencodable_values(fake_sqlserver, value):
    store = fake_sqlserver.store()
    wanted = store.save_session(InferenceSession(tags={"k": value, value: "v"}))
    store.save_session(InferenceSession(tags={"k": value[:-1] + "y"}))

    assert [info.id for info in store.list_sessions(("k", value))] == [wanted]
    assert [info.id for info in store.list_sessions((value, "v"))] == [wanted]
    assert store.list_sessions(("k", value + " ")) == []


# -- parameters -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(st.characters(exclude_categories=()), max_size=5000),
    data=st.binary(max_size=9000),
)
def test_long_values_are_bound_as_max_types(text, data):
    sizes = _tsql.input_sizes([text, data, 7, uuid.uuid4()]) or [None] * 4

    if len(text) > 4000 or len(text.encode("utf-16-le", "surrogatepass")) > 4000:
        assert sizes[0] == (_tsql.SQL_WVARCHAR, 0, 0)
    if len(data) > 8000:
        assert sizes[1] == (_tsql.SQL_VARBINARY, 0, 0)
    assert sizes[2] is None and sizes[3] is None


def test_short_values_keep_the_drivers_binding():
    assert _tsql.input_sizes(["models", b"\x00" * 32, 3]) is None


def test_summary_and_body_longer_than_4000_characters_round_trip(fake_sqlserver):
    store = fake_sqlserver.store()
    tags = {f"key{i}": "v" * 100 for i in range(60)}

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(tags=tags))

    summaries = [
        p[3]
        for s, p in fake_sqlserver.log
        if s.startswith("INSERT INTO") and "summary" in s
    ]
    assert len(summaries[0]) > 4000
    assert store.load_checkpoint(checkpoint_id).tags == tags


def test_every_statement_is_fixed_text(fake_sqlserver):
    store = fake_sqlserver.store()
    secret_tag = {"owner": "'; DELETE FROM x; --", "\ud800": "n" * 5000}

    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=b"w", tags=secret_tag)
    )
    store.list_checkpoints(("owner", secret_tag["owner"]))
    store.load_checkpoint(checkpoint_id)
    store.delete_checkpoint(checkpoint_id)

    _assert_only_parameters(fake_sqlserver, store)
    texts = " ".join(fake_sqlserver.statements())
    assert "DELETE FROM x" not in texts and str(checkpoint_id) not in texts
    assert all(statement.startswith("IF ") for statement in store._sql.ddl)


def test_schema_name_must_be_a_plain_identifier():
    assert SqlServerStore(schema_name="ml_runs").schema_name == "ml_runs"
    for bad in ["", "dbo]; DROP TABLE x; --", "1abc", "a.b", "x" * 65]:
        with pytest.raises(ValueError, match="schema_name"):
            SqlServerStore(schema_name=bad)


# -- transactions -----------------------------------------------------------------


def test_each_operation_is_one_transaction(fake_sqlserver):
    store = fake_sqlserver.store()
    store.prepare()
    before = fake_sqlserver.commits

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w" * 5000))
    assert fake_sqlserver.commits == before + 1
    store.save_checkpoint(ModelCheckpoint(weights=b"x"), existing_id=checkpoint_id)
    assert fake_sqlserver.commits == before + 2
    store.delete_checkpoint(checkpoint_id)
    assert fake_sqlserver.commits == before + 3


def test_a_failed_save_leaves_nothing(fake_sqlserver):
    store = fake_sqlserver.store(chunk_bytes=1024)
    old_id = store.save_checkpoint(ModelCheckpoint(weights=b"old", tags={"v": "1"}))
    before = {name: list(rows) for name, rows in fake_sqlserver.tables.items()}

    def fail_on_third_chunk(sql, params):
        if sql == store._sql.insert_chunk and params[3] == 2:
            return FakeOperationalError("08S01", "[08S01] connection lost")
        return None

    fake_sqlserver.fail = fail_on_third_chunk
    with pytest.raises(BackendUnavailableError, match="connection lost"):
        store.save_checkpoint(ModelCheckpoint(weights=b"n" * 5000))
    with pytest.raises(BackendUnavailableError, match="08S01"):
        store.save_checkpoint(ModelCheckpoint(weights=b"n" * 5000), existing_id=old_id)
    fake_sqlserver.fail = lambda sql, params: None

    assert fake_sqlserver.tables == before
    assert bytes(store.load_checkpoint(old_id).weights) == b"old"


def test_a_cancelled_save_rolls_back(fake_sqlserver):
    store = fake_sqlserver.store(chunk_bytes=1024)
    record = encode_checkpoint(ModelCheckpoint(weights=b"w" * 4096), uuid.uuid4())
    cancel = threading.Event()
    cancel.set()

    with pytest.raises(Cancelled):
        store._write_record(
            record, record.summary_text(dict.fromkeys(record.blobs, "x")), cancel
        )

    assert fake_sqlserver.rows(_tsql.BLOBS) == []
    assert store.load_checkpoint(record.id) is None


def test_overwrite_and_delete_leave_no_orphan_rows(fake_sqlserver):
    store = fake_sqlserver.store(chunk_bytes=1024)
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=b"a" * 5000, tags={"v": "1", "x": "y"})
    )
    store.save_checkpoint(
        ModelCheckpoint(weights=b"b" * 1500, tags={"v": "2"}), existing_id=checkpoint_id
    )

    assert len(fake_sqlserver.rows(_tsql.BLOBS)) == 2
    assert len(fake_sqlserver.rows(_tsql.TAGS)) == 1
    assert store.list_checkpoints(("x", "y")) == []
    assert store.delete_checkpoint(checkpoint_id) is True
    for table in (*_tsql.TABLES.values(), _tsql.BLOBS, _tsql.TAGS):
        assert fake_sqlserver.rows(table) == []


def test_reads_hold_their_locks_until_the_chunks_are_read(fake_sqlserver):
    store = fake_sqlserver.store()
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))
    fake_sqlserver.log.clear()

    store.load_checkpoint(checkpoint_id)

    sent = fake_sqlserver.statements()
    select = sent.index(store._sql.select_record["models"])
    assert store._sql.repeatable_read in sent[:select]
    assert sent.index(store._sql.select_chunks) > select


def test_damaged_chunks_are_reported_with_their_row(fake_sqlserver):
    store = fake_sqlserver.store(chunk_bytes=1024)
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w" * 3000))
    chunks = fake_sqlserver.rows(_tsql.BLOBS)
    chunks[0]["data"] = b"x" + chunks[0]["data"][1:]

    with pytest.raises(IntegrityError, match="fails its xxh3_128") as damaged:
        store.load_checkpoint(checkpoint_id)
    assert "statecheckpoint_blobs" in str(damaged.value)

    fake_sqlserver.rows(_tsql.BLOBS).pop()
    with pytest.raises(IntegrityError, match="has 2048 bytes, expected 3000"):
        store.load_checkpoint(checkpoint_id)


# -- schema -----------------------------------------------------------------------


def test_ensure_schema_is_idempotent_and_tolerates_a_concurrent_create(fake_sqlserver):
    store = fake_sqlserver.store(create_tables=False)
    store.ensure_schema()
    store.ensure_schema()
    fake_sqlserver.fail = lambda sql, params: (
        FakeOperationalError(
            "42S01", "[42S01] There is already an object named x. (2714)"
        )
        if sql.startswith("IF")
        else None
    )

    store.ensure_schema()

    assert set(fake_sqlserver.tables) == {
        store._sql.qualified(t)
        for t in (*_tsql.TABLES.values(), _tsql.BLOBS, _tsql.TAGS)
    }


def test_missing_tables_say_to_run_ensure_schema(fake_sqlserver):
    store = fake_sqlserver.store(create_tables=False)

    with pytest.raises(StateCheckpointError, match=r"run ensure_schema\(\)") as missing:
        store.list_checkpoints()
    assert not isinstance(missing.value, BackendUnavailableError)


# -- connection errors ------------------------------------------------------------


@pytest.fixture
def real_odbc():
    """unixODBC and FreeTDS, as `make install` sets them up."""
    try:
        pyodbc = _odbc.import_pyodbc()
    except StateCheckpointError as exc:
        pytest.fail(f"{exc} (make install sets up unixODBC and FreeTDS)")
    assert "FreeTDS" in pyodbc.drivers(), "make install registers the FreeTDS driver"
    return pyodbc


def _assert_secret_kept(exc: BaseException, *secrets: str) -> None:
    seen = f"{exc} {exc!r} {exc.__cause__} {exc.__cause__!r}"
    for secret in secrets:
        assert secret not in seen


def test_missing_driver_names_server_and_driver_and_is_not_retried(real_odbc):
    store = SqlServerStore(
        server="db.internal", password=SecretStr("pw-Missing-1"), user="sa"
    )

    with pytest.raises(StateCheckpointError, match="db.internal:1433") as missing:
        store.prepare()

    message = str(missing.value)
    assert "ODBC driver 'ODBC Driver 18 for SQL Server' is not installed" in message
    assert "installed drivers: 'FreeTDS'" in message
    assert not isinstance(missing.value, BackendUnavailableError)
    _assert_secret_kept(missing.value, "pw-Missing-1")


def test_missing_dsn_driver_is_a_configuration_error(real_odbc):
    store = SqlServerStore(connection_string=SecretStr("DSN=nope;PWD=pw-Dsn-2"))

    with pytest.raises(StateCheckpointError, match="data source or driver") as missing:
        store.prepare()

    assert not isinstance(missing.value, BackendUnavailableError)
    _assert_secret_kept(missing.value, "pw-Dsn-2")


def test_refused_connection_names_server_and_driver_not_password(real_odbc):
    store = SqlServerStore(
        server="127.0.0.1",
        port=1,
        driver="FreeTDS",
        user="sa",
        password=SecretStr("pw-Refused-3;x"),
        login_timeout_s=5,
    )

    with pytest.raises(BackendUnavailableError, match="127.0.0.1:1") as refused:
        store.list_checkpoints()

    assert "driver 'FreeTDS'" in str(refused.value)
    assert "Unable to connect" in str(refused.value)
    _assert_secret_kept(refused.value, "pw-Refused-3", repr(store))
    assert "pw-Refused-3" not in repr(store)


def test_unknown_host_through_a_connection_string(real_odbc):
    text = "DRIVER={FreeTDS};SERVER=no-such-host.invalid;PORT=1433;UID=sa;PWD={p;w}}4}"
    store = SqlServerStore(connection_string=SecretStr(text), login_timeout_s=5)

    with pytest.raises(BackendUnavailableError, match="no-such-host.invalid:1433"):
        store.prepare()


def test_login_failure_names_the_user(fake_sqlserver):
    fake_sqlserver.connect_error = FakeOperationalError(
        "28000", "[28000] [FreeTDS][SQL Server]Login failed for user 'trainer'. (18456)"
    )
    store = fake_sqlserver.store()

    with pytest.raises(BackendUnavailableError, match="user 'trainer'") as failed:
        store.save_checkpoint(ModelCheckpoint())

    assert "fake-host:1433" in str(failed.value) and "FreeTDS" in str(failed.value)
    _assert_secret_kept(failed.value, FAKE_PASSWORD)


def test_deadlock_victims_are_retryable(fake_sqlserver):
    store = fake_sqlserver.store()
    fake_sqlserver.fail = lambda sql, params: (
        FakeOperationalError("40001", "[40001] chosen as deadlock victim (1205)")
        if sql.startswith("INSERT")
        else None
    )

    with pytest.raises(BackendUnavailableError, match="deadlock victim"):
        store.save_session(InferenceSession(kv_cache=b"kv"))


def test_missing_pyodbc_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyodbc", None)

    with pytest.raises(StateCheckpointError, match=r"statecheckpoint\[sqlserver\]"):
        SqlServerStore(driver="FreeTDS").prepare()


def test_importing_the_package_does_not_import_pyodbc():
    code = (
        "import sys, statecheckpoint; statecheckpoint.SqlServerStore(); "
        "assert 'pyodbc' not in sys.modules, 'pyodbc imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- connection strings -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(max_size=20), min_size=1, max_size=5))
def test_connection_string_values_round_trip(values):
    text = ";".join(f"K{i}={_odbc.odbc_value(v)}" for i, v in enumerate(values))

    parsed = _odbc.parse_connection_string(text)

    assert [parsed[f"k{i}"] for i in range(len(values))] == values


def test_connection_strings_for_each_driver():
    common = dict(server="db", port=1444, database="ml", user="u", password="p;}")
    freetds = _odbc.parse_connection_string(
        _odbc.build_connection_string(
            driver="FreeTDS", trust_server_certificate=True, **common
        )
    )
    microsoft = _odbc.parse_connection_string(
        _odbc.build_connection_string(
            driver="ODBC Driver 18 for SQL Server",
            trust_server_certificate=True,
            **common,
        )
    )

    assert freetds["server"] == "db" and freetds["port"] == "1444"
    assert freetds["tds_version"] == "7.4" and freetds["pwd"] == "p;}"
    assert microsoft["server"] == "db,1444" and microsoft["pwd"] == "p;}"
    assert microsoft["trustservercertificate"] == "yes"
    assert microsoft["encrypt"] == "yes" and microsoft["database"] == "ml"


def test_store_from_url():
    store = SqlServerStore.from_url(
        "mssql://sa:p%40ss%3Bword@db.local:1450/ml?driver=FreeTDS"
        "&trust_server_certificate=yes&schema=runs"
    )

    assert (store.server, store.port, store.database, store.user) == (
        "db.local",
        1450,
        "ml",
        "sa",
    )
    assert store.password.get_secret_value() == "p@ss;word"
    assert store.driver == "FreeTDS" and store.trust_server_certificate
    assert store.schema_name == "runs" and "p@ss" not in repr(store)
    with pytest.raises(InvalidInputError, match="scheme"):
        SqlServerStore.from_url("postgres://db/x")


# -- a real server ----------------------------------------------------------------


@pytest.mark.sqlserver
def test_contract_suite_ran_against_a_real_sql_server(request):
    if not SQLSERVER_URL:
        pytest.skip(
            "SQL Server contract suite not run: STATECHECKPOINT_SQLSERVER_URL is not "
            'set (see the README section "The SQL Server store")'
        )
    store = request.getfixturevalue("sqlserver_store")
    weights = bytes(range(256)) * 400  # past FreeTDS's default TEXTSIZE
    tags = {"long": "\u00e9" * 5000}

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=weights, tags=tags))

    assert bytes(store.load_checkpoint(checkpoint_id).weights) == weights
    assert [i.id for i in store.list_checkpoints(("long", tags["long"]))] == [
        checkpoint_id
    ]
    assert store.delete_checkpoint(checkpoint_id) is True
