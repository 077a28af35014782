"""The demo's text and tokenizer: Python's own help topics and a byte-level BPE.

The text ships with every CPython (``pydoc_data.topics``), so the demo downloads
nothing. The tokenizer is trained with the ``tokenizers`` package and converted both
ways to the library's ``TokenizerData``, which is how it travels inside checkpoints.
"""

from __future__ import annotations

import json

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from statecheckpoint.models import MergeRule, TokenizerData

__all__ = [
    "SPECIAL_TOKENS",
    "documents",
    "special_id",
    "train_tokenizer",
    "to_tokenizer_data",
    "from_tokenizer_data",
    "encode_documents",
]

SPECIAL_TOKENS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}


def documents() -> list[str]:
    """Returns the help topics that ship with Python, in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _byte_level(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Trains a byte-level BPE tokenizer with the demo's special tokens.

    Args:
        texts: The training documents.
        vocab_size: Target vocabulary size, special tokens and the 256 bytes included.

    Returns:
        The trained tokenizer.
    """
    tokenizer = _byte_level(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _merge_rule(entry: str | list[str]) -> MergeRule:
    # Older tokenizers write a merge as "left right", newer ones as [left, right].
    if isinstance(entry, str):
        left, right = entry.split(" ", 1)
        return MergeRule(left, right)
    left, right = entry
    return MergeRule(left, right)


def special_id(tokenizer: Tokenizer, name: str) -> int:
    """Returns the id of a special token by name ("bos", "eos", "pad", "unk").

    Raises:
        ValueError: When the tokenizer lacks it.
    """
    token_id = tokenizer.token_to_id(SPECIAL_TOKENS[name])
    if token_id is None:
        raise ValueError(f"special token {SPECIAL_TOKENS[name]!r} is missing")
    return token_id


def to_tokenizer_data(tokenizer: Tokenizer) -> TokenizerData:
    """Converts a trained byte-level BPE tokenizer to the library's record."""
    model = json.loads(tokenizer.to_str())["model"]
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {name: special_id(tokenizer, name) for name in SPECIAL_TOKENS}

    return TokenizerData(
        type="ByteLevelBPE",
        token_to_id=dict(sorted(vocab.items(), key=lambda item: item[1])),
        id_to_token={token_id: token for token, token_id in vocab.items()},
        merge_rules=[_merge_rule(entry) for entry in model["merges"]],
        special_tokens=special,
    )


def from_tokenizer_data(data: TokenizerData) -> Tokenizer:
    """Rebuilds a working tokenizer from the library's record."""
    if data.type != "ByteLevelBPE":
        raise ValueError(f"cannot rebuild a tokenizer of type {data.type!r}")
    model = models.BPE(
        vocab=dict(data.token_to_id),
        merges=[(rule.left, rule.right) for rule in data.merge_rules],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    tokenizer = _byte_level(model)

    # Special tokens are already in the vocabulary; registering them keeps the
    # pre-tokenizer from splitting them when they appear in text.
    by_id = sorted(data.special_tokens.values())
    tokenizer.add_special_tokens([data.id_to_token[token_id] for token_id in by_id])
    return tokenizer


def encode_documents(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Encodes documents into one stream, each wrapped in ``<bos>`` and ``<eos>``.

    Returns:
        The token ids as a 1-D int32 array.
    """
    bos, eos = special_id(tokenizer, "bos"), special_id(tokenizer, "eos")
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        stream.append(bos)
        stream.extend(encoding.ids)
        stream.append(eos)
    return np.asarray(stream, dtype=np.int32)
