"""The demo's child processes: train, reference, resume, generate and restore.

Each job reads the run's `DemoSpec` from a scratch folder and writes its findings
there as JSON for the parent. Losses travel as ``float.hex`` strings so that no
decimal round trip can blur a bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from statecheckpoint import (
    BackgroundSaveOptions,
    CheckpointManager,
    FileSystemStore,
    HyperParameters,
    InferenceSession,
    ModelCheckpoint,
    SamplingConfig,
    SessionManager,
    TokenizerData,
)
from statecheckpoint.demo.corpus import (
    documents,
    encode_documents,
    from_tokenizer_data,
    special_id,
    to_tokenizer_data,
)
from statecheckpoint.demo.generation import Generator
from statecheckpoint.demo.model import ModelConfig
from statecheckpoint.demo.spec import TOKENIZER_FILE, DemoSpec
from statecheckpoint.demo.training import TrainConfig, Trainer
from statecheckpoint.fingerprint import fingerprint
from statecheckpoint.flows import resume_training

__all__ = ["JOBS", "write_json"]


def write_json(path: Path, data: Any) -> None:
    """Writes JSON atomically, so a reader never sees half a file."""
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(data, indent=2))
    os.replace(staging, path)


def _digest(weights: np.ndarray) -> str:
    return hashlib.sha256(weights.data.cast("B")).hexdigest()


def _hyperparameters(model: ModelConfig, train: TrainConfig) -> HyperParameters:
    return HyperParameters(
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        learning_rate=train.learning_rate,
        vocab_size=model.vocab_size,
        context=model.context,
        mlp_size=model.mlp_size,
        seed=train.seed,
        epochs=train.epochs,
        steps_per_epoch=train.steps_per_epoch,
        batch_size=train.batch_size,
    )


def _configs(hp: HyperParameters) -> tuple[ModelConfig, TrainConfig]:
    """Rebuilds the model and training configs a checkpoint was made with."""
    fields = hp.model_dump()
    model = ModelConfig(
        **{f.name: fields[f.name] for f in dataclasses.fields(ModelConfig)}
    )
    train = TrainConfig(
        **{f.name: fields[f.name] for f in dataclasses.fields(TrainConfig)}
    )
    return model, train


def _store(spec: DemoSpec) -> FileSystemStore:
    return FileSystemStore(root=spec.root)


def _original_tokenizer(work: Path) -> Tokenizer:
    return Tokenizer.from_file(str(work / TOKENIZER_FILE))


def _pacer(seconds: float, steps: int) -> Callable[[int, int], None]:
    """Returns an ``on_step`` hook that stretches an epoch to ``seconds``."""
    started: dict[int, float] = {}

    def pace(epoch: int, step: int) -> None:
        begin = started.setdefault(epoch, time.monotonic())
        delay = begin + seconds * step / steps - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    return pace


def _train_and_save(
    spec: DemoSpec,
    trainer: Trainer,
    tokenizer: TokenizerData,
    work: Path,
    attempt: int,
    min_epoch_seconds: float = 0.0,
) -> list[dict[str, Any]]:
    """Trains to the last epoch, saving a checkpoint in the background after each.

    Progress (epoch and step) goes to ``progress-<attempt>.json`` and the saved
    epochs to ``epochs-<attempt>.json``, so the parent can follow a run it will
    kill.
    """
    hp = _hyperparameters(trainer.cfg, trainer.train)
    pace = _pacer(min_epoch_seconds, trainer.train.steps_per_epoch)
    progress = work / f"progress-{attempt}.json"
    records: list[dict[str, Any]] = []

    def on_step(epoch: int, step: int) -> None:
        pace(epoch, step)
        write_json(progress, {"epoch": epoch, "step": step})

    # One save in flight while the next epoch trains: the save after it waits, so
    # the pointer is never more than an epoch behind and the parent's kill window
    # (pointer at epoch k, training in a later epoch) is at least an epoch long.
    options = BackgroundSaveOptions(enabled=True, queue_capacity=1)
    with CheckpointManager(
        _store(spec), background=options, pointer_name=spec.pointer_name
    ) as manager:
        while trainer.epoch < trainer.train.epochs:
            loss = trainer.run_epoch(on_step)
            checkpoint = ModelCheckpoint(
                epoch=trainer.epoch,
                loss=loss,
                weights=trainer.weights,
                optimizer_state=trainer.optimizer.state,
                tokenizer=tokenizer,
                hyperparameters=hp,
                tags={"run": spec.run_id, "attempt": str(attempt)},
            )
            started = time.perf_counter()
            checkpoint_id = manager.save(checkpoint)
            records.append(
                {
                    "epoch": trainer.epoch,
                    "loss": loss.hex(),
                    "id": str(checkpoint_id),
                    "save_call_s": time.perf_counter() - started,
                }
            )
            write_json(work / f"epochs-{attempt}.json", records)

        started = time.perf_counter()
        manager.flush()
        flush_s = time.perf_counter() - started

    if records:
        records[-1]["flush_s"] = flush_s
    return records


def train(work: Path, args: list[str]) -> None:
    """Trains from scratch with checkpoints; the parent kills it part-way."""
    spec = DemoSpec.read(work)
    tokenizer = _original_tokenizer(work)
    tokens = encode_documents(tokenizer, documents())
    trainer = Trainer(spec.model, spec.train, tokens)
    _train_and_save(
        spec,
        trainer,
        to_tokenizer_data(tokenizer),
        work,
        attempt=1,
        min_epoch_seconds=spec.min_epoch_seconds,
    )


def reference(work: Path, args: list[str]) -> None:
    """Trains all epochs without saving or stopping; the run to compare with."""
    spec = DemoSpec.read(work)
    tokens = encode_documents(_original_tokenizer(work), documents())
    trainer = Trainer(spec.model, spec.train, tokens)
    losses = [trainer.run_epoch().hex() for _ in range(spec.train.epochs)]
    write_json(
        work / "reference.json",
        {"losses": losses, "weights_sha256": _digest(trainer.weights)},
    )


def resume(work: Path, args: list[str]) -> None:
    """Runs the library's resume flow, which hands our training code a checkpoint."""
    spec = DemoSpec.read(work)
    started = time.perf_counter()

    def continue_training(checkpoint: ModelCheckpoint | None) -> dict[str, Any]:
        handed_over_s = time.perf_counter() - started
        if checkpoint is None or checkpoint.hyperparameters is None:
            raise RuntimeError(
                f"pointer {spec.pointer_name} named no usable checkpoint; "
                "the first run was killed before its first save was durable"
            )
        if checkpoint.tokenizer is None:
            raise RuntimeError(f"checkpoint {checkpoint.id} has no tokenizer")

        model, schedule = _configs(checkpoint.hyperparameters)
        tokenizer = from_tokenizer_data(checkpoint.tokenizer)
        tokens = encode_documents(tokenizer, documents())
        original = encode_documents(_original_tokenizer(work), documents())
        trainer = Trainer(
            model,
            schedule,
            tokens,
            weights=np.frombuffer(checkpoint.weights, dtype=np.float32),
            optimizer_state=np.frombuffer(checkpoint.optimizer_state, dtype=np.float32),
            epoch=checkpoint.epoch,
        )
        step = trainer.optimizer.step
        records = _train_and_save(spec, trainer, checkpoint.tokenizer, work, attempt=2)
        return {
            "resumed_from": str(checkpoint.id),
            "resumed_epoch": checkpoint.epoch,
            "optimizer_step": step,
            "handed_over_s": handed_over_s,
            "same_tokens": bool(np.array_equal(tokens, original)),
            "epochs": records,
            "weights_sha256": _digest(trainer.weights),
        }

    result = resume_training(
        store=_store(spec), pointer_name=spec.pointer_name, train=continue_training
    )
    write_json(work / "resume.json", result)


def _load_model(
    manager: CheckpointManager, checkpoint_id: str
) -> tuple[ModelConfig, np.ndarray, Tokenizer, float]:
    started = time.perf_counter()
    checkpoint = manager.load(checkpoint_id)
    load_s = time.perf_counter() - started
    if checkpoint is None or checkpoint.hyperparameters is None:
        raise RuntimeError(f"checkpoint {checkpoint_id} is missing or incomplete")
    if checkpoint.tokenizer is None:
        raise RuntimeError(f"checkpoint {checkpoint_id} has no tokenizer")

    model, _ = _configs(checkpoint.hyperparameters)
    weights = np.frombuffer(checkpoint.weights, dtype=np.float32)
    return model, weights, from_tokenizer_data(checkpoint.tokenizer), load_s


def generate(work: Path, args: list[str]) -> None:
    """Generates N+M tokens straight, then N tokens and saves the session."""
    spec = DemoSpec.read(work)
    (checkpoint_id,) = args
    store = _store(spec)
    with CheckpointManager(store) as manager:
        model, weights, tokenizer, _ = _load_model(manager, checkpoint_id)

    prompt = [special_id(tokenizer, "bos"), *tokenizer.encode(spec.prompt).ids]
    sampling = SamplingConfig(
        temperature=spec.temperature, top_k=spec.top_k, seed=spec.sampling_seed
    )
    straight = Generator(model, weights, sampling)
    straight.start(prompt)
    uninterrupted = straight.generate(spec.first_tokens + spec.more_tokens)

    paused = Generator(model, weights, sampling)
    paused.start(prompt)
    first = paused.generate(spec.first_tokens)
    session = InferenceSession(
        kv_cache=paused.cache_bytes(),
        token_history=paused.history,
        sampling=sampling,
        model_fingerprint=fingerprint(model.to_json(), weights),
        tags={"run": spec.run_id, "checkpoint": checkpoint_id},
    )
    with SessionManager(store) as sessions:
        started = time.perf_counter()
        session_id = sessions.save(session)
        save_s = time.perf_counter() - started

    write_json(
        work / "generate.json",
        {
            "session_id": str(session_id),
            "prompt": prompt,
            "first": first,
            "uninterrupted": uninterrupted,
            "kv_cache_bytes": paused.cache_bytes().nbytes,
            "save_s": save_s,
            "text": tokenizer.decode(prompt + uninterrupted),
        },
    )


def restore(work: Path, args: list[str]) -> None:
    """Restores a saved session in this fresh process and generates M more tokens."""
    spec = DemoSpec.read(work)
    (session_id,) = args
    store = _store(spec)
    with SessionManager(store) as sessions:
        started = time.perf_counter()
        session = sessions.load(session_id)
        load_s = time.perf_counter() - started
    if session is None or session.sampling is None:
        raise RuntimeError(f"session {session_id} is missing or incomplete")

    with CheckpointManager(store) as manager:
        model, weights, tokenizer, _ = _load_model(manager, session.tags["checkpoint"])
    if fingerprint(model.to_json(), weights) != session.model_fingerprint:
        raise RuntimeError(
            f"session {session_id} was made with model "
            f"{session.model_fingerprint[:12]}, not with this checkpoint's model"
        )

    generator = Generator(model, weights, session.sampling)
    generator.restore(session.kv_cache, session.token_history)
    more = generator.generate(spec.more_tokens)
    write_json(
        work / "restore.json",
        {
            "load_s": load_s,
            "restored_tokens": len(session.token_history),
            "more": more,
            "text": tokenizer.decode(generator.history),
        },
    )


JOBS: dict[str, Callable[[Path, list[str]], None]] = {
    "train": train,
    "reference": reference,
    "resume": resume,
    "generate": generate,
    "restore": restore,
}
