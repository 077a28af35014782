"""The ``statecheckpoint`` command, in-process and as the installed entry point."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecheckpoint import (
    FileSystemStore,
    HyperParameters,
    InferenceSession,
    ModelCheckpoint,
    TokenizerData,
)
from statecheckpoint.cli import app

COMMAND = str(Path(sys.executable).with_name("statecheckpoint"))


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def records(root) -> dict[str, uuid.UUID]:
    """A store with three checkpoints and a session."""
    store = FileSystemStore(root=str(root))
    tokenizer = TokenizerData(
        token_to_id={"a": 0, "b": 1, "ab": 2}, special_tokens={"eos": 2}
    )
    ids = {}
    for epoch, stage in ((1, "pretrain"), (2, "pretrain"), (3, "finetune")):
        ids[f"epoch{epoch}"] = store.save_checkpoint(
            ModelCheckpoint(
                epoch=epoch,
                loss=1.0 / epoch,
                weights=os.urandom(3000),
                optimizer_state=os.urandom(1000),
                tokenizer=tokenizer,
                hyperparameters=HyperParameters(learning_rate=3e-4),
                tags={"run": "gpt", "stage": stage},
            )
        )
    ids["session"] = store.save_session(
        InferenceSession(
            kv_cache=os.urandom(500),
            token_history=[5, 6, 7],
            model_fingerprint="gpt@3",
            tags={"user": "ana"},
        )
    )
    return ids


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def test_cli_list_shows_checkpoints_newest_first(root, records):
    result = invoke("list", "--root", str(root))

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "3 checkpoints"
    ids = [str(records[f"epoch{n}"]) for n in (3, 2, 1)]
    positions = [result.output.index(i) for i in ids]
    assert positions == sorted(positions)
    assert "run=gpt, stage=finetune" in result.output
    assert "3.91 KiB" in result.output
    assert str(records["session"]) not in result.output


def test_cli_list_filters_by_every_tag_given(root, records):
    result = invoke(
        "list", "-r", str(root), "--tag", "stage=pretrain", "--tag", "run=gpt"
    )
    none = invoke("list", "-r", str(root), "-t", "stage=pretrain", "-t", "run=x")

    assert result.exit_code == 0
    assert result.output.splitlines()[0] == (
        "2 checkpoints with stage=pretrain, run=gpt"
    )
    assert str(records["epoch3"]) not in result.output
    assert none.output.splitlines()[0].startswith("0 checkpoints")


def test_cli_list_sessions_and_json(root, records):
    sessions = invoke("list", "-r", str(root), "--sessions")
    as_json = invoke("list", "-r", str(root), "--json")

    assert str(records["session"]) in sessions.output
    assert "gpt@3" in sessions.output
    listed = json.loads(as_json.output)
    assert [item["epoch"] for item in listed] == [3, 2, 1]
    assert listed[0]["sizes"] == {"weights": 3000, "optimizer_state": 1000}


def test_cli_show_prints_metadata_and_full_details(root, records):
    checkpoint_id = str(records["epoch2"])

    brief = invoke("show", checkpoint_id, "-r", str(root))
    full = invoke("show", checkpoint_id, "-r", str(root), "--full", "--json")

    assert brief.exit_code == 0, brief.output
    assert "epoch            2" in brief.output
    assert "weights          2.93 KiB (3000 bytes)" in brief.output
    document = json.loads(full.output)
    assert document["id"] == checkpoint_id
    assert document["details"]["hyperparameters"] == "learning_rate=0.0003"
    assert "3 tokens" in document["details"]["tokenizer"]


def test_cli_delete_removes_a_record_and_fails_for_an_unknown_one(root, records):
    deleted = invoke("delete", str(records["session"]), "-r", str(root))
    again = invoke("delete", str(records["session"]), "-r", str(root))

    assert deleted.exit_code == 0
    assert deleted.output.strip() == f"deleted session {records['session']}"
    assert FileSystemStore(root=str(root)).list_sessions() == []
    assert again.exit_code == 1
    assert "no checkpoint or session" in again.output


def test_cli_verify_passes_then_names_a_damaged_blob(root, records):
    good = invoke("verify", "-r", str(root))
    damaged_id = records["epoch1"]
    blob = root / "models" / str(damaged_id) / "weights.bin"
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))

    bad = invoke("verify", "-r", str(root))
    one_good = invoke("verify", str(records["epoch2"]), "-r", str(root))

    assert good.exit_code == 0
    assert "verified 4 records" in good.output
    assert bad.exit_code == 1
    assert f"DAMAGED {damaged_id}" in bad.output and "weights" in bad.output
    assert "1 of 4 records damaged" in bad.output
    assert one_good.exit_code == 0 and "verified 1 record:" in one_good.output


def test_cli_export_then_import_copies_records_with_their_ids(root, records, tmp_path):
    exported = tmp_path / "exported"
    target = tmp_path / "target"
    for key in ("epoch3", "session"):
        result = invoke("export", str(records[key]), str(exported), "-r", str(root))
        assert result.exit_code == 0, result.output

    imported = invoke("import", str(exported), "-r", str(target))

    assert imported.exit_code == 0, imported.output
    assert imported.output.splitlines()[-1] == "imported 2 records"
    store = FileSystemStore(root=str(target))
    source = FileSystemStore(root=str(root))
    copy = store.load_checkpoint(records["epoch3"])
    original = source.load_checkpoint(records["epoch3"])
    assert copy.weights == original.weights and copy.tags == original.tags
    assert copy.created_at == original.created_at
    assert copy.tokenizer == original.tokenizer
    session = store.load_session(records["session"])
    assert session.token_history == [5, 6, 7]


def test_cli_import_of_an_empty_folder_fails(tmp_path):
    (tmp_path / "empty").mkdir()

    result = invoke("import", str(tmp_path / "empty"), "-r", str(tmp_path / "t"))

    assert result.exit_code == 1
    assert "holds no checkpoint or session" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--root", "x", "--block", "file-system-checkpoint-store/x"],
        ["list", "--block", "no-slash"],
        ["list", "--root", "x", "--tag", "novalue"],
        ["show", "not-a-uuid", "--root", "x"],
        ["frobnicate"],
    ],
    ids=["no-store", "two-stores", "bad-block", "bad-tag", "bad-id", "bad-command"],
)
def test_cli_usage_errors_exit_2(args, monkeypatch):
    monkeypatch.delenv("STATECHECKPOINT_ROOT", raising=False)
    monkeypatch.delenv("STATECHECKPOINT_BLOCK", raising=False)

    result = invoke(*args)

    assert result.exit_code == 2, result.output


def test_cli_reads_the_store_from_the_environment(root, records):
    result = invoke("list", env={"STATECHECKPOINT_ROOT": str(root)})

    assert result.exit_code == 0 and "3 checkpoints" in result.output


def test_cli_missing_root_is_a_failure_not_created(tmp_path):
    result = invoke("list", "-r", str(tmp_path / "nowhere"))

    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert not (tmp_path / "nowhere").exists()


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.mark.slow
def test_cli_entry_point_loads_a_store_block_by_name(prefect_server, root, records):
    FileSystemStore(root=str(root)).save("cli-store", overwrite=True)
    slug = FileSystemStore.get_block_type_slug()

    listed = _run("list", "--block", f"{slug}/cli-store")
    missing = _run("list", "--block", f"{slug}/no-such-store")

    assert listed.returncode == 0, listed.stderr
    assert str(records["epoch1"]) in listed.stdout
    assert missing.returncode == 1
    assert "no-such-store" in missing.stderr


def _run_in_terminal(*args: str) -> tuple[int, str]:
    """Runs the command with a pseudo-terminal as stdout and stderr."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    child = subprocess.Popen(
        [COMMAND, *args], stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    output = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif child.poll() is not None:
            break
    os.close(controller)
    return child.wait(timeout=60), output.decode(errors="replace")


@pytest.mark.slow
def test_cli_transfers_show_progress_on_a_terminal_and_not_in_a_pipe(tmp_path):
    source = tmp_path / "source"
    big = FileSystemStore(root=str(source)).save_checkpoint(
        ModelCheckpoint(epoch=1, weights=bytes(48 << 20))
    )

    code, screen = _run_in_terminal(
        "export", str(big), str(tmp_path / "tty"), "-r", str(source)
    )
    piped = _run("export", str(big), str(tmp_path / "pipe"), "-r", str(source))

    assert code == 0, screen
    assert f"writing {big}" in screen and "48.0 MiB" in screen
    assert f"exported checkpoint {big} (48.00 MiB)" in screen
    assert piped.returncode == 0
    assert piped.stderr == ""
    assert piped.stdout.strip().endswith(f"(48.00 MiB) to {tmp_path / 'pipe'}")


@pytest.mark.slow
def test_cli_demo_runs_the_demo_module():
    if shutil.which(COMMAND) is None:
        pytest.fail(f"{COMMAND} is not installed: pip install -e .")

    result = _run("demo", "--help")

    # argparse's help of the demo itself, not this command's.
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m statecheckpoint.demo")
    assert "--small" in result.stdout


def test_cli_escapes_tags_a_terminal_cannot_show(root):
    store = FileSystemStore(root=str(root))
    checkpoint_id = store.save_checkpoint(
        ModelCheckpoint(weights=b"w", tags={"s": "\ud800", "a\x00b": "v"})
    )

    listed = subprocess.run(
        [COMMAND, "list", "--root", str(root)], capture_output=True, text=True
    )
    shown = subprocess.run(
        [COMMAND, "show", str(checkpoint_id), "--root", str(root)],
        capture_output=True,
        text=True,
    )

    assert listed.returncode == 0 and shown.returncode == 0, listed.stderr
    for output in (listed.stdout, shown.stdout):
        assert "a\\x00b=v" in output and "s=\\ud800" in output
