"""SQL text and binary COPY streaming for the PostgreSQL store.

Nothing here imports psycopg: the statements are plain strings and the COPY
helpers work on any object with the ``write``/iteration shape of
``psycopg.Copy``, so that the module is importable (and testable) without the
driver.
"""

from __future__ import annotations

import json
import struct
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from statecheckpoint import _progress
from statecheckpoint._codec import Kind
from statecheckpoint.blocks._fsutil import Cancelled
from statecheckpoint.errors import IntegrityError, InvalidInputError

RECORDS = "statecheckpoint_records"
CHUNKS = "statecheckpoint_chunks"
DEFAULT_CHUNK_BYTES = 8 << 20
MAX_CHUNK_BYTES = 256 << 20
LOCK_NAMESPACE = "statecheckpoint.ensure_schema:"

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _SIGNATURE + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_ONE_FIELD = struct.Struct("!hi")
_ESCAPED = "\ufffd"


class CopyIn(Protocol):
    def write(self, buffer: Any) -> None: ...


def check_schema_name(value: str) -> str:
    """Returns a usable schema name, or raises InvalidInputError."""
    if not value or "\x00" in value or len(value.encode("utf-8", "replace")) > 63:
        raise InvalidInputError(
            f"schema_name {value!r}: expected 1 to 63 bytes and no NUL character"
        )
    return value


def quote_ident(name: str) -> str:
    """Quotes an SQL identifier (already checked by :func:`check_schema_name`)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Statements:
    """Every statement the store sends, for one schema."""

    schema: str

    @property
    def records(self) -> str:
        return f"{quote_ident(self.schema)}.{RECORDS}"

    @property
    def chunks(self) -> str:
        return f"{quote_ident(self.schema)}.{CHUNKS}"

    @property
    def ddl(self) -> list[tuple[str, list[str]]]:
        """``(object, statements)`` pairs; an object is created only when missing."""
        schema = quote_ident(self.schema)
        return [
            (self.records, [RECORDS_DDL.format(records=self.records)]),
            (
                f"{schema}.{RECORDS}_tags",
                [
                    f"CREATE INDEX {RECORDS}_tags ON {self.records} "
                    "USING gin (tags jsonb_path_ops)"
                ],
            ),
            (
                f"{schema}.{RECORDS}_created",
                [
                    f"CREATE INDEX {RECORDS}_created ON {self.records} "
                    "(kind, created_at DESC)"
                ],
            ),
            (
                self.chunks,
                [
                    CHUNKS_DDL.format(records=self.records, chunks=self.chunks),
                    # Blob bytes do not compress; skip the attempt.
                    f"ALTER TABLE {self.chunks} ALTER COLUMN data SET STORAGE EXTERNAL",
                ],
            ),
        ]

    @property
    def upsert_record(self) -> str:
        return (
            f"INSERT INTO {self.records} (kind, id, created_at, tags, summary, body) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (kind, id) DO UPDATE SET "
            "created_at = EXCLUDED.created_at, tags = EXCLUDED.tags, "
            "summary = EXCLUDED.summary, body = EXCLUDED.body"
        )

    @property
    def delete_chunks(self) -> str:
        return f"DELETE FROM {self.chunks} WHERE kind = %s AND record_id = %s"

    @property
    def copy_in(self) -> str:
        return (
            f"COPY {self.chunks} (kind, record_id, blob, seq, data) "
            "FROM STDIN (FORMAT BINARY)"
        )

    @property
    def select_record(self) -> str:
        return f"SELECT summary, body FROM {self.records} WHERE kind = %s AND id = %s"

    @property
    def blob_sizes(self) -> str:
        # octet_length of an out-of-line value reads its TOAST pointer only.
        return (
            f"SELECT blob, sum(octet_length(data))::bigint FROM {self.chunks} "
            "WHERE kind = %s AND record_id = %s GROUP BY blob"
        )

    @property
    def copy_out(self) -> str:
        return (
            f"COPY (SELECT data FROM {self.chunks} WHERE kind = %s "
            "AND record_id = %s AND blob = %s ORDER BY seq) TO STDOUT (FORMAT BINARY)"
        )

    @property
    def list_all(self) -> str:
        return (
            f"SELECT summary FROM {self.records} WHERE kind = %s "
            "ORDER BY created_at DESC, id DESC"
        )

    @property
    def list_tagged(self) -> str:
        return (
            f"SELECT summary FROM {self.records} WHERE kind = %s AND tags @> %s "
            "ORDER BY created_at DESC, id DESC"
        )

    @property
    def delete_record(self) -> str:
        return f"DELETE FROM {self.records} WHERE kind = %s AND id = %s"


RECORDS_DDL = """\
CREATE TABLE {records} (
    kind text NOT NULL CHECK (kind IN ('models', 'sessions')),
    id uuid NOT NULL,
    created_at timestamptz NOT NULL,
    tags jsonb NOT NULL,
    summary text NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (kind, id)
)"""

CHUNKS_DDL = """\
CREATE TABLE {chunks} (
    kind text NOT NULL,
    record_id uuid NOT NULL,
    blob text NOT NULL,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (kind, record_id, blob, seq),
    FOREIGN KEY (kind, record_id) REFERENCES {records} (kind, id) ON DELETE CASCADE
)"""


# -- tags ---------------------------------------------------------------------


def sql_text(text: str) -> str:
    """Maps a tag key or value to a string JSONB accepts, injectively.

    Text with no NUL, no lone surrogate and no U+FFFD is kept as is, so the JSONB
    column reads naturally in SQL; anything else becomes U+FFFD followed by its
    ASCII JSON escape, a form no kept string can take.
    """
    if _ESCAPED not in text and "\x00" not in text:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return text
    return _ESCAPED + json.dumps(text)[1:-1]


def sql_tags(tags: dict[str, str]) -> dict[str, str]:
    """Returns the tags as stored in the JSONB column (see :func:`sql_text`)."""
    return {sql_text(key): sql_text(value) for key, value in tags.items()}


# -- binary COPY ----------------------------------------------------------------


def _field(value: bytes) -> bytes:
    return struct.pack("!i", len(value)) + value


def write_chunks(
    copy: CopyIn,
    kind: Kind,
    record_id: uuid.UUID,
    blobs: dict[str, memoryview],
    chunk_bytes: int,
    cancel: threading.Event,
) -> int:
    """Streams every blob as rows of ``chunk_bytes`` in binary COPY format.

    The caller's buffers are sliced, never copied here; the driver copies each
    slice into its send buffer a piece at a time.

    Returns:
        The number of rows written.

    Raises:
        Cancelled: When ``cancel`` is set, checked before each row.
    """
    copy.write(_HEADER)
    prefix = struct.pack("!h", 5) + _field(kind.encode()) + _field(record_id.bytes)
    rows = 0
    for name, view in blobs.items():
        row_prefix = prefix + _field(name.encode())
        for seq, start in enumerate(range(0, len(view), chunk_bytes)):
            if cancel.is_set():
                raise Cancelled(f"cancelled while saving {kind}/{record_id}")
            piece = view[start : start + chunk_bytes]
            copy.write(row_prefix + struct.pack("!iii", 4, seq, len(piece)))
            copy.write(piece)
            _progress.advance(len(piece))
            rows += 1
    copy.write(_TRAILER)
    return rows


def read_chunks(
    messages: Iterable[Any],
    target: bytearray,
    where: str,
    cancel: threading.Event,
) -> int:
    """Fills ``target`` in place from a binary COPY of one ``bytea`` column.

    Args:
        messages: The COPY's data messages (one row each, the first one also
            carrying the file header), as ``psycopg.Copy`` yields them.
        target: The buffer, already of the blob's stored size.
        where: Names the blob, for errors.
        cancel: Checked before each row.

    Returns:
        The number of bytes written into ``target``.

    Raises:
        IntegrityError: When the stream is not what the query returns.
        Cancelled: When ``cancel`` is set.
    """
    view = memoryview(target)
    pos = 0
    header = True
    try:
        for message in messages:
            if cancel.is_set():
                raise Cancelled(f"cancelled while loading {where}")
            offset = 0
            if header:
                offset = _skip_header(message, where)
                header = False
                if offset == len(message):
                    continue
            size = len(message) - offset - _ONE_FIELD.size
            if size < 0:
                if bytes(message[offset:]) == _TRAILER:
                    continue
                count = length = -1
            else:
                count, length = _ONE_FIELD.unpack_from(message, offset)
            if count != 1 or length != size or pos + size > len(target):
                raise IntegrityError(
                    f"{where}: the stored chunks do not add up; the copy is damaged",
                    blob=where,
                )
            view[pos : pos + size] = message[offset + _ONE_FIELD.size :]
            pos += size
            _progress.advance(size)
    finally:
        view.release()
    return pos


def _skip_header(message: Any, where: str) -> int:
    if bytes(message[: len(_SIGNATURE)]) != _SIGNATURE:
        raise IntegrityError(f"{where}: unexpected COPY stream header", blob=where)
    (extension,) = struct.unpack_from("!i", message, len(_SIGNATURE) + 4)
    return len(_HEADER) + extension
