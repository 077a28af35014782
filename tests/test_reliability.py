"""Failures the way production meets them: kill -9, racing writers, lost stores,
hostile input. Each test names the failure it reproduces."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statecheckpoint import (
    CheckpointPointer,
    FileSystemStore,
    HyperParameters,
    InvalidInputError,
    MergeRule,
    ModelCheckpoint,
    TokenizerData,
)
from tests.helpers import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
KILL_TRIALS = int(os.environ.get("STATECHECKPOINT_KILL_TRIALS", "50"))


def _child(mode: str, store, tmp_path: Path, *args: str, **kwargs) -> subprocess.Popen:
    pickled = tmp_path / f"store-{uuid.uuid4().hex}.pickle"
    pickled.write_bytes(pickle.dumps((type(store), store.model_dump())))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.child", mode, str(pickled), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _reopen(store):
    """The same store as a new process would open it (start-up clean-up included)."""
    fresh = type(store)(**store.model_dump())
    fresh.prepare()
    return fresh


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.timeout(2400)  # 50 child processes, each importing Prefect and numpy
@pytest.mark.usefixtures("prefect_server")
def test_kill_9_during_background_saves_loses_nothing_listed(store, tmp_path):
    """SIGKILL at random points while saves run: whatever is listed loads and
    verifies, the pointer names a loadable checkpoint, leftovers are cleaned."""
    rng = random.Random(20261203)
    pointers_seen = 0
    for trial in range(KILL_TRIALS):
        name = f"kill-{trial}-{uuid.uuid4().hex[:6]}"
        child = _child("save_forever", store, tmp_path, name)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.2, 3.0))
        child.send_signal(signal.SIGKILL)
        child.wait()

        reopened = _reopen(store)
        listed = reopened.list_checkpoints()
        assert reopened.verify() == [], f"trial {trial}: {child.stderr.read()[-2000:]}"
        for info in listed:
            assert reopened.load_checkpoint(info.id) is not None
        pointer = CheckpointPointer.read(name)
        if pointer is not None:
            pointers_seen += 1
            assert pointer.checkpoint_id in {info.id for info in listed}
        if isinstance(reopened, FileSystemStore):
            assert list((reopened.active_root / ".staging").iterdir()) == []
    assert pointers_seen > 0, "no trial got as far as a durable save"


@pytest.mark.slow
def test_two_processes_overwriting_one_id_leave_one_whole_checkpoint(store, tmp_path):
    """Racing overwrites of the same id: the survivor is whole, from one writer."""
    record_id = str(uuid.uuid4())
    writers = [_child("overwrite", store, tmp_path, record_id, w, "50") for w in "AB"]
    for child in writers:
        _, err = child.communicate(timeout=600)
        assert child.returncode == 0, err

    loaded = store.load_checkpoint(record_id)
    writer, epoch = loaded.tags["writer"], loaded.epoch

    assert bytes(loaded.weights) == f"{writer}:{epoch};".encode() * 20_000
    assert [info.id for info in store.list_checkpoints()] == [uuid.UUID(record_id)]


@pytest.mark.slow
def test_two_processes_saving_distinct_ids_keep_all(store, tmp_path):
    """Concurrent writers of different ids: every checkpoint is there, once."""
    writers = [_child("save_many", store, tmp_path, w, "40") for w in "AB"]
    ids: list[uuid.UUID] = []
    for child in writers:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        ids += [uuid.UUID(line) for line in out.split()]

    listed = [info.id for info in store.list_checkpoints()]

    assert len(ids) == 80 and sorted(listed) == sorted(ids)


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_exit_with_failed_background_saves_names_them_on_stderr(
    filesystem_store, tmp_path
):
    """A process exits with saves queued that cannot succeed: stderr names each."""
    child = _child("exit_with_pending", filesystem_store, tmp_path)
    out, err = child.communicate(timeout=300)

    lost = out.split()
    assert child.returncode == 0, err
    assert len(lost) == 2
    assert "background save(s) were lost at exit" in err
    assert all(record_id in err for record_id in lost)


def test_permission_denied_root_uses_the_fallback(tmp_path):
    """Permission denied (not a read-only mount): a root owned by another user and
    a process without the override capability, as a non-root user would be. The
    fallback is used when set, else start-up fails clearly."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        skip_or_fail("needs root and setpriv to drop the DAC override capability")
    root = tmp_path / "owned-by-nobody"
    root.mkdir(mode=0o755)
    os.chown(root, 65534, 65534)
    fallback = tmp_path / "fallback"
    script = (
        "from statecheckpoint import FileSystemStore, BackendUnavailableError\n"
        f"s = FileSystemStore(root={str(root)!r}, fallback_root={str(fallback)!r})\n"
        "print(s.active_root)\n"
        f"try:\n    FileSystemStore(root={str(root)!r}).prepare()\n"
        "except BackendUnavailableError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
        + [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == str(fallback)
    assert "Permission denied" in lines[1] and str(root) in lines[1]
    assert str(root) in done.stderr and str(fallback) in done.stderr  # the WARNING


_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_settings
@given(value=st.one_of(st.text(max_size=40), st.uuids().map(str), st.uuids()))
def test_any_id_is_either_a_uuid_or_refused_before_io(store, value):
    try:
        expected = uuid.UUID(str(value))
        valid = str(expected) == str(value).lower()
    except ValueError:
        valid = False

    if valid:
        assert store.load_checkpoint(value) is None
    else:
        with pytest.raises(InvalidInputError, match="invalid id"):
            store.load_checkpoint(value)


@_settings
@given(
    tags=st.dictionaries(
        st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=5
    ),
    vocab=st.lists(st.text(max_size=12), max_size=20, unique=True),
    loss=st.floats(allow_nan=True, allow_infinity=True),
    extra=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)
def test_metadata_round_trips_exactly_or_is_refused(store, tags, vocab, loss, extra):
    tokenizer = TokenizerData(
        token_to_id={text: n for n, text in enumerate(vocab)},
        id_to_token=dict(enumerate(vocab)),
        merge_rules=[MergeRule(a, b) for a, b in zip(vocab, vocab[::-1], strict=True)],
    )
    checkpoint = ModelCheckpoint(
        loss=loss,
        tags=tags,
        tokenizer=tokenizer,
        hyperparameters=HyperParameters(extra=extra),
    )

    checkpoint_id = store.save_checkpoint(checkpoint)
    loaded = store.load_checkpoint(checkpoint_id)

    assert loaded.tags == tags
    assert loaded.tokenizer == tokenizer
    assert repr(loaded.loss) == repr(loss)
    assert repr(loaded.hyperparameters.model_extra["extra"]) == repr(extra)
    assert store.list_checkpoints(next(iter(tags.items()), None))[0].id is not None


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_postgres_restarted_during_a_save_the_retry_succeeds(postgres_database):
    """The server restarts mid-COPY: the task's retry saves once it is back, and
    nothing of the failed attempt remains (no row, no chunk)."""
    import threading

    from statecheckpoint.tasks import save_checkpoint

    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        skip_or_fail("pg_ctlcluster is needed to restart the local server")
    store = postgres_database.store()
    store.ensure_schema()
    payload = os.urandom(1 << 20) * 300
    task = save_checkpoint.with_options(retries=5, retry_delay_seconds=3)
    outcome: dict[str, object] = {}

    def save() -> None:
        try:
            state = task(
                store, ModelCheckpoint(epoch=1, weights=payload), return_state=True
            )
            outcome["run"] = state.state_details.task_run_id
            outcome["id"] = state.result()
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    saver = threading.Thread(target=save)
    saver.start()
    with postgres_database.connect() as watcher:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            copying = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'COPY%%'"
            ).fetchone()[0]
            if copying:
                break
            time.sleep(0.05)
        assert copying, "the save never reached its COPY"
    _pg_ctl("restart")
    saver.join(600)

    assert "error" not in outcome, outcome.get("error")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        attempts = client.read_task_run(outcome["run"]).run_count
    assert attempts >= 2, "the restart should have failed the first attempt"
    saved = outcome["id"]
    loaded = store.load_checkpoint(saved)
    assert bytes(loaded.weights) == payload
    with postgres_database.connect() as check:
        schema = store.schema_name
        rows = check.execute(
            f'SELECT id FROM "{schema}".statecheckpoint_records'
        ).fetchall()
        stray = check.execute(
            f'SELECT count(*) FROM "{schema}".statecheckpoint_chunks '
            "WHERE record_id <> %s",
            (saved,),
        ).fetchone()[0]
    assert rows == [(saved,)]
    assert stray == 0


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    "backend", ["filesystem", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_store_gone_mid_queue_every_failed_save_is_reported(request, backend):
    """Background saves queued while the store goes away (root replaced by a file,
    database stopped): each reaches on_error and flush(), none is listed."""
    from statecheckpoint import (
        BackgroundSaveError,
        BackgroundSaveOptions,
        CheckpointManager,
    )

    store = request.getfixturevalue(f"{backend}_store")
    errors: list[uuid.UUID] = []
    options = BackgroundSaveOptions(
        enabled=True, queue_capacity=8, on_error=lambda exc, rid: errors.append(rid)
    )
    manager = CheckpointManager(store, background=options, retries=0)
    kept = manager.save(ModelCheckpoint(epoch=0, weights=b"kept"))
    manager.flush()

    if backend == "filesystem":
        models = store.active_root / "models"
        away = store.active_root / "models-away"
        models.rename(away)
        models.write_text("gone")

        def restore() -> None:
            models.unlink()
            away.rename(models)

    else:
        _pg_ctl("stop")

        def restore() -> None:
            _pg_ctl("start")

    try:
        queued = [
            manager.save(ModelCheckpoint(epoch=e, weights=b"x" * 1000))
            for e in range(1, 6)
        ]
        with pytest.raises(BackgroundSaveError) as caught:
            manager.flush()
    finally:
        restore()
    manager.close()

    assert sorted(errors) == sorted(queued)
    assert sorted(rid for rid, _ in caught.value.failures) == sorted(queued)
    deadline = time.monotonic() + 60
    while True:
        try:
            listed = [info.id for info in store.list_checkpoints()]
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert listed == [kept]
