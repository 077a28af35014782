"""Incremental decoding with a KV-cache, and its round trip through a session.

The cache holds the keys and values of every token already fed to the model, one
``(2, heads, context, head_dim)`` array per layer. A generator's state is the cache
plus the token history; the last token of the history is the one not yet fed, so a
restored generator starts by feeding it. Sampling draws the token at position ``p``
from ``numpy.random.default_rng((seed, p))``: no random state hides outside the
session.
"""

from __future__ import annotations

import math

import numpy as np

from statecheckpoint.demo.model import ModelConfig, Params, gelu, layer_norm
from statecheckpoint.models import SamplingConfig

__all__ = ["Generator"]


class Generator:
    """Generates tokens one at a time from a model and a KV-cache.

    Args:
        cfg: The model shape.
        weights: The flat parameter buffer.
        sampling: Temperature 0 or None means greedy; otherwise softmax sampling
            with optional top-k, seeded by ``sampling.seed``.
    """

    def __init__(
        self, cfg: ModelConfig, weights: np.ndarray, sampling: SamplingConfig
    ) -> None:
        self.cfg = cfg
        self.params = Params(cfg, weights)
        self.sampling = sampling
        self.cache = np.zeros(
            (cfg.num_layers, 2, cfg.num_heads, cfg.context, cfg.head_dim),
            dtype=weights.dtype,
        )
        self.history: list[int] = []

    @property
    def cached(self) -> int:
        """Number of positions held in the cache."""
        return max(len(self.history) - 1, 0)

    def start(self, prompt: list[int]) -> None:
        """Feeds all but the last prompt token, leaving that one pending."""
        if not prompt:
            raise ValueError("the prompt needs at least one token")
        self.history = []
        for token in prompt[:-1]:
            self.feed(token, len(self.history))
            self.history.append(token)
        self.history.append(prompt[-1])

    def generate(self, count: int) -> list[int]:
        """Generates ``count`` tokens and returns them."""
        if len(self.history) + count > self.cfg.context:
            raise ValueError(
                f"{len(self.history)} tokens plus {count} new ones exceed the "
                f"model's context of {self.cfg.context}"
            )
        new = []
        for _ in range(count):
            position = len(self.history) - 1
            logits = self.feed(self.history[-1], position)
            token = self._pick(logits, position + 1)
            self.history.append(token)
            new.append(token)
        return new

    def cache_bytes(self) -> np.ndarray:
        """Returns the used part of the cache as one contiguous array (a copy)."""
        return np.ascontiguousarray(self.cache[:, :, :, : self.cached])

    def restore(self, cache: bytes | bytearray, history: list[int]) -> None:
        """Puts back a state taken with `cache_bytes` and the token history.

        Raises:
            ValueError: When the cache size does not match the history.
        """
        cfg = self.cfg
        positions = max(len(history) - 1, 0)
        shape = (cfg.num_layers, 2, cfg.num_heads, positions, cfg.head_dim)
        saved = np.frombuffer(cache, dtype=self.cache.dtype)
        if saved.size != math.prod(shape):
            raise ValueError(
                f"the KV-cache holds {saved.size} values; {len(history)} tokens of "
                f"history need {math.prod(shape)}"
            )
        self.cache[...] = 0
        self.cache[:, :, :, :positions] = saved.reshape(shape)
        self.history = list(history)

    def feed(self, token: int, position: int) -> np.ndarray:
        """Runs one token through the model, caching its keys and values."""
        p, cfg = self.params, self.cfg
        heads, hd = cfg.num_heads, cfg.head_dim
        scale = 1.0 / math.sqrt(hd)

        x = p["wte"][token] + p["wpe"][position]
        for i in range(cfg.num_layers):
            h, _ = layer_norm(x, p[f"h{i}.ln1_g"], p[f"h{i}.ln1_b"])
            q, k, v = (h @ p[f"h{i}.w_qkv"] + p[f"h{i}.b_qkv"]).reshape(3, heads, hd)
            self.cache[i, 0, :, position] = k
            self.cache[i, 1, :, position] = v
            keys = self.cache[i, 0, :, : position + 1]
            values = self.cache[i, 1, :, : position + 1]

            scores = (keys @ q[:, :, None])[..., 0] * scale
            att = np.exp(scores - scores.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            y = (att[:, None, :] @ values)[:, 0, :].reshape(-1)
            x = x + y @ p[f"h{i}.w_o"] + p[f"h{i}.b_o"]

            h2, _ = layer_norm(x, p[f"h{i}.ln2_g"], p[f"h{i}.ln2_b"])
            a, _ = gelu(h2 @ p[f"h{i}.w_fc"] + p[f"h{i}.b_fc"])
            x = x + a @ p[f"h{i}.w_proj"] + p[f"h{i}.b_proj"]

        xf, _ = layer_norm(x, p["lnf_g"], p["lnf_b"])
        return xf @ p["wte"].T

    def _pick(self, logits: np.ndarray, position: int) -> int:
        temperature = self.sampling.temperature
        if not temperature:
            return int(np.argmax(logits))

        scaled = logits.astype(np.float64) / temperature
        top_k = self.sampling.top_k
        if top_k and top_k < scaled.size:
            cutoff = np.partition(scaled, -top_k)[-top_k]
            scaled = np.where(scaled < cutoff, -np.inf, scaled)
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        rng = np.random.default_rng((self.sampling.seed or 0, position))
        return int(rng.choice(probs.size, p=probs))
