"""numpy arrays to safetensors blobs and back (extra: ``statecheckpoint[numpy]``).

Example:
    ```python
    import numpy as np
    from statecheckpoint import ModelCheckpoint
    from statecheckpoint.adapters import numpy as np_adapter

    arrays = {"embed": np.zeros((512, 64), np.float32), "bias": np.ones(64)}
    checkpoint = ModelCheckpoint(weights=np_adapter.to_safetensors(arrays))
    restored = np_adapter.from_safetensors(checkpoint.weights)
    ```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from statecheckpoint.adapters._safetensors import RawTensor, pack, unpack
from statecheckpoint.adapters._state import Leaf, pack_state, unpack_state
from statecheckpoint.errors import InvalidInputError

__all__ = ["from_safetensors", "state_from_bytes", "state_to_bytes", "to_safetensors"]

_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def _raw(array: np.ndarray, where: str) -> RawTensor:
    swapped = array.dtype.byteorder == ">"
    little = array.dtype.newbyteorder("<") if swapped else array.dtype
    name = _NAMES.get(little)
    if name is None:
        raise InvalidInputError(
            f"{where}: numpy dtype {array.dtype} has no safetensors equivalent; "
            f"use one of {', '.join(sorted(str(d) for d in _NAMES))}"
        )
    contiguous = np.ascontiguousarray(array.astype(little) if swapped else array)
    data = contiguous.reshape(-1).view(np.uint8).data
    return RawTensor(name, tuple(array.shape), data)


def _array(raw: RawTensor, name: str, copy: bool) -> np.ndarray:
    dtype = _DTYPES.get(raw.dtype)
    if dtype is None:
        raise InvalidInputError(
            f"tensor {name!r} is {raw.dtype}, which numpy cannot hold; load it with "
            "statecheckpoint.adapters.torch"
        )
    array = np.frombuffer(raw.data, dtype=dtype).reshape(raw.shape)
    return array.copy() if copy else array


def to_safetensors(
    arrays: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> bytearray:
    """Packs named arrays into one safetensors blob, taking one copy of them.

    Args:
        arrays: Name to array (anything ``np.asarray`` takes).
        metadata: Free ``str`` to ``str`` pairs stored in the blob's header.

    Returns:
        A blob that any safetensors reader opens.

    Raises:
        InvalidInputError: For a dtype safetensors lacks (objects, complex, ...).
    """
    tensors = {name: _raw(np.asarray(value), name) for name, value in arrays.items()}
    return pack(tensors, metadata)


def from_safetensors(blob: Any, *, copy: bool = False) -> dict[str, np.ndarray]:
    """Reads a safetensors blob into named arrays.

    Args:
        blob: The blob, e.g. a loaded checkpoint's ``weights``.
        copy: Copy each array; by default they are views sharing the blob's
            memory (writable when the blob is a ``bytearray``, as loaded).

    Raises:
        InvalidInputError: When the blob is not safetensors, or holds a dtype
            numpy lacks (bfloat16, float8).
    """
    tensors, _ = unpack(blob)
    return {name: _array(raw, name, copy) for name, raw in tensors.items()}


def _leaf(value: Any) -> Leaf | None:
    if isinstance(value, np.ndarray):
        return _raw(value, "array"), "tensor"
    if isinstance(value, np.generic):
        return _raw(np.asarray(value), "scalar"), "scalar"
    return None


def state_to_bytes(state: Any) -> bytearray:
    """Packs nested state (dicts, lists, tuples, scalars and arrays) into a blob.

    Raises:
        InvalidInputError: For a value that cannot be stored, naming its path.
    """
    return pack_state(state, _leaf)


def state_from_bytes(blob: Any, *, copy: bool = False) -> Any:
    """Reads what :func:`state_to_bytes` wrote (or the torch adapter's twin).

    Args:
        blob: The blob, e.g. a loaded checkpoint's ``optimizer_state``.
        copy: Copy each array instead of viewing the blob.
    """

    def decode(raw: RawTensor, kind: str) -> Any:
        array = _array(raw, "state", copy)
        return array[()] if kind == "scalar" else array

    return unpack_state(blob, decode)
