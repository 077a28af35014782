"""deployments/prefect.yaml on a real server, work pool and process worker.

The test deploys the training flow with ``prefect deploy`` as a user would,
starts a worker, triggers two runs and checks that the second one resumed from
the checkpoint the first one wrote. The server's scheduler is off so that the
cron schedule (checked, not waited for) adds no runs of its own.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.deployments import run_deployment

from statecheckpoint import CheckpointPointer, FileSystemStore
from tests._prefect_server import running_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
RUN_TIMEOUT = 180.0


def _spec() -> dict:
    (spec,) = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    return spec


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-deploy")
    settings = {
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    with running_server(home, **settings) as running:
        yield running


def _wait_final(flow_run_id: uuid.UUID, server) -> object:
    deadline = time.monotonic() + RUN_TIMEOUT
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            if time.monotonic() > deadline:
                pytest.fail(
                    f"flow run {flow_run_id} still {flow_run.state_name} after "
                    f"{RUN_TIMEOUT:.0f}s; worker log:\n{server.log_tail('worker.log')}"
                )
            time.sleep(0.5)


def _run_once(server, name: str):
    flow_run = run_deployment(name, timeout=0)
    flow_run = _wait_final(flow_run.id, server)
    assert flow_run.state.is_completed(), (
        f"{flow_run.name} ended {flow_run.state_name}; worker log:\n"
        f"{server.log_tail('worker.log', 80)}"
    )
    return flow_run


def test_deployment_resumes_each_run_from_the_pointer(server, tmp_path):
    spec = _spec()
    params = spec["parameters"]
    pool = spec["work_pool"]["name"]
    store_slug, store_name = params["store_block"].split("/")
    assert store_slug == FileSystemStore.get_block_type_slug()
    FileSystemStore(root=str(tmp_path / "ckpt")).save(store_name)

    created = server.prefect("work-pool", "create", pool, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = server.prefect(
        "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML), cwd=REPO
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    name = f"toy-training/{spec['name']}"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    assert deployment.entrypoint == "statecheckpoint.flows.training.train_toy"
    assert deployment.work_pool_name == pool
    assert deployment.pull_steps == []
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == spec["schedules"][0]["cron"]
    assert schedule.active

    server.spawn("worker", "start", "--pool", pool, log_name="worker.log")
    first = _run_once(server, name)
    second = _run_once(server, name)
    assert first.work_pool_name == second.work_pool_name == pool

    store = FileSystemStore(root=str(tmp_path / "ckpt"))
    by_run = {
        run.id: sorted(
            (c for c in store.list_checkpoints() if c.tags["flow_run"] == str(run.id)),
            key=lambda c: c.epoch,
        )
        for run in (first, second)
    }
    per_run = params["epochs_per_run"]
    assert [c.epoch for c in by_run[first.id]] == list(range(1, per_run + 1))
    assert [c.epoch for c in by_run[second.id]] == list(
        range(per_run + 1, 2 * per_run + 1)
    )
    last_of_first = by_run[first.id][-1]
    assert all("resumed_from" not in c.tags for c in by_run[first.id])
    assert {c.tags["resumed_from"] for c in by_run[second.id]} == {
        str(last_of_first.id)
    }
    assert by_run[second.id][-1].loss < last_of_first.loss

    pointer = CheckpointPointer.read(params["pointer_name"])
    assert pointer is not None
    assert pointer.checkpoint_id == by_run[second.id][-1].id

    # The second run's load left a table artifact naming the checkpoint it read.
    with get_client(sync_client=True) as client:
        key_filter = ArtifactFilterKey(any_=["checkpoint-loaded"])
        (loaded,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=key_filter)
        )
    assert str(last_of_first.id) in str(loaded.data)
