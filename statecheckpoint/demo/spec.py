"""What one demo run does, shared by the parent and its child processes.

The parent writes a `DemoSpec` as JSON into a scratch folder; every child reads it
from there, so all processes agree on sizes, seeds and names without long command
lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from statecheckpoint.demo.model import ModelConfig
from statecheckpoint.demo.training import TrainConfig

__all__ = ["DemoSpec", "child_env", "preset"]

SPEC_FILE = "spec.json"
TOKENIZER_FILE = "tokenizer.json"

# One BLAS thread per process: results must not depend on how a library splits
# work across threads, and the parent runs two children side by side on 2 cores.
_CHILD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


@dataclasses.dataclass(frozen=True)
class DemoSpec:
    """Sizes, seeds and names of one demo run.

    Attributes:
        run_id: Hex id of the run; tags every checkpoint and session it writes.
        root: Root folder of the ``FileSystemStore``.
        vocab_size: Target size of the BPE vocabulary.
        model: The model shape (its ``vocab_size`` is the trained tokenizer's).
        train: The training schedule.
        kill_after: The parent kills the first training process once the pointer
            names a checkpoint of at least this epoch.
        min_epoch_seconds: The first training process spends at least this long on
            an epoch, so that the kill lands mid-epoch even on a fast machine.
        prompt: Text the generation starts from.
        first_tokens: Tokens generated before the session is saved.
        more_tokens: Tokens generated after it is restored.
        temperature: Sampling temperature; 0 is greedy.
        top_k: Sample among this many most likely tokens.
        sampling_seed: Seeds the draw at each position.
    """

    run_id: str
    root: str
    vocab_size: int
    model: ModelConfig
    train: TrainConfig
    kill_after: int
    min_epoch_seconds: float
    prompt: str
    first_tokens: int
    more_tokens: int
    temperature: float = 0.8
    top_k: int = 40
    sampling_seed: int = 7

    @property
    def pointer_name(self) -> str:
        """Name of the run's pointer block."""
        return f"statecheckpoint-demo-{self.run_id}"

    def write(self, folder: Path) -> None:
        """Writes the spec as JSON into ``folder``."""
        (folder / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def read(cls, folder: Path) -> DemoSpec:
        """Reads the spec the parent wrote into ``folder``."""
        data: dict[str, Any] = json.loads((folder / SPEC_FILE).read_text())
        data["model"] = ModelConfig(**data["model"])
        data["train"] = TrainConfig(**data["train"])
        return cls(**data)


def preset(small: bool, *, run_id: str, root: str, epochs: int | None) -> DemoSpec:
    """Returns the default spec, or the small one the tests use.

    The model's ``vocab_size`` is a placeholder until the tokenizer is trained.
    """
    if small:
        vocab, context = 320, 32
        model = ModelConfig(
            vocab_size=vocab,
            context=context,
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            mlp_size=64,
        )
        train = TrainConfig(epochs=3, steps_per_epoch=12, batch_size=8)
        kill_after, pace, first, more = 1, 1.5, 6, 6
    else:
        vocab, context = 768, 64
        model = ModelConfig(vocab_size=vocab, context=context)
        train = TrainConfig(epochs=6, steps_per_epoch=24, batch_size=16)
        kill_after, pace, first, more = 2, 1.0, 16, 16
    if epochs is not None:
        train = dataclasses.replace(train, epochs=epochs)
    if train.epochs <= kill_after:
        raise ValueError(
            f"{train.epochs} epochs leave nothing to resume after a kill at epoch "
            f"{kill_after}; use at least {kill_after + 1}"
        )

    return DemoSpec(
        run_id=run_id,
        root=root,
        vocab_size=vocab,
        model=model,
        train=train,
        kill_after=kill_after,
        min_epoch_seconds=pace,
        prompt="The with statement",
        first_tokens=first,
        more_tokens=more,
    )


def child_env() -> dict[str, str]:
    """Returns the environment for child processes: ours, with BLAS pinned."""
    return {**os.environ, **_CHILD_ENV}
