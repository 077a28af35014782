"""File-store specifics: layout, corruption, fallback, leftovers, atomic overwrite."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid

import pytest

from statecheckpoint import (
    BackendUnavailableError,
    FileSystemStore,
    InferenceSession,
    IntegrityError,
    ModelCheckpoint,
)
from statecheckpoint.blocks import _fsutil


def test_layout_matches_the_documented_folders(tmp_path):
    store = FileSystemStore(root=str(tmp_path))

    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w", epoch=3))
    session_id = store.save_session(InferenceSession(kv_cache=b"kv"))

    model_dir = tmp_path / "models" / str(checkpoint_id)
    session_dir = tmp_path / "sessions" / str(session_id)
    assert sorted(os.listdir(model_dir)) == [
        "manifest.json",
        "optimizer.bin",
        "weights.bin",
    ]
    assert sorted(os.listdir(session_dir)) == ["kv.bin", "meta.json"]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["summary"]["epoch"] == 3
    assert manifest["summary"]["blobs"]["weights"]["size"] == 1
    assert os.listdir(tmp_path / ".staging") == []


@pytest.mark.parametrize("position", [0, 500, 4095])
def test_a_corrupted_blob_is_refused_naming_id_and_file(tmp_path, position):
    store = FileSystemStore(root=str(tmp_path))
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=os.urandom(4096), optimizer_state=b"o")
    )
    path = tmp_path / "models" / str(checkpoint_id) / "weights.bin"
    damaged = bytearray(path.read_bytes())
    damaged[position] ^= 0x01
    path.write_bytes(damaged)

    with pytest.raises(IntegrityError, match=str(checkpoint_id)) as caught:
        store.load_checkpoint(checkpoint_id)

    assert str(path) in str(caught.value)
    assert caught.value.blob == "weights"
    assert store.load_checkpoint(checkpoint_id, verify=False) is not None
    assert [str(p) for p in store.verify()] == [str(caught.value)]


def test_a_truncated_blob_is_refused(tmp_path):
    store = FileSystemStore(root=str(tmp_path))
    session_id = store.save_session(InferenceSession(kv_cache=b"x" * 100))
    path = tmp_path / "sessions" / str(session_id) / "kv.bin"
    path.write_bytes(b"x" * 99)

    with pytest.raises(IntegrityError, match=r"kv\.bin.*99 bytes, expected 100"):
        store.load_session(session_id)


def test_a_damaged_manifest_is_an_integrity_error(tmp_path):
    store = FileSystemStore(root=str(tmp_path))
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))
    (tmp_path / "models" / str(checkpoint_id) / "manifest.json").write_text("{not json")

    with pytest.raises(IntegrityError, match="manifest.json cannot be parsed"):
        store.load_checkpoint(checkpoint_id)


def test_missing_root_is_created_by_default(tmp_path):
    root = tmp_path / "a" / "b"

    FileSystemStore(root=str(root)).prepare()

    assert (root / "models").is_dir() and (root / "sessions").is_dir()


def test_missing_root_without_create_fails_at_start_up(tmp_path):
    store = FileSystemStore(root=str(tmp_path / "absent"), create_root=False)

    with pytest.raises(BackendUnavailableError, match="does not exist.*fallback_root"):
        store.prepare()


def test_unusable_root_falls_back_with_a_warning_naming_both(tmp_path, caplog):
    root = tmp_path / "not-a-folder"
    root.write_text("a file where the root should be")
    fallback = tmp_path / "fallback"
    store = FileSystemStore(root=str(root), fallback_root=str(fallback))

    with caplog.at_level(logging.WARNING, logger="statecheckpoint"):
        checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))

    assert store.active_root == fallback
    assert (fallback / "models" / str(checkpoint_id)).is_dir()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(root) in warning.getMessage() and str(fallback) in warning.getMessage()


def test_unusable_root_and_fallback_name_both_problems(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = FileSystemStore(root=str(blocker), fallback_root=str(blocker / "sub"))

    with pytest.raises(BackendUnavailableError, match="fallback .* not usable either"):
        store.prepare()


def test_read_only_root_falls_back(tmp_path, tmpfs):
    """A read-only mount: root may write anywhere else, so mode bits would not do."""
    root = tmpfs(tmp_path / "ro", "size=1m,ro")
    store = FileSystemStore(root=str(root), fallback_root=str(tmp_path / "fb"))

    store.prepare()

    assert store.active_root == tmp_path / "fb"
    with pytest.raises(BackendUnavailableError, match="Read-only file system"):
        FileSystemStore(root=str(root)).prepare()


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, tmpfs):
    root = tmpfs(tmp_path / "small", "size=2m")
    store = FileSystemStore(root=str(root))
    kept = store.save_checkpoint(ModelCheckpoint(weights=b"k" * 1000))

    with pytest.raises(BackendUnavailableError, match="disk is full"):
        store.save_checkpoint(ModelCheckpoint(weights=b"x" * (4 << 20)))

    assert [info.id for info in store.list_checkpoints()] == [kept]
    assert os.listdir(root / ".staging") == []
    assert bytes(store.load_checkpoint(kept).weights) == b"k" * 1000


def test_leftovers_of_a_killed_save_are_removed_at_start_up(tmp_path):
    FileSystemStore(root=str(tmp_path)).prepare()
    leftover = tmp_path / ".staging" / f"models-{uuid.uuid4().hex}"
    leftover.mkdir()
    (leftover / "weights.bin").write_bytes(b"partial")

    FileSystemStore(root=str(tmp_path)).prepare()

    assert not leftover.exists()


def test_a_staging_folder_in_use_is_not_removed(tmp_path):
    FileSystemStore(root=str(tmp_path)).prepare()
    area = tmp_path / ".staging"

    with _fsutil.staging(area, "models") as stage:
        assert _fsutil.clean_staging(area) == 0
        assert stage.exists()
    assert os.listdir(area) == []


def test_overwrite_never_shows_a_missing_or_mixed_record(tmp_path):
    store = FileSystemStore(root=str(tmp_path))
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(epoch=0, weights=b"0" * 1000))
    stop = threading.Event()
    seen: list[object] = []

    def read() -> None:
        while not stop.is_set():
            loaded = store.load_checkpoint(checkpoint_id)
            seen.append(loaded and (loaded.epoch, bytes(loaded.weights)))

    reader = threading.Thread(target=read)
    reader.start()
    for epoch in range(1, 30):
        store.save_checkpoint(
            ModelCheckpoint(epoch=epoch, weights=str(epoch % 10).encode() * 1000),
            existing_id=checkpoint_id,
        )
    stop.set()
    reader.join()

    assert seen and None not in seen
    for epoch, weights in seen:
        assert weights == str(epoch % 10).encode() * 1000


def test_ids_never_become_paths_outside_the_root(tmp_path):
    store = FileSystemStore(root=str(tmp_path / "root"))
    store.save_checkpoint(ModelCheckpoint(tags={"../../x": "../../y"}))

    created = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}

    assert created == {"root"}


def test_a_missing_blob_file_is_an_integrity_error_not_a_retry(tmp_path):
    store = FileSystemStore(root=str(tmp_path))
    checkpoint_id = store.save_checkpoint(ModelCheckpoint(weights=b"w"))
    blob = tmp_path / "models" / str(checkpoint_id) / "weights.bin"
    blob.unlink()

    with pytest.raises(IntegrityError, match="weights.bin is missing"):
        store.load_checkpoint(checkpoint_id)

    assert [str(problem) for problem in store.verify()] == [
        f"record {checkpoint_id}: {blob} is missing"
    ]


def test_verify_names_folders_whose_manifest_is_missing_or_damaged(tmp_path):
    store = FileSystemStore(root=str(tmp_path))
    damaged = store.save_checkpoint(ModelCheckpoint(weights=b"a"))
    missing = store.save_session(InferenceSession(kv_cache=b"b"))
    healthy = store.save_checkpoint(ModelCheckpoint(weights=b"c"))
    (tmp_path / "models" / str(damaged) / "manifest.json").write_text("{broken")
    (tmp_path / "sessions" / str(missing) / "meta.json").unlink()

    problems = store.verify()

    assert {problem.record_id for problem in problems} == {damaged, missing}
    assert [info.id for info in store.list_checkpoints()] == [healthy]
    assert store.verify(healthy) == []


def test_an_empty_root_is_refused():
    with pytest.raises(ValueError, match="root"):
        FileSystemStore(root="")
