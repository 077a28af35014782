"""The safetensors format, read and written without the ``safetensors`` package.

A blob is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the tensors' bytes back to back. Writing takes
one copy of the tensors (into the blob the store then writes); reading hands out
views into the blob, never copies. Tensors are laid out widest dtype first and the
header is padded with spaces to a multiple of 8, as the reference writer does, so
every tensor starts aligned to its element size.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from statecheckpoint.errors import InvalidInputError

__all__ = ["ITEMSIZE", "RawTensor", "pack", "unpack"]

ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
"""Bytes per element of each safetensors dtype this module reads and writes."""

_MAX_HEADER = 100 << 20
_METADATA = "__metadata__"


class RawTensor(NamedTuple):
    """One tensor as the format sees it: little-endian, C order, flat bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: memoryview


def _not_safetensors(reason: str) -> InvalidInputError:
    return InvalidInputError(
        f"the blob is not in safetensors format: {reason}; was it saved with "
        "statecheckpoint.adapters (to_safetensors or state_to_bytes)?"
    )


def pack(
    tensors: Mapping[str, RawTensor], metadata: Mapping[str, str] | None = None
) -> bytearray:
    """Writes named tensors and string metadata into one new safetensors blob.

    Args:
        tensors: Tensor name to raw tensor.
        metadata: Free ``str`` to ``str`` pairs, stored as ``__metadata__``.

    Returns:
        The blob, ready to be a checkpoint's ``weights`` or ``optimizer_state``.

    Raises:
        InvalidInputError: For a bad name, dtype, shape, size or metadata value.
    """
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidInputError(
                    f"safetensors metadata {key!r}: keys and values must be str"
                )
        header[_METADATA] = dict(metadata)

    order = sorted(
        tensors, key=lambda name: (-ITEMSIZE.get(tensors[name].dtype, 1), name)
    )
    offset = 0
    for name in order:
        tensor = tensors[name]
        if not isinstance(name, str) or not name or name == _METADATA:
            raise InvalidInputError(f"tensor name {name!r}: use a non-empty str")
        if tensor.dtype not in ITEMSIZE:
            raise InvalidInputError(
                f"tensor {name!r}: dtype {tensor.dtype!r} has no safetensors "
                f"equivalent; use one of {', '.join(ITEMSIZE)}"
            )
        size = math.prod(tensor.shape) * ITEMSIZE[tensor.dtype]
        if len(tensor.data) != size:
            raise InvalidInputError(
                f"tensor {name!r}: {len(tensor.data)} bytes for shape "
                f"{list(tensor.shape)} of {tensor.dtype}, expected {size}"
            )
        header[name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size

    try:
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"a tensor name or metadata is not UTF-8 ({exc})"
        ) from None
    encoded += b" " * (-len(encoded) % 8)

    blob = bytearray(8 + len(encoded) + offset)
    struct.pack_into("<Q", blob, 0, len(encoded))
    blob[8 : 8 + len(encoded)] = encoded
    start = 8 + len(encoded)
    view = memoryview(blob)
    for name in order:
        begin, end = header[name]["data_offsets"]
        view[start + begin : start + end] = tensors[name].data
    view.release()
    return blob


def unpack(blob: Any) -> tuple[dict[str, RawTensor], dict[str, str]]:
    """Reads a safetensors blob; each tensor is a view into it, not a copy.

    Args:
        blob: Any buffer: ``bytes``, ``bytearray`` (as loaded), ``memoryview``.

    Returns:
        The tensors by name, in the order they lie in the blob, and the metadata.

    Raises:
        InvalidInputError: When the blob is not a well-formed safetensors blob.
    """
    # Unlike as_byte_view, keep a writable blob writable: the tensors read from a
    # loaded bytearray may then be used in place.
    try:
        view = memoryview(blob)
    except TypeError:
        raise _not_safetensors(f"a {type(blob).__name__} is not a buffer") from None
    if not view.c_contiguous:
        raise _not_safetensors("the buffer is not contiguous")
    view = view.cast("B")
    if len(view) < 8:
        raise _not_safetensors(f"{len(view)} bytes, too short for a header")
    (length,) = struct.unpack_from("<Q", view, 0)
    if length > _MAX_HEADER or 8 + length > len(view):
        raise _not_safetensors(f"a header length of {length} bytes does not fit")
    try:
        header = json.loads(bytes(view[8 : 8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _not_safetensors(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _not_safetensors("the header is not a JSON object")

    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _not_safetensors("__metadata__ is not a map of str to str")

    data = view[8 + length :]
    entries = []
    for name, info in header.items():
        try:
            dtype, shape = info["dtype"], tuple(info["shape"])
            begin, end = info["data_offsets"]
            valid = (
                dtype in ITEMSIZE
                and all(type(n) is int and n >= 0 for n in (*shape, begin, end))
                and end - begin == math.prod(shape) * ITEMSIZE[dtype]
            )
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise _not_safetensors(f"tensor {name!r} has a bad entry {info!r}")
        entries.append((begin, end, name, dtype, shape))

    entries.sort()
    position = 0
    tensors: dict[str, RawTensor] = {}
    for begin, end, name, dtype, shape in entries:
        if begin != position:
            raise _not_safetensors(f"tensor {name!r} starts at {begin}, not {position}")
        tensors[name] = RawTensor(dtype, shape, data[begin:end])
        position = end
    if position != len(data):
        raise _not_safetensors(
            f"the tensors cover {position} bytes, the data holds {len(data)}"
        )
    return tensors, dict(metadata)
