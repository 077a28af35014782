"""Passwords and connection strings never show: not in logs, errors, reprs, JSON
dumps or the parameters Prefect stores for task runs, whether runs fail or pass."""

from __future__ import annotations

import logging
import uuid

import pytest
from pydantic import SecretStr

from statecheckpoint import (
    BackendUnavailableError,
    ModelCheckpoint,
    PostgresStore,
    SqlServerStore,
)
from statecheckpoint.tasks import list_checkpoints, save_checkpoint

SECRET = f"pw-{uuid.uuid4().hex}"

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]


def _unreachable_stores() -> list[object]:
    return [
        PostgresStore(
            host="127.0.0.1", port=1, database="db", user="u", password=SECRET
        ),
        PostgresStore(connection_string=f"postgresql://u:{SECRET}@127.0.0.1:1/db"),
        SqlServerStore(
            server="127.0.0.1",
            port=1,
            database="db",
            user="u",
            password=SECRET,
            driver="FreeTDS",
        ),
        SqlServerStore(
            connection_string=SecretStr(
                f"DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT=1;UID=u;PWD={SECRET}"
            )
        ),
    ]


def _task_run_parameters() -> str:
    """Everything the Prefect API holds about recent task runs, as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            limit=50, sort=TaskRunSort.EXPECTED_START_TIME_DESC
        )
        states = [
            state.model_dump_json()
            for run in runs
            for state in client.read_task_run_states(run.id)
        ]
    return "\n".join([run.model_dump_json() for run in runs] + states)


@pytest.mark.parametrize("index", range(4))
def test_failing_runs_never_show_the_secret(index, caplog):
    store = _unreachable_stores()[index]
    caplog.set_level(logging.DEBUG)
    failing = save_checkpoint.with_options(retries=1, retry_delay_seconds=0)

    with pytest.raises(BackendUnavailableError) as caught:
        failing(store, ModelCheckpoint(weights=b"w"))

    seen = [
        str(caught.value),
        repr(caught.value),
        repr(caught.value.__cause__),
        repr(store),
        str(store),
        store.model_dump_json(),
        caplog.text,
        _task_run_parameters(),
    ]
    for text in seen:
        assert SECRET not in text


def test_succeeding_runs_never_show_the_secret(postgres_database, caplog):
    from psycopg.conninfo import conninfo_to_dict

    caplog.set_level(logging.DEBUG)
    settings = conninfo_to_dict(postgres_database.conninfo)
    with postgres_database.connect() as admin:
        admin.execute(f"CREATE ROLE sc_secret LOGIN SUPERUSER PASSWORD '{SECRET}'")
    try:
        store = PostgresStore(
            host=settings.get("host", "127.0.0.1"),
            port=int(settings.get("port", 5432)),
            database=settings["dbname"],
            user="sc_secret",
            password=SECRET,
            schema_name=f"t_{uuid.uuid4().hex[:12]}",
        )
        saved = save_checkpoint(store, ModelCheckpoint(weights=b"w"))
        listed = list_checkpoints(store)
    finally:
        with postgres_database.connect() as admin:
            admin.execute("DROP OWNED BY sc_secret CASCADE")
            admin.execute("DROP ROLE sc_secret")

    assert [info.id for info in listed] == [saved]
    for text in (
        caplog.text,
        repr(store),
        store.model_dump_json(),
        _task_run_parameters(),
    ):
        assert SECRET not in text
