"""torch tensors and optimizer state to safetensors blobs and back.

Extra: ``statecheckpoint[torch]`` (your own torch is used; numpy is needed too).
Loading never unpickles: weights are plain safetensors, and an optimizer's
``state_dict`` is safetensors whose ``__metadata__`` holds the structure as JSON.

Example:
    ```python
    import torch
    from statecheckpoint import ModelCheckpoint
    from statecheckpoint.adapters import torch as torch_adapter

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    checkpoint = ModelCheckpoint(
        weights=torch_adapter.to_safetensors(model.state_dict()),
        optimizer_state=torch_adapter.state_to_bytes(optimizer.state_dict()),
    )
    model.load_state_dict(torch_adapter.from_safetensors(checkpoint.weights))
    optimizer.load_state_dict(torch_adapter.state_from_bytes(checkpoint.optimizer_state))
    ```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from statecheckpoint.adapters._safetensors import RawTensor, pack, unpack
from statecheckpoint.adapters._state import Leaf, pack_state, unpack_state
from statecheckpoint.errors import InvalidInputError

__all__ = ["from_safetensors", "state_from_bytes", "state_to_bytes", "to_safetensors"]

_DTYPES: dict[str, torch.dtype] = {
    name: dtype
    for name, dtype in {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "I16": torch.int16,
        "U16": getattr(torch, "uint16", None),
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I32": torch.int32,
        "U32": getattr(torch, "uint32", None),
        "F32": torch.float32,
        "I64": torch.int64,
        "U64": getattr(torch, "uint64", None),
        "F64": torch.float64,
        "F8_E5M2": getattr(torch, "float8_e5m2", None),
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
    }.items()
    if dtype is not None
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def _raw(tensor: torch.Tensor, where: str) -> RawTensor:
    name = _NAMES.get(tensor.dtype)
    if name is None or tensor.layout != torch.strided:
        raise InvalidInputError(
            f"{where}: a {tensor.layout} tensor of {tensor.dtype} has no "
            "safetensors equivalent; convert it to a dense tensor of a plain dtype"
        )
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().data
    return RawTensor(name, tuple(tensor.shape), data)


def _tensor(raw: RawTensor, device: str | torch.device) -> torch.Tensor:
    dtype = _DTYPES.get(raw.dtype)
    if dtype is None:
        raise InvalidInputError(f"this torch has no dtype for {raw.dtype}")
    if len(raw.data) == 0:
        tensor = torch.empty(raw.shape, dtype=dtype)
    else:
        # A read-only blob (bytes) is copied: torch tensors are always writable.
        data = bytearray(raw.data) if raw.data.readonly else raw.data
        tensor = torch.frombuffer(data, dtype=dtype).reshape(raw.shape)
    return tensor if str(device) == "cpu" else tensor.to(device)


def to_safetensors(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytearray:
    """Packs named tensors (a ``state_dict``) into one safetensors blob.

    Tensors on another device are copied to the CPU first. Tensors that share
    memory (tied weights) are stored once per name.

    Args:
        tensors: Name to tensor, e.g. ``model.state_dict()``.
        metadata: Free ``str`` to ``str`` pairs stored in the blob's header.

    Raises:
        InvalidInputError: For a sparse or quantized tensor or an exotic dtype.
    """
    return pack({name: _raw(t, name) for name, t in tensors.items()}, metadata)


def from_safetensors(
    blob: Any, *, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Reads a safetensors blob into named tensors.

    On the CPU the tensors share the blob's memory when it is a ``bytearray``
    (as loaded); pass ``device`` to move them.

    Raises:
        InvalidInputError: When the blob is not safetensors.
    """
    tensors, _ = unpack(blob)
    return {name: _tensor(raw, device) for name, raw in tensors.items()}


def _leaf(value: Any) -> Leaf | None:
    if isinstance(value, torch.Tensor):
        return _raw(value, "tensor"), "tensor"
    return None


def state_to_bytes(state: Any) -> bytearray:
    """Packs an optimizer's ``state_dict`` (or any nested state) into a blob.

    Raises:
        InvalidInputError: For a value that cannot be stored, naming its path.
    """
    return pack_state(state, _leaf)


def state_from_bytes(blob: Any, *, device: str | torch.device = "cpu") -> Any:
    """Reads what :func:`state_to_bytes` wrote, without unpickling anything.

    Args:
        blob: The blob, e.g. a loaded checkpoint's ``optimizer_state``.
        device: Where the tensors go; ``optimizer.load_state_dict`` moves them to
            their parameters' device anyway.
    """
    return unpack_state(blob, lambda raw, kind: _tensor(raw, device))
