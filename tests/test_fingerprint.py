"""Model fingerprints, and sessions refused when restored for another model."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from statecheckpoint import (
    FingerprintMismatchError,
    InferenceSession,
    InvalidInputError,
    SessionManager,
    fingerprint,
)

CONFIG = {"vocab_size": 640, "hidden_size": 8, "num_layers": 2, "num_heads": 2}


def _weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=4096).astype(np.float32)


def test_fingerprint_is_sha256_of_sorted_config_json_then_weight_bytes():
    weights = _weights()

    expected = hashlib.sha256(
        json.dumps(CONFIG, sort_keys=True).encode() + weights.tobytes()
    ).hexdigest()

    assert fingerprint(CONFIG, weights) == expected
    assert fingerprint(dict(reversed(CONFIG.items())), weights.tobytes()) == expected
    assert fingerprint(CONFIG, memoryview(bytearray(weights.tobytes()))) == expected


def test_fingerprint_changes_with_any_config_value_or_weight_bit():
    weights = _weights()
    flipped = weights.copy()
    flipped.view(np.uint32)[1234] ^= 1

    prints = {
        fingerprint(CONFIG, weights),
        fingerprint({**CONFIG, "num_heads": 4}, weights),
        fingerprint({**CONFIG, "extra": None}, weights),
        fingerprint(CONFIG, flipped),
        fingerprint(CONFIG, weights[:-1]),
    }

    assert len(prints) == 5


@pytest.mark.parametrize(
    ("config", "weights", "match"),
    [
        ({"shape": {1, 2}}, b"", "fingerprint config: not JSON-able"),
        (CONFIG, np.zeros((4, 4), np.float32)[:, 1], "not C-contiguous"),
        (CONFIG, [1.0, 2.0], "expected bytes, bytearray, memoryview"),
    ],
)
def test_fingerprint_refuses_what_it_cannot_hash(config, weights, match):
    with pytest.raises(InvalidInputError, match=match):
        fingerprint(config, weights)


def _session(model_fingerprint: str) -> InferenceSession:
    return InferenceSession(
        kv_cache=np.arange(64, dtype=np.float32),
        token_history=[2, 17, 5],
        model_fingerprint=model_fingerprint,
    )


def test_fingerprint_store_loads_a_session_for_the_same_model(store):
    model = fingerprint(CONFIG, _weights())
    session_id = store.save_session(_session(model))

    loaded = store.load_session(session_id, expected_fingerprint=model)

    assert loaded.model_fingerprint == model
    assert loaded.token_history == [2, 17, 5]


def test_fingerprint_store_refuses_a_kv_cache_saved_for_another_model(store):
    saved_with = fingerprint(CONFIG, _weights(0))
    at_hand = fingerprint(CONFIG, _weights(1))
    session_id = store.save_session(_session(saved_with))

    with pytest.raises(FingerprintMismatchError, match=str(session_id)) as caught:
        store.load_session(session_id, expected_fingerprint=at_hand)

    assert caught.value.expected == at_hand and caught.value.actual == saved_with
    assert f"saved with model {saved_with[:16]}" in str(caught.value)
    assert "load the model it was made with or start a new session" in str(caught.value)


def test_fingerprint_store_refuses_a_session_saved_without_a_fingerprint(store):
    session_id = store.save_session(_session(""))

    with pytest.raises(FingerprintMismatchError, match="no model fingerprint"):
        store.load_session(session_id, expected_fingerprint="ab" * 32)
    assert store.load_session(session_id) is not None  # no expectation, no check


async def test_fingerprint_async_load_checks_too(store):
    session_id = store.save_session(_session("a" * 64))

    with pytest.raises(FingerprintMismatchError):
        await store.aload_session(session_id, expected_fingerprint="b" * 64)
    loaded = await store.aload_session(session_id, expected_fingerprint="a" * 64)
    assert loaded.id == session_id


def test_fingerprint_missing_session_is_still_none(store):
    assert (
        store.load_session(
            "12345678-1234-5678-1234-567812345678", expected_fingerprint="a" * 64
        )
        is None
    )


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_fingerprint_session_manager_refuses_another_models_kv_cache(
    filesystem_store,
):
    """The demo's flow: a model's fingerprint is derived from its configuration
    and weights, saved with the session and demanded back when it is restored."""
    weights = _weights()
    model = fingerprint(CONFIG, weights)
    retrained = weights.copy()
    retrained[0] += 1e-3

    with SessionManager(filesystem_store) as sessions:
        session_id = sessions.save(_session(model))
        restored = sessions.load(session_id, expected_fingerprint=model)
        with pytest.raises(FingerprintMismatchError, match="not with the expected"):
            sessions.load(
                session_id, expected_fingerprint=fingerprint(CONFIG, retrained)
            )

    assert np.array_equal(
        np.frombuffer(restored.kv_cache, dtype=np.float32), np.arange(64)
    )


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
async def test_fingerprint_session_manager_async_load(filesystem_store):
    async with SessionManager(filesystem_store) as sessions:
        session_id = await sessions.asave(_session("c" * 64))
        with pytest.raises(FingerprintMismatchError):
            await sessions.aload(session_id, expected_fingerprint="d" * 64)
        assert (await sessions.aload(session_id, expected_fingerprint="c" * 64)).id
