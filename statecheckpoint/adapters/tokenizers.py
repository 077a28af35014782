"""``TokenizerData`` to and from a ``tokenizers.Tokenizer`` (extra: ``tokenizers``).

:class:`~statecheckpoint.TokenizerData` holds a byte-level BPE: vocabulary, merge
rules in priority order and named special tokens. That is the whole of a
tokenizer trained the usual way (``models.BPE`` with a ``ByteLevel``
pre-tokenizer and decoder, special tokens given to the trainer), so such a
tokenizer survives the round trip exactly: its ``to_str()`` is the same before
and after. A tokenizer with more to it (a normalizer, a post-processor, dropout,
non-special added tokens) is refused rather than stored without those parts.

Example:
    ```python
    from tokenizers import Tokenizer
    from statecheckpoint.adapters.tokenizers import (
        from_tokenizer_data, to_tokenizer_data,
    )

    data = to_tokenizer_data(Tokenizer.from_file("tokenizer.json"))
    tokenizer = from_tokenizer_data(data)   # encodes exactly as the original
    ```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from statecheckpoint.errors import InvalidInputError
from statecheckpoint.models import MergeRule, TokenizerData

__all__ = ["from_tokenizer_data", "special_token_name", "to_tokenizer_data"]

TOKENIZER_TYPE = "ByteLevelBPE"


def special_token_name(text: str) -> str:
    """Names a special token by its text: ``"<bos>"`` is ``"bos"``, ``"[CLS]"``
    is ``"cls"``, ``"<|endoftext|>"`` is ``"endoftext"``."""
    return text.strip("<>[]|").lower() or text


def _merge(entry: str | list[str]) -> MergeRule:
    # tokenizers before 0.20 wrote a merge as "left right", later ones as a pair.
    left, right = entry.split(" ", 1) if isinstance(entry, str) else entry
    return MergeRule(left, right)


def to_tokenizer_data(
    tokenizer: Tokenizer, special_tokens: Mapping[str, str] | None = None
) -> TokenizerData:
    """Converts a byte-level BPE tokenizer to the record checkpoints carry.

    Args:
        tokenizer: A trained or loaded ``tokenizers.Tokenizer``.
        special_tokens: Name to token text, e.g. ``{"bos": "<s>"}``. By default
            every special token is named by :func:`special_token_name`. The
            unknown token must be named ``"unk"``.

    Returns:
        The record; :func:`from_tokenizer_data` rebuilds the same tokenizer.

    Raises:
        InvalidInputError: When the tokenizer holds something the record
            cannot (naming the part), or a named special token is missing.
    """
    document = json.loads(tokenizer.to_str())
    model = document.get("model", {})
    if model.get("type") != "BPE":
        raise InvalidInputError(
            f"tokenizer model {model.get('type')!r}: only BPE tokenizers convert"
        )
    vocab: dict[str, int] = dict(sorted(model["vocab"].items(), key=lambda i: i[1]))

    added = document.get("added_tokens") or []
    if special_tokens is None:
        special_tokens = {
            special_token_name(token["content"]): token["content"]
            for token in added
            if token.get("special")
        }
    special: dict[str, int] = {}
    for name, text in special_tokens.items():
        if text not in vocab:
            raise InvalidInputError(
                f"special token {name}={text!r} is not in the tokenizer's vocabulary"
            )
        special[name] = vocab[text]

    data = TokenizerData(
        type=TOKENIZER_TYPE,
        token_to_id=vocab,
        id_to_token={token_id: token for token, token_id in vocab.items()},
        merge_rules=[_merge(entry) for entry in model.get("merges", [])],
        special_tokens=special,
    )
    _check_round_trip(document, json.loads(from_tokenizer_data(data).to_str()))
    return data


def _check_round_trip(original: dict[str, Any], rebuilt: dict[str, Any]) -> None:
    for part in sorted(set(original) | set(rebuilt)):
        if part == "model":
            for key in sorted(set(original[part]) | set(rebuilt[part])):
                if original[part].get(key) != rebuilt[part].get(key):
                    raise InvalidInputError(
                        f"tokenizer model.{key} = {original[part].get(key)!r:.80}: "
                        "TokenizerData cannot hold it (it holds a byte-level BPE)"
                    )
        elif original.get(part) != rebuilt.get(part):
            raise InvalidInputError(
                f"tokenizer {part} = {original.get(part)!r:.80}: TokenizerData "
                "cannot hold it (it holds a byte-level BPE without it)"
            )


def from_tokenizer_data(data: TokenizerData) -> Tokenizer:
    """Rebuilds a working ``tokenizers.Tokenizer`` from the record.

    Raises:
        InvalidInputError: When the record is not a byte-level BPE, or its
            vocabulary and special tokens disagree.
    """
    if data.type != TOKENIZER_TYPE:
        raise InvalidInputError(
            f"tokenizer type {data.type!r}: only {TOKENIZER_TYPE!r} can be rebuilt"
        )
    for token_id in data.special_tokens.values():
        if token_id not in data.id_to_token:
            raise InvalidInputError(
                f"special token id {token_id} is not in the vocabulary"
            )
    unk = data.special_tokens.get("unk")
    tokenizer = Tokenizer(
        models.BPE(
            vocab=dict(data.token_to_id),
            merges=[(rule.left, rule.right) for rule in data.merge_rules],
            unk_token=None if unk is None else data.id_to_token[unk],
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()

    # The special tokens are in the vocabulary already; registering them keeps
    # the pre-tokenizer from splitting them when they appear in text.
    tokenizer.add_special_tokens(
        [
            AddedToken(data.id_to_token[token_id], special=True, normalized=False)
            for token_id in sorted(set(data.special_tokens.values()))
        ]
    )
    return tokenizer
