"""Many workers: saves run as Prefect tasks in a Dask cluster of worker processes,
into a shared file store and a PostgreSQL store at the same time."""

from __future__ import annotations

import uuid

import pytest
from prefect import flow
from prefect_dask import DaskTaskRunner

from statecheckpoint import ModelCheckpoint
from statecheckpoint.tasks import save_checkpoint

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),
]

WORKERS = 4
SAVES = 100
BLOB = 64 << 10


def _weights(n: int) -> bytes:
    # Each save holds its own number, repeated: a torn or mixed-up save shows.
    return n.to_bytes(2, "little") * (BLOB // 2)


@pytest.mark.parametrize(
    "backends",
    [
        pytest.param(["filesystem"], id="filesystem"),
        pytest.param(
            ["filesystem", "postgres"],
            id="filesystem+postgres",
            marks=pytest.mark.postgres,
        ),
    ],
)
def test_dask_saves_from_worker_processes_are_complete_and_listed_once(
    request, backends
):
    stores = {name: request.getfixturevalue(f"{name}_store") for name in backends}
    batch = uuid.uuid4().hex
    runner = DaskTaskRunner(
        cluster_kwargs={
            "n_workers": WORKERS,
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": None,
        }
    )

    @flow(task_runner=runner)
    def save_many() -> tuple[dict[str, dict[int, uuid.UUID]], set[str]]:
        futures = {
            (name, n): save_checkpoint.submit(
                store,
                ModelCheckpoint(
                    epoch=n, weights=_weights(n), tags={"batch": batch, "n": str(n)}
                ),
            )
            for n in range(SAVES)
            for name, store in stores.items()
        }
        ids: dict[str, dict[int, uuid.UUID]] = {name: {} for name in stores}
        for (name, n), future in futures.items():
            ids[name][n] = future.result()
        wrapped = [future.wrapped_future for future in futures.values()]
        placement = wrapped[0].client.who_has(wrapped)
        workers = {worker for held in placement.values() for worker in held}
        return ids, workers

    ids, workers = save_many()

    assert len(workers) >= 2, f"all saves ran in one worker: {workers}"
    for name, store in stores.items():
        listed = store.list_checkpoints(("batch", batch))
        listed_ids = [info.id for info in listed]
        assert len(listed_ids) == SAVES, name
        assert len(set(listed_ids)) == SAVES, f"{name}: a checkpoint listed twice"
        assert set(listed_ids) == set(ids[name].values()), name
        for n, checkpoint_id in ids[name].items():
            loaded = store.load_checkpoint(checkpoint_id)  # checksums verified
            assert loaded.epoch == n and loaded.tags["n"] == str(n), name
            assert loaded.weights == _weights(n), (name, n)
        assert store.verify() == [], name
