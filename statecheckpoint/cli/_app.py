"""The commands of ``statecheckpoint``."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from statecheckpoint import _codec
from statecheckpoint.blocks.base import CheckpointStore
from statecheckpoint.blocks.filesystem import FileSystemStore
from statecheckpoint.cli import _output
from statecheckpoint.cli._store import (
    CommandFailed,
    find_info,
    open_store,
    parse_id,
    parse_tags,
)
from statecheckpoint.errors import StateCheckpointError
from statecheckpoint.models import CheckpointInfo, InferenceSession, ModelCheckpoint
from statecheckpoint.tasks.artifacts import human_size

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="statecheckpoint",
    help="Inspect, verify, move and delete stored training checkpoints and "
    "inference sessions.\n\nExit status: 0 done, 1 failure, 2 usage error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Root = Annotated[
    Path | None,
    typer.Option(
        "--root",
        "-r",
        envvar="STATECHECKPOINT_ROOT",
        help="Folder of a file-system store.",
        show_default=False,
    ),
]
BlockRef = Annotated[
    str | None,
    typer.Option(
        "--block",
        "-b",
        envvar="STATECHECKPOINT_BLOCK",
        help="A store block saved in Prefect, as block-type-slug/name, e.g. "
        "file-system-checkpoint-store/prod.",
        show_default=False,
    ),
]
RecordId = Annotated[
    str, typer.Argument(metavar="ID", help="Id of a checkpoint or session.")
]


def _reports_failures(command: F) -> F:
    """Turns library errors into a message on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except StateCheckpointError as exc:
            _output.fail(str(exc))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command("list")
@_reports_failures
def list_records(
    root: Root = None,
    block: BlockRef = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="Only records with this tag, as KEY=VALUE; repeat to require more.",
            show_default=False,
        ),
    ] = None,
    sessions: Annotated[
        bool, typer.Option("--sessions", help="List inference sessions instead.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Lists checkpoints (or sessions), newest first, as a table."""
    tags = parse_tags(tag or [])
    store = open_store(root, block)
    lister = store.list_sessions if sessions else store.list_checkpoints
    infos: list[Any] = lister(tags[0] if tags else None)
    infos = [info for info in infos if all(info.tags.get(k) == v for k, v in tags[1:])]
    if as_json:
        _output.print_json([info.model_dump(mode="json") for info in infos])
        return
    noun = "session" if sessions else "checkpoint"
    title = f"{len(infos)} {noun}{'' if len(infos) == 1 else 's'}"
    if tags:
        title += " with " + ", ".join(f"{k}={v}" for k, v in tags)
    table = (
        _output.session_table(infos, title)
        if sessions
        else _output.checkpoint_table(infos, title)
    )
    _output.emit(table)


@app.command()
@_reports_failures
def show(
    record_id: RecordId,
    root: Root = None,
    block: BlockRef = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Also load the record: verify its blobs and show the tokenizer, "
            "hyperparameters or sampling settings.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Shows one checkpoint or session: metadata, tags and blob sizes."""
    rid = parse_id(record_id)
    store = open_store(root, block)
    info = find_info(store, rid)
    rows = _output.info_rows(info)
    document: dict[str, Any] = info.model_dump(mode="json")
    if full:
        record = _load(store, info)
        extra = _record_details(record)
        rows += [*extra, ("checksums", "verified")]
        document["details"] = dict(extra)
    if as_json:
        _output.print_json(document)
    else:
        _output.emit(_output.details_table(rows))


@app.command()
@_reports_failures
def delete(record_id: RecordId, root: Root = None, block: BlockRef = None) -> None:
    """Deletes a checkpoint or session with its blobs."""
    rid = parse_id(record_id)
    store = open_store(root, block)
    if store.delete_checkpoint(rid):
        noun = "checkpoint"
    elif store.delete_session(rid):
        noun = "session"
    else:
        raise CommandFailed(f"no checkpoint or session {rid} in this store")
    _output.say(f"deleted {noun} {rid}")


@app.command()
@_reports_failures
def verify(
    record_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID]", help="Check only this record; by default all of them."
        ),
    ] = None,
    root: Root = None,
    block: BlockRef = None,
) -> None:
    """Reads stored records back and checks every blob against its checksum.

    Exits 1 when a record is damaged, naming it and the blob.
    """
    rid = None if record_id is None else parse_id(record_id)
    store = open_store(root, block)
    if rid is not None:
        count = 1
        find_info(store, rid)
    else:
        count = len(store.list_checkpoints()) + len(store.list_sessions())
    with _output.transfer_bar("verifying"):
        problems = store.verify(rid)
    for problem in problems:
        _output.say(f"DAMAGED {problem.record_id}: {problem}")
    plural = "" if count == 1 else "s"
    if problems:
        _output.fail(f"{len(problems)} of {count} record{plural} damaged")
        raise typer.Exit(1)
    _output.say(f"verified {count} record{plural}: all blobs match their checksums")


@app.command("export")
@_reports_failures
def export_record(
    record_id: RecordId,
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Folder to write to; created if missing."),
    ],
    root: Root = None,
    block: BlockRef = None,
) -> None:
    """Copies one record into a folder, as a file-system store of its own.

    The copy keeps the id and is verified on the way; ``import`` reads it back
    into any store.
    """
    rid = parse_id(record_id)
    store = open_store(root, block)
    info = find_info(store, rid)
    record = _load(store, info)
    target = FileSystemStore(root=str(directory))
    with _output.transfer_bar(f"writing {rid}"):
        _save(target, record, rid)
    noun = "checkpoint" if isinstance(info, CheckpointInfo) else "session"
    size = human_size(sum(info.sizes.values()))
    _output.say(f"exported {noun} {rid} ({size}) to {directory}")


@app.command("import")
@_reports_failures
def import_records(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="A folder written by export (a file-system store)."
        ),
    ],
    root: Root = None,
    block: BlockRef = None,
) -> None:
    """Copies every record of an exported folder into the store, keeping ids.

    Each record is verified as it is read; a record with the same id in the
    store is replaced atomically.
    """
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a folder", param_hint="'DIR'")
    source = FileSystemStore(root=str(directory), create_root=False)
    infos: list[Any] = [*source.list_checkpoints(), *source.list_sessions()]
    if not infos:
        raise CommandFailed(f"{directory} holds no checkpoint or session to import")
    store = open_store(root, block, create=True)
    for number, info in enumerate(infos, 1):
        record = _load(source, info)
        with _output.transfer_bar(f"writing {number}/{len(infos)}"):
            _save(store, record, info.id)
        noun = "checkpoint" if isinstance(info, CheckpointInfo) else "session"
        size = human_size(sum(info.sizes.values()))
        _output.say(f"imported {noun} {info.id} ({size})")
    _output.say(f"imported {len(infos)} record{'' if len(infos) == 1 else 's'}")


@app.command(
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def demo(ctx: typer.Context) -> None:
    """Runs the demo: python -m statecheckpoint.demo, with every option given."""
    command = [sys.executable, "-m", "statecheckpoint.demo", *ctx.args]
    raise typer.Exit(subprocess.call(command))


def _load(store: CheckpointStore, info: Any) -> ModelCheckpoint | InferenceSession:
    with _output.transfer_bar(f"reading {info.id}"):
        if isinstance(info, CheckpointInfo):
            record: Any = store.load_checkpoint(info.id)
        else:
            record = store.load_session(info.id)
    if record is None:
        raise CommandFailed(f"record {info.id} disappeared while it was read")
    return record


def _save(
    store: CheckpointStore, record: ModelCheckpoint | InferenceSession, rid: Any
) -> None:
    """Saves a copy under the same id, keeping its creation time."""
    if isinstance(record, ModelCheckpoint):
        encoded = _codec.encode_checkpoint(record, rid)
    else:
        encoded = _codec.encode_session(record, rid)
    if record.created_at is not None:
        encoded.created_at = record.created_at
        encoded.summary["created_at"] = record.created_at.isoformat()
    store.write_encoded(encoded)


def _record_details(
    record: ModelCheckpoint | InferenceSession,
) -> list[tuple[str, str]]:
    if isinstance(record, InferenceSession):
        sampling = (
            record.sampling.model_dump(exclude_none=True) if record.sampling else {}
        )
        head = record.token_history[:8]
        more = " ..." if len(record.token_history) > len(head) else ""
        return [
            ("sampling", _pairs(sampling)),
            ("token history", " ".join(map(str, head)) + more or "-"),
        ]
    rows = []
    tokenizer = record.tokenizer
    if tokenizer is not None:
        specials = _pairs(tokenizer.special_tokens)
        rows.append(
            (
                "tokenizer",
                f"{tokenizer.type}: {len(tokenizer.token_to_id)} tokens, "
                f"{len(tokenizer.merge_rules)} merges, special {specials}",
            )
        )
    else:
        rows.append(("tokenizer", "-"))
    hyper = record.hyperparameters
    hyper_values = hyper.model_dump(exclude_none=True) if hyper is not None else {}
    rows.append(("hyperparameters", _pairs(hyper_values)))
    return rows


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "-"


def main() -> None:
    """Runs the command line; the process exits with its status."""
    app(prog_name="statecheckpoint")
