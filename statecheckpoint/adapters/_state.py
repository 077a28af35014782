"""Nested state (an optimizer's ``state_dict``) as one safetensors blob, no pickle.

Every tensor in the structure becomes a safetensors entry named by its path
(``state.0.exp_avg``); the structure around them becomes JSON in the blob's
``__metadata__``, with each tensor replaced by a reference to its entry. JSON
objects in that document are always type markers (``__dict__``, ``__tuple__``,
``__tensor__``, ``__float__``), so dict keys of any scalar type (optimizers key
their state by int), tuples (``betas``) and NaN or infinities come back as they
went in, and the document stays strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from statecheckpoint.adapters._safetensors import RawTensor, pack, unpack
from statecheckpoint.errors import InvalidInputError

__all__ = ["STATE_FORMAT", "pack_state", "unpack_state"]

STATE_FORMAT = "statecheckpoint.state/1"
_FORMAT_KEY = "format"
_STRUCTURE_KEY = "structure"

Leaf = tuple[RawTensor, str]
"""A tensor's raw form and its kind (``"tensor"``, or ``"scalar"`` for numpy's)."""
Encode = Callable[[Any], Leaf | None]
Decode = Callable[[RawTensor, str], Any]


def _key_path(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key)


def pack_state(state: Any, encode: Encode) -> bytearray:
    """Writes a nested structure of dicts, lists, tuples, scalars and tensors.

    Args:
        state: The structure, such as ``optimizer.state_dict()``.
        encode: Returns a tensor's raw form and kind, or None for a non-tensor.

    Raises:
        InvalidInputError: For a value that is neither a tensor, a container nor
            a JSON scalar, naming where it is.
    """
    tensors: dict[str, RawTensor] = {}

    def walk(value: Any, path: str) -> Any:
        leaf = encode(value)
        if leaf is not None:
            raw, kind = leaf
            name, n = path or "tensor", 1
            while name in tensors:
                n += 1
                name = f"{path}#{n}"
            tensors[name] = raw
            return {"__tensor__": name, "kind": kind}
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        prefix = f"{path}." if path else ""
        if isinstance(value, Mapping):
            return {
                "__dict__": [
                    [walk(k, f"{prefix}<key>"), walk(v, prefix + _key_path(k))]
                    for k, v in value.items()
                ]
            }
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{prefix}{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{prefix}{i}") for i, v in enumerate(value)]
        raise InvalidInputError(
            f"state at {path or 'the top'!r}: a {type(value).__name__} cannot be "
            "stored; use tensors, dict, list, tuple, str, int, float, bool or None"
        )

    structure = walk(state, "")
    metadata = {
        _FORMAT_KEY: STATE_FORMAT,
        _STRUCTURE_KEY: json.dumps(structure, ensure_ascii=True, allow_nan=False),
    }
    return pack(tensors, metadata)


def unpack_state(blob: Any, decode: Decode) -> Any:
    """Reads what :func:`pack_state` wrote; tensors are rebuilt by ``decode``.

    Raises:
        InvalidInputError: When the blob was not written by :func:`pack_state`.
    """
    tensors, metadata = unpack(blob)
    if metadata.get(_FORMAT_KEY) != STATE_FORMAT:
        raise InvalidInputError(
            "the blob holds plain tensors, not a saved state; read it with "
            "from_safetensors, or save the state with state_to_bytes"
        )
    try:
        structure = json.loads(metadata[_STRUCTURE_KEY])
    except (KeyError, ValueError) as exc:
        raise InvalidInputError(f"the saved state cannot be parsed ({exc})") from None

    def build(node: Any) -> Any:
        if isinstance(node, list):
            return [build(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            name = node["__tensor__"]
            if name not in tensors:
                raise InvalidInputError(f"the saved state lacks tensor {name!r}")
            return decode(tensors[name], node.get("kind", "tensor"))
        if "__dict__" in node:
            return {build(k): build(v) for k, v in node["__dict__"]}
        if "__tuple__" in node:
            return tuple(build(item) for item in node["__tuple__"])
        if "__float__" in node:
            return float(node["__float__"])
        raise InvalidInputError(f"the saved state has an unknown entry {node!r}")

    return build(structure)
