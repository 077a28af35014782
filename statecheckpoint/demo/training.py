"""The demo's training loop: fixed-size epochs, deterministic data order, Adam.

An epoch's batches come from ``numpy.random.default_rng((seed, epoch))`` and nothing
else draws random numbers, so the weights and losses after epoch ``k`` depend only
on the state after epoch ``k - 1``. That is what makes a resumed run comparable bit
for bit with an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from statecheckpoint.demo.model import Adam, ModelConfig, init_weights, loss_and_grad

__all__ = ["TrainConfig", "Trainer", "epoch_batches"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and how fast to train.

    Attributes:
        seed: Seeds the initial weights and every epoch's data order.
        epochs: Number of epochs of a full run.
        steps_per_epoch: Minibatches per epoch.
        batch_size: Sequences per minibatch.
        learning_rate: Adam step size.
    """

    seed: int = 1234
    epochs: int = 6
    steps_per_epoch: int = 24
    batch_size: int = 16
    learning_rate: float = 3e-3

    def to_json(self) -> dict[str, Any]:
        """Returns the config as a JSON-able dict."""
        return dataclasses.asdict(self)


def epoch_batches(
    tokens: np.ndarray, cfg: ModelConfig, train: TrainConfig, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields the (inputs, targets) minibatches of one epoch.

    The stream is cut into windows of ``cfg.context + 1`` tokens; the epoch draws
    ``steps_per_epoch * batch_size`` of them without replacement.

    Raises:
        ValueError: When the stream holds too few windows for one epoch.
    """
    span = cfg.context + 1
    windows = len(tokens) // span
    needed = train.steps_per_epoch * train.batch_size
    if windows < needed:
        raise ValueError(
            f"the corpus has {windows} windows of {span} tokens, an epoch needs "
            f"{needed}; lower steps_per_epoch, batch_size or context"
        )

    order = np.random.default_rng((train.seed, epoch)).permutation(windows)[:needed]
    offsets = np.arange(span)
    for step in range(train.steps_per_epoch):
        starts = order[step * train.batch_size : (step + 1) * train.batch_size] * span
        batch = tokens[starts[:, None] + offsets]
        yield batch[:, :-1], batch[:, 1:]


class Trainer:
    """Holds the live training state and runs epochs over a token stream.

    Args:
        cfg: The model shape.
        train: The training schedule.
        tokens: The encoded corpus.
        weights: Flat float32 parameters to continue from; fresh when omitted.
        optimizer_state: Adam's buffer to continue from; zeros when omitted.
        epoch: Number of epochs already completed by ``weights``.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        train: TrainConfig,
        tokens: np.ndarray,
        weights: np.ndarray | None = None,
        optimizer_state: np.ndarray | None = None,
        epoch: int = 0,
    ) -> None:
        self.cfg = cfg
        self.train = train
        self.tokens = tokens
        self.weights = init_weights(cfg, train.seed) if weights is None else weights
        self.grads = np.zeros_like(self.weights)
        self.optimizer = Adam(
            self.weights.size, train.learning_rate, state=optimizer_state
        )
        self.epoch = epoch

    def run_epoch(self, on_step: Callable[[int, int], None] | None = None) -> float:
        """Trains one more epoch and returns its mean minibatch loss.

        Args:
            on_step: Called as ``on_step(epoch, step)`` before each minibatch, with
                the 1-based number of the epoch being trained.
        """
        epoch = self.epoch + 1
        total = 0.0
        batches = epoch_batches(self.tokens, self.cfg, self.train, epoch)
        for step, (inputs, targets) in enumerate(batches):
            if on_step is not None:
                on_step(epoch, step)
            total += loss_and_grad(self.cfg, self.weights, self.grads, inputs, targets)
            self.optimizer.update(self.weights, self.grads)

        self.epoch = epoch
        return total / self.train.steps_per_epoch
