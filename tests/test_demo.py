"""Tests of the demo: its numerics on their own, then the whole demo at a small size."""

from __future__ import annotations

import io

import numpy as np
import pytest

from statecheckpoint.demo.corpus import (
    _merge_rule,
    documents,
    encode_documents,
    from_tokenizer_data,
    to_tokenizer_data,
    train_tokenizer,
)
from statecheckpoint.demo.generation import Generator
from statecheckpoint.demo.model import (
    Adam,
    ModelConfig,
    forward_logits,
    init_weights,
    loss_and_grad,
)
from statecheckpoint.demo.training import TrainConfig, Trainer
from statecheckpoint.models import MergeRule, SamplingConfig

TINY = ModelConfig(
    vocab_size=13, context=8, hidden_size=8, num_layers=2, num_heads=2, mlp_size=12
)


def _perturbed_weights(cfg: ModelConfig, dtype: type[np.floating]) -> np.ndarray:
    # Fresh layer norms are exactly 1 and 0; noise makes every parameter matter.
    weights = init_weights(cfg, seed=0, dtype=dtype)
    noise = np.random.default_rng(1).normal(0.0, 0.2, weights.shape)
    return weights + noise.astype(dtype)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(documents(), 300)


def test_model_gradient_matches_finite_differences():
    weights = _perturbed_weights(TINY, np.float64)
    rng = np.random.default_rng(2)
    inputs = rng.integers(0, TINY.vocab_size, (2, 6))
    targets = rng.integers(0, TINY.vocab_size, (2, 6))
    grads = np.empty_like(weights)
    scratch = np.empty_like(weights)
    loss_and_grad(TINY, weights, grads, inputs, targets)

    numeric = np.empty_like(weights)
    eps = 1e-6
    for i in range(weights.size):
        saved = weights[i]
        weights[i] = saved + eps
        above = loss_and_grad(TINY, weights, scratch, inputs, targets)
        weights[i] = saved - eps
        below = loss_and_grad(TINY, weights, scratch, inputs, targets)
        weights[i] = saved
        numeric[i] = (above - below) / (2 * eps)

    assert np.abs(grads).max() > 1e-3
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


def test_model_kv_cache_decoding_matches_full_forward():
    weights = _perturbed_weights(TINY, np.float64)
    tokens = [3, 1, 4, 1, 5, 9, 2]
    generator = Generator(TINY, weights, SamplingConfig(temperature=0))

    stepwise = [generator.feed(token, pos) for pos, token in enumerate(tokens)]

    full = forward_logits(TINY, weights, np.array([tokens]))[0]
    np.testing.assert_allclose(np.array(stepwise), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_generation_restored_cache_continues_identically(temperature):
    weights = _perturbed_weights(TINY, np.float32)
    sampling = SamplingConfig(temperature=temperature, top_k=5, seed=11)
    straight = Generator(TINY, weights, sampling)
    straight.start([1, 2])
    expected = straight.generate(6)

    paused = Generator(TINY, weights, sampling)
    paused.start([1, 2])
    first = paused.generate(2)
    cache, history = paused.cache_bytes().tobytes(), list(paused.history)
    resumed = Generator(TINY, weights, sampling)
    resumed.restore(bytearray(cache), history)

    assert first + resumed.generate(4) == expected


def test_generation_rejects_a_cache_of_the_wrong_size():
    generator = Generator(TINY, init_weights(TINY, 0), SamplingConfig())
    with pytest.raises(ValueError, match="KV-cache holds 0 values"):
        generator.restore(b"", [1, 2, 3])


def test_generation_refuses_to_run_past_the_context():
    generator = Generator(TINY, init_weights(TINY, 0), SamplingConfig())
    generator.start([1, 2, 3])
    with pytest.raises(ValueError, match="exceed the model's context of 8"):
        generator.generate(6)


def test_adam_keeps_its_step_count_in_the_state_buffer():
    weights = np.ones(4, dtype=np.float32)
    adam = Adam(4, 0.1)
    for _ in range(3):
        adam.update(weights, np.full(4, 0.5, dtype=np.float32))

    restored = Adam(4, 0.1, state=np.frombuffer(bytearray(adam.state), np.float32))
    assert restored.step == 3
    np.testing.assert_array_equal(restored.m, adam.m)


def test_training_resumed_from_copied_buffers_matches_bit_for_bit():
    cfg = ModelConfig(
        vocab_size=40, context=8, hidden_size=8, num_layers=1, num_heads=2, mlp_size=16
    )
    schedule = TrainConfig(epochs=3, steps_per_epoch=3, batch_size=4)
    tokens = np.random.default_rng(5).integers(0, 40, 2000).astype(np.int32)
    straight = Trainer(cfg, schedule, tokens)
    expected = [straight.run_epoch() for _ in range(3)]

    first = Trainer(cfg, schedule, tokens)
    losses = [first.run_epoch()]
    weights = np.frombuffer(bytearray(first.weights), np.float32)
    state = np.frombuffer(bytearray(first.optimizer.state), np.float32)
    second = Trainer(cfg, schedule, tokens, weights, state, epoch=1)
    losses += [second.run_epoch() for _ in range(2)]

    assert [x.hex() for x in losses] == [x.hex() for x in expected]
    assert second.weights.tobytes() == straight.weights.tobytes()


def test_corpus_merge_rules_parse_both_serialisations():
    assert _merge_rule("Ġ t") == MergeRule("Ġ", "t")
    assert _merge_rule(["Ġ", "t"]) == MergeRule("Ġ", "t")


def test_corpus_tokenizer_survives_tokenizer_data(tokenizer):
    data = to_tokenizer_data(tokenizer)
    texts = documents()[:5]

    rebuilt = from_tokenizer_data(
        type(data).model_validate_json(data.model_dump_json())
    )

    assert set(data.special_tokens) == {"pad", "unk", "bos", "eos"}
    assert len(data.merge_rules) == len(data.token_to_id) - 256 - 4
    np.testing.assert_array_equal(
        encode_documents(rebuilt, texts), encode_documents(tokenizer, texts)
    )
    assert rebuilt.encode("<eos>").ids == [data.special_tokens["eos"]]


@pytest.mark.prefect
def test_demo_small_run_passes_both_identity_checks(prefect_server, tmp_path):
    from statecheckpoint.demo import run_demo
    from statecheckpoint.demo.report import Report

    out = io.StringIO()
    report = Report(out)

    passed = run_demo(str(tmp_path / "store"), small=True, report=report)

    text = out.getvalue()
    print(text)
    verdicts = dict(report.verdicts)
    assert passed, text
    assert any(what.startswith("resumed after kill -9") for what in verdicts), text
    assert any(what.startswith("session restored") for what in verdicts), text
