"""Artifacts of saves and loads, read back from a real Prefect server."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.context import get_run_context

from statecheckpoint import CheckpointManager, InferenceSession, ModelCheckpoint
from statecheckpoint import tasks as sc_tasks
from statecheckpoint.tasks import artifacts

pytestmark = pytest.mark.usefixtures("prefect_server")


def _artifacts(flow_run_id: uuid.UUID | None = None, key: str | None = None):
    artifact_filter = ArtifactFilter(
        flow_run_id=(
            ArtifactFilterFlowRunId(any_=[flow_run_id]) if flow_run_id else None
        ),
        key=ArtifactFilterKey(any_=[key]) if key else None,
    )
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=artifact_filter)


def _rows(flow_run_id: uuid.UUID, key: str) -> list[dict]:
    found = _artifacts(flow_run_id, key)
    assert len(found) == 1, [a.key for a in _artifacts(flow_run_id)]
    assert found[0].type == "table"
    return json.loads(found[0].data)


def test_artifacts_list_each_checkpoint_saved_and_loaded_in_a_flow(filesystem_store):
    @flow
    def train():
        with CheckpointManager(filesystem_store) as manager:
            saved = manager.save(
                ModelCheckpoint(
                    epoch=3,
                    loss=0.25,
                    weights=b"w" * 3000,
                    optimizer_state=b"o" * 2048,
                    tags={"run": "a", "stage": "warmup"},
                )
            )
            manager.load(saved)
        return get_run_context().flow_run.id, saved

    run_id, saved = train()

    saved_rows = _rows(run_id, "checkpoint-saved")
    loaded_rows = _rows(run_id, "checkpoint-loaded")
    info = filesystem_store.list_checkpoints()[0]
    for row in (*saved_rows, *loaded_rows):
        assert row["id"] == str(saved)
        assert row["epoch"] == 3 and row["loss"] == 0.25
        assert row["weights"] == "2.93 KiB" and row["optimizer_state"] == "2.00 KiB"
        assert row["total_bytes"] == 5048
        assert row["tags"] == "run=a, stage=warmup"
        assert row["created_at"] == info.created_at.isoformat()


def test_artifacts_list_sessions_and_keep_non_finite_losses(filesystem_store):
    @flow
    def pause_and_resume():
        session_id = sc_tasks.save_session(
            filesystem_store,
            InferenceSession(kv_cache=b"k" * 10, token_history=[1, 2, 3]),
        )
        sc_tasks.load_session(filesystem_store, session_id)
        sc_tasks.save_checkpoint(
            filesystem_store, ModelCheckpoint(epoch=1, loss=math.inf)
        )
        return get_run_context().flow_run.id, session_id

    run_id, session_id = pause_and_resume()

    for key in ("session-saved", "session-loaded"):
        (row,) = _rows(run_id, key)
        assert row["id"] == str(session_id)
        assert row["num_tokens"] == 3 and row["kv_cache"] == "10 B"
    (row,) = _rows(run_id, "checkpoint-saved")
    assert row["loss"] == "inf"


def test_artifacts_are_not_made_outside_a_run(filesystem_store):
    before = len(_artifacts(key="checkpoint-saved"))

    checkpoint_id = filesystem_store.save_checkpoint(ModelCheckpoint(epoch=1))
    sc_tasks.load_checkpoint.fn(filesystem_store, checkpoint_id)

    assert len(_artifacts(key="checkpoint-saved")) == before
    assert artifacts.in_run_context() is False


def test_artifact_failure_does_not_fail_the_save(filesystem_store, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("artifact API down")

    monkeypatch.setattr(artifacts, "create_table_artifact", refuse)

    @flow
    def save():
        return sc_tasks.save_checkpoint(filesystem_store, ModelCheckpoint(epoch=2))

    checkpoint_id = save()

    assert filesystem_store.load_checkpoint(checkpoint_id).epoch == 2
    assert "could not create the checkpoint-saved artifact" in caplog.text


class _Recorder:
    """Wraps the artifact API functions and records each progress value sent."""

    def __init__(self, monkeypatch):
        self.values: list[float] = []
        self.ids: list[uuid.UUID] = []
        create, update = (
            artifacts.create_progress_artifact,
            artifacts.update_progress_artifact,
        )

        def recording_create(progress, **kwargs):
            self.values.append(progress)
            artifact_id = create(progress, **kwargs)
            self.ids.append(artifact_id)
            return artifact_id

        def recording_update(artifact_id, progress, **kwargs):
            self.values.append(progress)
            return update(artifact_id, progress, **kwargs)

        monkeypatch.setattr(artifacts, "create_progress_artifact", recording_create)
        monkeypatch.setattr(artifacts, "update_progress_artifact", recording_update)


@pytest.mark.slow
def test_big_save_and_load_update_a_progress_artifact_as_they_go(
    filesystem_store, monkeypatch
):
    monkeypatch.setattr(artifacts, "PROGRESS_INTERVAL", 0.0)
    size = artifacts.PROGRESS_THRESHOLD + (1 << 20)
    weights = bytearray(size)
    weights[::4096] = b"x" * len(weights[::4096])
    recorder = _Recorder(monkeypatch)

    @flow
    def big():
        checkpoint_id = sc_tasks.save_checkpoint(
            filesystem_store, ModelCheckpoint(epoch=1, weights=weights)
        )
        saved_values = list(recorder.values)
        loaded = sc_tasks.load_checkpoint(filesystem_store, checkpoint_id)
        assert loaded.weights == weights
        return saved_values, recorder.values[len(saved_values) :]

    saved_values, loaded_values = big()

    for values in (saved_values, loaded_values):
        # 64 MiB chunks: several values between 0 and 100, rising, ending at 100.
        assert values == sorted(values) and values[-1] == 100.0
        assert len([v for v in values if 0.0 < v < 100.0]) >= 3, values
    assert len(recorder.ids) == 2
    keys = ("checkpoint-save-progress", "checkpoint-load-progress")
    for artifact_id, key in zip(recorder.ids, keys, strict=True):
        (artifact,) = [a for a in _artifacts(key=key) if a.id == artifact_id]
        assert artifact.type == "progress" and artifact.data == 100.0


def test_small_transfers_get_no_progress_artifact(filesystem_store, monkeypatch):
    recorder = _Recorder(monkeypatch)

    @flow
    def small():
        checkpoint_id = sc_tasks.save_checkpoint(
            filesystem_store, ModelCheckpoint(epoch=1, weights=bytes(1 << 20))
        )
        sc_tasks.load_checkpoint(filesystem_store, checkpoint_id)

    small()

    assert recorder.values == []
