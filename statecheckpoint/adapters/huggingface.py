"""Exports a stored checkpoint to a folder Hugging Face tools load.

The folder holds ``model.safetensors`` (the checkpoint's weights blob, written
as stored: it must already be safetensors, see :mod:`statecheckpoint.adapters`),
``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``
(when the checkpoint has a tokenizer; needs the ``tokenizers`` extra) and
``config.json`` (the hyperparameters, plus where the checkpoint came from).
``safetensors.safe_open``, ``tokenizers.Tokenizer.from_file`` and
``transformers.PreTrainedTokenizerFast.from_pretrained`` read it. A
``transformers`` model class needs its own keys in ``config.json`` (such as
``model_type``): add them as extra hyperparameters.

Example:
    ```python
    from statecheckpoint import FileSystemStore
    from statecheckpoint.adapters.huggingface import export_huggingface

    store = FileSystemStore(root="./checkpoints")
    export_huggingface(store.load_checkpoint(checkpoint_id), "./exported")
    ```
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from statecheckpoint.adapters._safetensors import unpack
from statecheckpoint.errors import InvalidInputError, NotFoundError
from statecheckpoint.models import ModelCheckpoint

__all__ = ["export_huggingface"]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
# Names transformers gives its own special-token slots.
_HF_ROLES = ("bos", "eos", "unk", "pad", "sep", "cls", "mask")


def _write(path: Path, data: Any) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _write_json(path: Path, value: Any) -> None:
    _write(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode())


def export_huggingface(
    checkpoint: ModelCheckpoint | None, folder: str | os.PathLike[str]
) -> Path:
    """Writes a checkpoint as a Hugging Face model folder.

    Args:
        checkpoint: A loaded checkpoint whose ``weights`` are safetensors.
        folder: Where to write; created when missing, and it must not already
            hold a ``model.safetensors``.

    Returns:
        The folder.

    Raises:
        NotFoundError: When ``checkpoint`` is None (a load found nothing).
        InvalidInputError: When the weights are not safetensors, naming the fix,
            or the folder already holds an export.
    """
    if checkpoint is None:
        raise NotFoundError("no checkpoint to export: the load returned None")
    try:
        tensors, _ = unpack(checkpoint.weights)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"checkpoint {checkpoint.id}: its weights are not safetensors ({exc}); "
            "save them with statecheckpoint.adapters.numpy.to_safetensors (or the "
            "torch twin), or set checkpoint.weights to such a blob before export"
        ) from None

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    if (target / WEIGHTS_FILE).exists():
        raise InvalidInputError(
            f"{target / WEIGHTS_FILE} exists; export to an empty folder"
        )

    config: dict[str, Any] = {}
    if checkpoint.hyperparameters is not None:
        config.update(checkpoint.hyperparameters.model_dump(exclude_none=True))
    config["statecheckpoint"] = {
        "checkpoint_id": str(checkpoint.id) if checkpoint.id else None,
        "epoch": checkpoint.epoch,
        "loss": checkpoint.loss,
        "tags": checkpoint.tags,
    }
    _write_json(target / "config.json", config)
    if checkpoint.tokenizer is not None:
        _export_tokenizer(checkpoint, target)
    # The weights last: a folder with model.safetensors is a finished export.
    _write(target / WEIGHTS_FILE, checkpoint.weights)
    logger.info(
        "exported checkpoint %s (%d tensors) to %s", checkpoint.id, len(tensors), target
    )
    return target


def _export_tokenizer(checkpoint: ModelCheckpoint, target: Path) -> None:
    from statecheckpoint.adapters.tokenizers import from_tokenizer_data

    data = checkpoint.tokenizer
    assert data is not None
    from_tokenizer_data(data).save(str(target / "tokenizer.json"))

    special_map: dict[str, Any] = {}
    additional = []
    for name, token_id in sorted(data.special_tokens.items(), key=lambda i: i[1]):
        text = data.id_to_token[token_id]
        if name in _HF_ROLES:
            special_map[f"{name}_token"] = text
        else:
            additional.append(text)
    if additional:
        special_map["additional_special_tokens"] = additional
    _write_json(target / "special_tokens_map.json", special_map)
    _write_json(
        target / "tokenizer_config.json",
        {"tokenizer_class": "PreTrainedTokenizerFast", **special_map},
    )
