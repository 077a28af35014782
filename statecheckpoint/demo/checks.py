"""The demo's identity checks, compared bit for bit and token for token."""

from __future__ import annotations

import struct
import time
from typing import Any

from statecheckpoint import CheckpointInfo, CheckpointManager
from statecheckpoint.demo.report import Report
from statecheckpoint.demo.spec import DemoSpec

__all__ = ["bits", "compare_generation", "compare_losses", "describe_resume"]


def bits(value: float) -> bytes:
    """Returns the IEEE 754 double bit pattern of ``value``."""
    return struct.pack("<d", value)


def describe_resume(
    report: Report,
    manager: CheckpointManager,
    resumed: dict[str, Any],
    infos: list[CheckpointInfo],
) -> None:
    """Reports where the resumed run started and what loading its checkpoint costs."""
    checkpoint_id = resumed["resumed_from"]
    sizes = next((i.sizes for i in infos if str(i.id) == checkpoint_id), {})
    started = time.perf_counter()
    manager.load(checkpoint_id)
    load_s = time.perf_counter() - started

    stored = ", ".join(f"{name} {size / 1e3:.0f} kB" for name, size in sizes.items())
    report.line(
        "resume",
        f"flow resume-training handed checkpoint {checkpoint_id} (epoch "
        f"{resumed['resumed_epoch']}, Adam step {resumed['optimizer_step']}) to the "
        f"training code {resumed['handed_over_s']:.2f} s after it started",
    )
    report.line("", f"stored: {stored}; load with checksums: {load_s * 1e3:.1f} ms")
    last = resumed["epochs"][-1]
    report.line(
        "",
        f"resumed run saved epochs {resumed['epochs'][0]['epoch']}-{last['epoch']}; "
        f"final flush {last.get('flush_s', 0.0) * 1e3:.0f} ms",
    )


def compare_losses(
    report: Report,
    resumed: dict[str, Any],
    reference: dict[str, Any],
    infos: list[CheckpointInfo],
) -> bool:
    """Checks the stitched loss curve and the final weights against the reference.

    The epochs up to the resume point come from the first run's stored checkpoints,
    the rest from the resumed run; every loss must have the reference's exact bits.
    """
    first_run = {i.epoch: i for i in infos if i.tags.get("attempt") == "1"}
    stitched: list[tuple[str, float]] = []
    for epoch in range(1, resumed["resumed_epoch"] + 1):
        info = first_run.get(epoch)
        if info is None or info.loss is None:
            report.line("losses", f"no stored checkpoint of epoch {epoch}")
            return False
        stitched.append(("checkpoint", info.loss))
    stitched += [("resumed", float.fromhex(r["loss"])) for r in resumed["epochs"]]
    expected = [float.fromhex(loss) for loss in reference["losses"]]

    report.line("losses", "epoch  from        killed+resumed run     uninterrupted run")
    same = len(stitched) == len(expected)
    for epoch, ((source, got), want) in enumerate(
        zip(stitched, expected, strict=False), 1
    ):
        equal = bits(got) == bits(want)
        same = same and equal
        mark = "==" if equal else "!="
        report.line("", f"{epoch:>5}  {source:<10}  {got:.17f} {mark} {want:.17f}")

    ours, theirs = resumed["weights_sha256"], reference["weights_sha256"]
    report.line(
        "weights",
        f"final sha256 {ours[:16]} {'==' if ours == theirs else '!='} {theirs[:16]}",
    )
    return same and ours == theirs


def compare_generation(
    report: Report,
    spec: DemoSpec,
    generated: dict[str, Any],
    restored: dict[str, Any],
) -> bool:
    """Checks that the restored session continues exactly like the straight run."""
    first, more = generated["first"], restored["more"]
    straight = generated["uninterrupted"]
    report.line(
        "session",
        f"{generated['session_id']}: {len(generated['prompt'])} prompt + "
        f"{len(first)} generated tokens, KV-cache "
        f"{generated['kv_cache_bytes'] / 1e3:.1f} kB; save "
        f"{generated['save_s'] * 1e3:.1f} ms, load in a new process "
        f"{restored['load_s'] * 1e3:.1f} ms",
    )
    report.line(
        "generate",
        f"temperature {spec.temperature}, top-k {spec.top_k}, seed "
        f"{spec.sampling_seed}; {len(first)} + {len(more)} tokens after restore "
        f"vs {len(straight)} straight",
    )
    report.line("", f"straight: {straight}")
    report.line("", f"restored: {first} + {more}")
    report.line("text", repr(restored["text"]))
    return first + more == straight
