"""Model fingerprints: the name a KV-cache is tied to.

A KV-cache is only meaningful for the exact model that computed it. Saving the
model's fingerprint with a session, and passing the fingerprint of the model at
hand to ``load(..., expected_fingerprint=...)``, turns "wrong model" into an
error at load instead of garbage at generation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from statecheckpoint.errors import InvalidInputError
from statecheckpoint.models import as_byte_view

__all__ = ["fingerprint"]

_CHUNK = 64 << 20


def fingerprint(config: Mapping[str, Any], weights: Any) -> str:
    """Returns the hex SHA-256 of a model's configuration and exact weights.

    The configuration is hashed as JSON with sorted keys, so key order does not
    matter; then the weights' bytes, read in place (no copy). SHA-256 reads
    about 1 GB/s: compute it once per loaded model, not per request.

    Args:
        config: The model's shape and settings, JSON-able (e.g. hidden size,
            layers, heads, vocabulary size).
        weights: The weights as one buffer: bytes, bytearray, memoryview, a
            contiguous numpy array, or a checkpoint's loaded ``weights``.

    Returns:
        64 hex digits.

    Raises:
        InvalidInputError: When the config is not JSON-able or the weights are
            not a contiguous buffer.

    Example:
        ```python
        import numpy as np
        from statecheckpoint import fingerprint

        weights = np.zeros(1000, dtype=np.float32)
        fingerprint({"hidden_size": 64, "num_layers": 2}, weights)
        ```
    """
    try:
        text = json.dumps(dict(config), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"fingerprint config: not JSON-able ({exc}); use str, int, float, bool, "
            "None, lists and dicts with str keys"
        ) from None
    digest = hashlib.sha256(text.encode("utf-8"))
    view = as_byte_view(weights, "fingerprint weights")
    for start in range(0, len(view), _CHUNK):
        digest.update(view[start : start + _CHUNK])
    return digest.hexdigest()
