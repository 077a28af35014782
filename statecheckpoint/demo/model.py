"""A small decoder-only transformer in numpy, with a hand-written backward pass.

All parameters live in one flat buffer and each named tensor is a view into it, so
the buffer handed to a checkpoint is the live training state with no packing step.
Gradients use a twin buffer with the same layout, which lets Adam update everything
with a handful of whole-buffer operations. The output head is tied to the token
embedding.

Nothing here draws random numbers except `init_weights`, which takes a seed, so a
training step is a pure function of the buffers and the batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = [
    "Adam",
    "ModelConfig",
    "Params",
    "forward_logits",
    "gelu",
    "init_weights",
    "layer_norm",
    "loss_and_grad",
    "num_params",
    "param_shapes",
]

_LN_EPS = 1e-5
_GELU_C = math.sqrt(2.0 / math.pi)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the transformer.

    Attributes:
        vocab_size: Number of token ids.
        context: Longest sequence the position embedding covers.
        hidden_size: Width of the residual stream.
        num_layers: Number of transformer blocks.
        num_heads: Attention heads per block; must divide ``hidden_size``.
        mlp_size: Width of the hidden MLP layer.
    """

    vocab_size: int
    context: int = 64
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_size: int = 256

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_heads {self.num_heads}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    def to_json(self) -> dict[str, Any]:
        """Returns the config as a JSON-able dict."""
        return dataclasses.asdict(self)


def param_shapes(cfg: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Returns the name and shape of every parameter, in buffer order."""
    c, f = cfg.hidden_size, cfg.mlp_size
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("wte", (cfg.vocab_size, c)),
        ("wpe", (cfg.context, c)),
    ]
    for i in range(cfg.num_layers):
        shapes += [
            (f"h{i}.ln1_g", (c,)),
            (f"h{i}.ln1_b", (c,)),
            (f"h{i}.w_qkv", (c, 3 * c)),
            (f"h{i}.b_qkv", (3 * c,)),
            (f"h{i}.w_o", (c, c)),
            (f"h{i}.b_o", (c,)),
            (f"h{i}.ln2_g", (c,)),
            (f"h{i}.ln2_b", (c,)),
            (f"h{i}.w_fc", (c, f)),
            (f"h{i}.b_fc", (f,)),
            (f"h{i}.w_proj", (f, c)),
            (f"h{i}.b_proj", (c,)),
        ]
    shapes += [("lnf_g", (c,)), ("lnf_b", (c,))]
    return shapes


def num_params(cfg: ModelConfig) -> int:
    """Returns the number of scalars in the flat parameter buffer."""
    return sum(math.prod(shape) for _, shape in param_shapes(cfg))


class Params:
    """Named views into one flat parameter (or gradient) buffer.

    Args:
        cfg: The model shape.
        flat: A 1-D array of ``num_params(cfg)`` elements; the views share its memory.
    """

    def __init__(self, cfg: ModelConfig, flat: np.ndarray) -> None:
        expected = num_params(cfg)
        if flat.ndim != 1 or flat.size != expected:
            raise ValueError(
                f"flat buffer has shape {flat.shape}, expected ({expected},)"
            )
        self.cfg = cfg
        self.flat = flat
        self._views: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in param_shapes(cfg):
            size = math.prod(shape)
            self._views[name] = flat[offset : offset + size].reshape(shape)
            offset += size

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        # ``params[name] += x`` updates the view in place, then assigns it back.
        view = self._views[name]
        if value is not view:
            view[...] = value


def init_weights(
    cfg: ModelConfig, seed: int, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """Returns a fresh flat parameter buffer, GPT-2 style initialisation."""
    rng = np.random.default_rng(seed)
    flat = np.zeros(num_params(cfg), dtype=dtype)
    params = Params(cfg, flat)
    proj_std = 0.02 / math.sqrt(2 * cfg.num_layers)

    for name, shape in param_shapes(cfg):
        leaf = name.rsplit(".", 1)[-1]
        if leaf.endswith("_g"):
            params[name][...] = 1.0
        elif leaf in ("w_o", "w_proj"):
            params[name][...] = rng.normal(0.0, proj_std, shape)
        elif leaf.startswith("w"):
            params[name][...] = rng.normal(0.0, 0.02, shape)
    return flat


# Building blocks. Each forward function also returns what its backward needs.


def layer_norm(
    x: np.ndarray, g: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Normalises the last axis, then scales by ``g`` and shifts by ``b``.

    Returns:
        The output and the (normalised input, reciprocal std) pair for backward.
    """
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + _LN_EPS)
    xhat = xc * rstd
    return xhat * g + b, (xhat, rstd)


def _ln_backward(
    dy: np.ndarray,
    g: np.ndarray,
    cache: tuple[np.ndarray, np.ndarray],
    dg: np.ndarray,
    db: np.ndarray,
) -> np.ndarray:
    xhat, rstd = cache
    width = dy.shape[-1]
    dg += (dy * xhat).reshape(-1, width).sum(0)
    db += dy.reshape(-1, width).sum(0)
    dxhat = dy * g
    return rstd * (
        dxhat
        - dxhat.mean(-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    )


def gelu(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Applies GELU (tanh approximation); also returns the tanh term for backward."""
    t = np.tanh(_GELU_C * (u + 0.044715 * u * u * u))
    return 0.5 * u * (1.0 + t), t


def _gelu_backward(du_out: np.ndarray, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    inner = _GELU_C * (1.0 + 3 * 0.044715 * u * u)
    return du_out * (0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * inner)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _causal_bias(length: int, dtype: np.dtype) -> np.ndarray:
    upper = np.triu(np.ones((length, length), dtype=bool), k=1)
    return np.where(upper, -np.inf, 0.0).astype(dtype)


# The training pass.


def _forward(
    p: Params, inputs: np.ndarray
) -> tuple[np.ndarray, list[dict[str, Any]], Any]:
    """Runs the batch through the model; returns final hidden states and caches."""
    cfg = p.cfg
    bsz, length = inputs.shape
    heads, hd = cfg.num_heads, cfg.head_dim
    scale = 1.0 / math.sqrt(hd)
    bias = _causal_bias(length, p.flat.dtype)

    x = p["wte"][inputs] + p["wpe"][:length]
    caches = []
    for i in range(cfg.num_layers):
        c: dict[str, Any] = {}
        h, c["ln1"] = layer_norm(x, p[f"h{i}.ln1_g"], p[f"h{i}.ln1_b"])
        qkv = h @ p[f"h{i}.w_qkv"] + p[f"h{i}.b_qkv"]
        q, k, v = qkv.reshape(bsz, length, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        att = _softmax((q @ k.transpose(0, 1, 3, 2)) * scale + bias)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(bsz, length, -1)
        x = x + y @ p[f"h{i}.w_o"] + p[f"h{i}.b_o"]
        c.update(h=h, q=q, k=k, v=v, att=att, y=y)

        h2, c["ln2"] = layer_norm(x, p[f"h{i}.ln2_g"], p[f"h{i}.ln2_b"])
        u = h2 @ p[f"h{i}.w_fc"] + p[f"h{i}.b_fc"]
        a, t = gelu(u)
        x = x + a @ p[f"h{i}.w_proj"] + p[f"h{i}.b_proj"]
        c.update(h2=h2, u=u, t=t, a=a)
        caches.append(c)

    xf, lnf = layer_norm(x, p["lnf_g"], p["lnf_b"])
    return xf, caches, lnf


def forward_logits(
    cfg: ModelConfig, weights: np.ndarray, inputs: np.ndarray
) -> np.ndarray:
    """Returns the logits of a whole batch of sequences, shape (B, T, vocab)."""
    p = Params(cfg, weights)
    xf, _, _ = _forward(p, inputs)
    return xf @ p["wte"].T


def loss_and_grad(
    cfg: ModelConfig,
    weights: np.ndarray,
    grads: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
) -> float:
    """Computes the mean cross-entropy of a batch and its gradient.

    Args:
        cfg: The model shape.
        weights: The flat parameter buffer.
        grads: A buffer like ``weights``; overwritten with the gradient.
        inputs: Token ids, shape (B, T).
        targets: The next token of each input position, shape (B, T).

    Returns:
        The loss as a Python float.
    """
    p, g = Params(cfg, weights), Params(cfg, grads)
    bsz, length = inputs.shape
    width, heads, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    scale = 1.0 / math.sqrt(hd)
    count = bsz * length
    grads[...] = 0

    xf, caches, lnf = _forward(p, inputs)
    logits = xf @ p["wte"].T
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(-1, keepdims=True)
    picked = np.take_along_axis(shifted, targets[..., None], -1)
    loss = float(np.mean(np.log(total) - picked))

    # d(loss)/d(logits) is softmax minus the one-hot target, over the token count.
    dlogits = exp / total
    rows = dlogits.reshape(count, -1)
    rows[np.arange(count), targets.reshape(-1)] -= 1.0
    dlogits /= count
    g["wte"] += dlogits.reshape(count, -1).T @ xf.reshape(count, width)
    dx = _ln_backward(dlogits @ p["wte"], p["lnf_g"], lnf, g["lnf_g"], g["lnf_b"])

    for i in reversed(range(cfg.num_layers)):
        c = caches[i]

        # MLP branch: x = x + gelu(ln2(x) @ w_fc + b_fc) @ w_proj + b_proj
        g[f"h{i}.w_proj"] += c["a"].reshape(count, -1).T @ dx.reshape(count, width)
        g[f"h{i}.b_proj"] += dx.reshape(count, width).sum(0)
        du = _gelu_backward(dx @ p[f"h{i}.w_proj"].T, c["u"], c["t"])
        g[f"h{i}.w_fc"] += c["h2"].reshape(count, width).T @ du.reshape(count, -1)
        g[f"h{i}.b_fc"] += du.reshape(count, -1).sum(0)
        dh2 = du @ p[f"h{i}.w_fc"].T
        dx = dx + _ln_backward(
            dh2, p[f"h{i}.ln2_g"], c["ln2"], g[f"h{i}.ln2_g"], g[f"h{i}.ln2_b"]
        )

        # Attention branch: x = x + attn(ln1(x)) @ w_o + b_o
        g[f"h{i}.w_o"] += c["y"].reshape(count, width).T @ dx.reshape(count, width)
        g[f"h{i}.b_o"] += dx.reshape(count, width).sum(0)
        dy = (dx @ p[f"h{i}.w_o"].T).reshape(bsz, length, heads, hd)
        dy = dy.transpose(0, 2, 1, 3)
        att, q, k, v = c["att"], c["q"], c["k"], c["v"]
        datt = dy @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dy
        ds = att * (datt - (datt * att).sum(-1, keepdims=True)) * scale
        dq = ds @ k
        dk = ds.transpose(0, 1, 3, 2) @ q
        dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(count, -1)
        g[f"h{i}.w_qkv"] += c["h"].reshape(count, width).T @ dqkv
        g[f"h{i}.b_qkv"] += dqkv.sum(0)
        dh = (dqkv @ p[f"h{i}.w_qkv"].T).reshape(bsz, length, width)
        dx = dx + _ln_backward(
            dh, p[f"h{i}.ln1_g"], c["ln1"], g[f"h{i}.ln1_g"], g[f"h{i}.ln1_b"]
        )

    np.add.at(g["wte"], inputs.reshape(-1), dx.reshape(count, width))
    g["wpe"][:length] += dx.sum(0)
    return loss


# The optimizer.


class Adam:
    """Adam whose whole state is one flat float32 buffer.

    Layout of ``state``: the first two float32 slots hold the step count as one
    little-endian int64, then the first moments ``m``, then the second moments ``v``.
    Keeping it in one buffer lets a checkpoint take it as it is.

    Args:
        size: Number of parameters.
        learning_rate: Step size.
        state: A buffer from an earlier run to continue from; zeros when omitted.
    """

    def __init__(
        self,
        size: int,
        learning_rate: float,
        state: np.ndarray | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if state is None:
            state = np.zeros(2 + 2 * size, dtype=np.float32)
        if state.shape != (2 + 2 * size,):
            raise ValueError(
                f"optimizer state has shape {state.shape}, expected ({2 + 2 * size},)"
            )
        self.state = state
        self.m = state[2 : 2 + size]
        self.v = state[2 + size :]
        self.learning_rate = learning_rate
        self.betas = betas
        self.eps = eps

    @property
    def step(self) -> int:
        """Number of updates applied so far."""
        return int.from_bytes(self.state[:2].tobytes(), "little", signed=True)

    def _set_step(self, value: int) -> None:
        self.state[:2] = np.frombuffer(
            value.to_bytes(8, "little", signed=True), dtype=self.state.dtype
        )

    def update(self, weights: np.ndarray, grads: np.ndarray) -> None:
        """Applies one Adam step to ``weights`` in place."""
        b1, b2 = self.betas
        step = self.step + 1
        self._set_step(step)

        self.m *= b1
        self.m += (1.0 - b1) * grads
        self.v *= b2
        self.v += (1.0 - b2) * (grads * grads)
        m_hat = self.m / (1.0 - b1**step)
        v_hat = self.v / (1.0 - b2**step)
        weights -= self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)
