"""Retention: keep the last N and the best K checkpoints of a training run."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prefect import flow

from statecheckpoint import (
    BackgroundSaveOptions,
    CheckpointManager,
    CheckpointPointer,
    InvalidInputError,
    ModelCheckpoint,
    RetentionPolicy,
)
from statecheckpoint import retention as retention_module
from statecheckpoint.models import CheckpointInfo
from statecheckpoint.retention import apply_retention
from statecheckpoint.tasks import save_checkpoint

START = datetime(2026, 1, 1, tzinfo=UTC)


def _info(n: int, loss: float | None = None, **tags: str) -> CheckpointInfo:
    return CheckpointInfo(
        id=uuid.UUID(int=n + 1),
        created_at=START + timedelta(seconds=n),
        epoch=n,
        loss=loss,
        tags=tags,
        sizes={},
    )


def _epochs(deleted: list[CheckpointInfo]) -> set[int]:
    return {info.epoch for info in deleted}


def _stored_epochs(store, run: str) -> list[int]:
    return sorted(info.epoch for info in store.list_checkpoints(("run", run)))


def _name() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


# -- the policy on its own -----------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [
        (RetentionPolicy(keep_last=2), {0, 1, 2, 3}),
        (RetentionPolicy(keep_best=2), {0, 2, 3, 4}),  # best: 1 and 5; 5 is newest
        (RetentionPolicy(keep_last=2, keep_best=2), {0, 2, 3}),
        (RetentionPolicy(keep_best=1, mode="max"), {1, 2, 3, 4}),  # 0 is highest
        (RetentionPolicy(keep_last=10), set()),
    ],
)
def test_retention_select_keeps_last_and_best_by_loss(policy, deleted):
    infos = [_info(n, loss) for n, loss in enumerate([9.0, 1.0, 4.0, 3.0, 5.0, 2.0])]

    assert _epochs(policy.select(infos[::-1])) == deleted


def test_retention_select_never_deletes_the_newest_or_a_protected_one():
    infos = [_info(n, loss) for n, loss in enumerate([1.0, 2.0, 3.0, 9.0])]
    policy = RetentionPolicy(keep_best=1)

    deleted = policy.select(infos, protect={infos[1].id})

    assert _epochs(deleted) == {2}  # 0 is best, 1 protected, 3 newest


def test_retention_select_by_a_tag_metric_ignores_missing_and_non_finite_values():
    infos = [
        _info(0, accuracy="0.9"),
        _info(1, accuracy="0.95"),
        _info(2, accuracy="nan"),
        _info(3, accuracy="high"),
        _info(4),
        _info(5, accuracy="0.1"),
    ]
    policy = RetentionPolicy(keep_best=2, metric="accuracy", mode="max")

    assert _epochs(policy.select(infos)) == {2, 3, 4}


def test_retention_select_prefers_the_newer_of_equal_scores():
    infos = [_info(n, 1.0) for n in range(4)] + [_info(4, 7.0)]

    deleted = RetentionPolicy(keep_best=1).select(infos)

    assert _epochs(deleted) == {0, 1, 2}


def test_retention_nan_and_missing_loss_never_count_as_best():
    infos = [_info(0, float("nan")), _info(1, None), _info(2, 3.0), _info(3, 8.0)]

    assert _epochs(RetentionPolicy(keep_best=1).select(infos)) == {0, 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs keep_last or keep_best"),
        ({"keep_last": 0}, "keep_last=0: must be an int of 1 or more"),
        ({"keep_best": -1}, "keep_best=-1"),
        ({"keep_last": 2.5}, "keep_last=2.5"),
        ({"keep_last": 1, "mode": "lowest"}, "mode='lowest': use 'min' or 'max'"),
        ({"keep_last": 1, "metric": ""}, "metric='': use 'loss' or a tag name"),
    ],
)
def test_retention_policy_rejects_bad_settings(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        RetentionPolicy(**kwargs)


@given(
    losses=st.lists(
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        min_size=1,
        max_size=20,
    ),
    keep_last=st.one_of(st.none(), st.integers(1, 5)),
    keep_best=st.one_of(st.none(), st.integers(1, 5)),
    mode=st.sampled_from(["min", "max"]),
    protected=st.sets(st.integers(0, 19), max_size=3),
)
def test_retention_select_keeps_exactly_the_union_of_its_rules(
    losses, keep_last, keep_best, mode, protected
):
    if keep_last is None and keep_best is None:
        keep_best = 1
    infos = [_info(n, loss) for n, loss in enumerate(losses)]
    protect = {infos[n].id for n in protected if n < len(infos)}
    policy = RetentionPolicy(keep_last=keep_last, keep_best=keep_best, mode=mode)

    kept = {info.id for info in infos} - {i.id for i in policy.select(infos, protect)}

    newest_first = infos[::-1]
    expected = set(protect) | {newest_first[0].id}
    expected |= {info.id for info in newest_first[: keep_last or 0]}
    scored = [i for i in newest_first if i.loss is not None and math.isfinite(i.loss)]
    sign = 1 if mode == "min" else -1
    ranked = sorted(scored, key=lambda i: sign * i.loss)  # stable: newer first
    expected |= {info.id for info in ranked[: keep_best or 0]}
    assert kept == expected


def test_retention_skips_pruning_when_pointers_cannot_be_read(
    filesystem_store, monkeypatch, caplog
):
    for epoch in range(3):
        filesystem_store.save_checkpoint(
            ModelCheckpoint(epoch=epoch, tags={"run": "r"})
        )

    def down():
        raise ConnectionError("API down")

    monkeypatch.setattr(retention_module, "pointed_checkpoints", down)
    with caplog.at_level(logging.WARNING, logger="statecheckpoint.retention"):
        deleted = apply_retention(filesystem_store, RetentionPolicy(keep_last=1), "r")

    assert deleted == []
    assert _stored_epochs(filesystem_store, "r") == [0, 1, 2]
    assert "retention of run r skipped: cannot read the pointer blocks" in caplog.text


# -- applied by managers and tasks, over a real Prefect server -------------------


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
def test_retention_manager_prunes_after_each_save(filesystem_store, background):
    pointer = _name()
    policy = RetentionPolicy(keep_last=2, keep_best=1)
    options = BackgroundSaveOptions(enabled=background)
    seen = []

    with CheckpointManager(
        filesystem_store, pointer_name=pointer, retention=policy, background=options
    ) as manager:
        for epoch, loss in enumerate([5.0, 1.0, 4.0, 3.0, 2.5]):
            manager.save(ModelCheckpoint(epoch=epoch, loss=loss, weights=b"w"))
            manager.flush()
            seen.append(_stored_epochs(filesystem_store, pointer))

    assert seen == [[0], [0, 1], [1, 2], [1, 2, 3], [1, 3, 4]]
    assert CheckpointPointer.read(pointer).epoch == 4


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_retention_never_deletes_a_checkpoint_a_pointer_names(filesystem_store):
    run, pin = _name(), _name()

    with CheckpointManager(
        filesystem_store, pointer_name=run, retention=RetentionPolicy(keep_last=1)
    ) as manager:
        first = manager.save(ModelCheckpoint(epoch=0, loss=9.0))
        CheckpointPointer.advance(pin, first, epoch=0)
        for epoch in range(1, 4):
            manager.save(ModelCheckpoint(epoch=epoch, loss=1.0))

    assert _stored_epochs(filesystem_store, run) == [0, 3]


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_retention_applies_per_run_by_run_tag(filesystem_store):
    policy = RetentionPolicy(keep_last=1)
    for epoch in range(3):
        filesystem_store.save_checkpoint(
            ModelCheckpoint(epoch=epoch, tags={"run": "other"})
        )

    with CheckpointManager(filesystem_store, retention=policy) as manager:
        for epoch in range(3):
            manager.save(ModelCheckpoint(epoch=epoch, tags={"run": "mine"}))

    assert _stored_epochs(filesystem_store, "mine") == [2]
    assert _stored_epochs(filesystem_store, "other") == [0, 1, 2]


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_retention_without_a_run_is_refused_before_any_write(filesystem_store):
    manager = CheckpointManager(
        filesystem_store, retention=RetentionPolicy(keep_last=1)
    )
    with manager, pytest.raises(InvalidInputError, match="retention applies per"):
        manager.save(ModelCheckpoint(epoch=0))

    assert filesystem_store.list_checkpoints() == []


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_retention_save_checkpoint_task_applies_the_policy(store):
    pointer = _name()
    policy = RetentionPolicy(keep_best=1)

    @flow
    def train() -> None:
        for epoch, loss in enumerate([3.0, 1.0, 2.0, 4.0]):
            save_checkpoint(
                store,
                ModelCheckpoint(epoch=epoch, loss=loss),
                pointer_name=pointer,
                retention=policy,
            )

    train()

    assert _stored_epochs(store, pointer) == [1, 3]


RESUMED_RUN = textwrap.dedent(
    """
    import sys

    from statecheckpoint import (
        CheckpointManager, FileSystemStore, ModelCheckpoint, RetentionPolicy,
    )
    from statecheckpoint.flows import resume_training

    root, pointer, losses = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    store = FileSystemStore(root=root)
    policy = RetentionPolicy(keep_last=2, keep_best=2)

    def train(checkpoint):
        start = checkpoint.epoch + 1
        with CheckpointManager(store, pointer_name=pointer, retention=policy) as m:
            for offset, loss in enumerate(losses):
                epoch = start + offset
                m.save(ModelCheckpoint(epoch=epoch, loss=float(loss), weights=b"w"))
        return start

    print("resumed at epoch", resume_training(store, pointer, train))
    """
)


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_retention_holds_across_a_run_resumed_in_a_new_process(filesystem_store):
    pointer = _name()
    policy = RetentionPolicy(keep_last=2, keep_best=2)
    with CheckpointManager(
        filesystem_store, pointer_name=pointer, retention=policy
    ) as manager:
        for epoch, loss in enumerate([5.0, 1.0, 4.0, 3.0, 2.5]):
            manager.save(ModelCheckpoint(epoch=epoch, loss=loss, weights=b"w"))
    assert _stored_epochs(filesystem_store, pointer) == [1, 3, 4]

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RESUMED_RUN,
            filesystem_store.root,
            pointer,
            "0.5,3.5,3.6",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed at epoch 5" in done.stdout
    # Best two by loss across both processes: 5 (0.5) and 1 (1.0); last two: 6, 7.
    # Epochs 3 and 4, saved by the first process, were pruned by the second.
    assert _stored_epochs(filesystem_store, pointer) == [1, 5, 6, 7]
    assert CheckpointPointer.read(pointer).epoch == 7
