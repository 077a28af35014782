"""The GIL-free xxh3-128 gives the xxhash package's digests, or defers to it."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from statecheckpoint import _codec, _xxh3


@pytest.mark.parametrize("size", [0, 1, 240, 241, 1 << 20, (3 << 20) + 7])
@pytest.mark.parametrize("parts", [1, 3])
def test_digest_equals_the_xxhash_package(size, parts):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    bounds = [size * i // parts for i in range(parts + 1)]
    hasher = _xxh3.new()

    for start, end in zip(bounds, bounds[1:], strict=False):
        hasher.update(memoryview(data)[start:end])

    assert hasher.hexdigest() == xxhash.xxh3_128(data.tobytes()).hexdigest()


def test_it_is_used_where_the_symbols_are_exported():
    assert _xxh3.AVAILABLE, "expected the xxhash extension to export XXH3_*"
    assert isinstance(_codec.new_hasher(), _xxh3.GilFreeHasher)


def test_new_defers_to_the_package_when_unavailable(monkeypatch):
    monkeypatch.setattr(_xxh3, "AVAILABLE", False)

    hasher = _xxh3.new()
    hasher.update(b"abc")

    assert hasher.hexdigest() == xxhash.xxh3_128(b"abc").hexdigest()
