"""The demo's parent process: start the pieces, kill one, compare, report.

All numeric work happens in child processes started with the same environment
(one BLAS thread each), so that every floating-point result the demo compares was
computed under the same conditions. The parent trains the tokenizer, keeps the
Prefect API available, kills the first training run and checks the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.logging import disable_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings

from statecheckpoint import CheckpointManager, CheckpointPointer, FileSystemStore
from statecheckpoint.demo import checks
from statecheckpoint.demo.corpus import documents, to_tokenizer_data, train_tokenizer
from statecheckpoint.demo.report import Report
from statecheckpoint.demo.spec import TOKENIZER_FILE, DemoSpec, child_env, preset

__all__ = ["DemoFailure", "run_demo"]

_CHILD_TIMEOUT_S = 300.0
_POLL_S = 0.05


class DemoFailure(RuntimeError):
    """A step of the demo could not be carried out (not a failed comparison)."""


class _Child:
    """A ``python -m statecheckpoint.demo job ...`` process, its output in a log."""

    def __init__(self, job: str, work: Path, *args: str) -> None:
        self.job = job
        self.log_path = work / f"{job}.log"
        command = [sys.executable, "-m", "statecheckpoint.demo", "job", job]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, str(work), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )

    def wait(self, timeout: float = _CHILD_TIMEOUT_S) -> None:
        """Waits for the job to end.

        Raises:
            DemoFailure: When it fails or runs past ``timeout``.
        """
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise DemoFailure(
                f"the {self.job} job ran past {timeout:.0f} s\n{self.tail()}"
            ) from None
        if code != 0:
            raise DemoFailure(f"the {self.job} job exited with {code}\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        """Returns the end of the job's output, indented."""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    | {line}" for line in text)


class _Jobs:
    """Starts the demo's child jobs; on exit, kills any still running."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._children: list[_Child] = []

    def start(self, job: str, *args: str) -> _Child:
        """Starts ``job`` with ``args`` in a new process."""
        child = _Child(job, self.work, *args)
        self._children.append(child)
        return child

    def __enter__(self) -> _Jobs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for child in self._children:
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()


@contextlib.contextmanager
def _prefect_api(report: Report) -> Iterator[threading.Thread | None]:
    """Makes sure a Prefect API is reachable by this process and its children.

    Uses the configured API when there is one. Otherwise starts Prefect's own
    local server, as Prefect would on first use, but in a thread so that the
    demo's first steps overlap its start-up, and exports its address so that
    the children share it instead of each starting one.

    Yields:
        The thread starting the server (join it before using the API), or None.
    """
    if PREFECT_API_URL.value():
        report.line("prefect", f"using the API at {PREFECT_API_URL.value()}")
        yield None
        return

    # Imported here: it takes seconds, and the child jobs import this package.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    started = time.perf_counter()
    failure: list[BaseException] = []

    def start() -> None:
        try:
            server.start(timeout=180)
        except BaseException as exc:  # noqa: BLE001 - re-raised after join
            failure.append(exc)
            return
        os.environ["PREFECT_API_URL"] = server.api_url
        report.line(
            "prefect",
            f"started a local server at {server.api_url} "
            f"in {time.perf_counter() - started:.1f} s",
        )

    thread = threading.Thread(target=start, name="prefect-server", daemon=True)
    thread.start()
    try:
        yield thread
        if failure:
            raise DemoFailure(f"the Prefect server did not start: {failure[0]}")
    finally:
        thread.join()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _join_server(thread: threading.Thread | None) -> Any:
    """Waits for the local server and returns settings that point at it."""
    if thread is None:
        return contextlib.nullcontext()
    thread.join()
    url = os.environ.get("PREFECT_API_URL")
    if url is None:
        raise DemoFailure("the Prefect server did not start; see the log above")
    return temporary_settings(updates={PREFECT_API_URL: url})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _kill_mid_epoch(child: _Child, spec: DemoSpec, work: Path) -> dict[str, Any]:
    """SIGKILLs the training job once the pointer names epoch ``kill_after`` or
    later and the job is at least one step into a later epoch."""
    deadline = time.monotonic() + _CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise DemoFailure(
                f"the training job ended (exit {child.process.returncode}) before "
                f"it could be killed; raise min_epoch_seconds\n{child.tail()}"
            )
        pointer = CheckpointPointer.read(spec.pointer_name)
        if pointer is not None and (pointer.epoch or 0) >= spec.kill_after:
            progress = _read_json(work / "progress-1.json")
            if progress and progress["epoch"] > pointer.epoch and progress["step"]:
                os.kill(child.process.pid, signal.SIGKILL)
                child.process.wait()
                return {"pointer": pointer, **progress}
        time.sleep(_POLL_S)
    child.process.kill()
    raise DemoFailure(f"the training job never reached epoch {spec.kill_after}")


def _train_tokenizer(spec: DemoSpec, work: Path, report: Report) -> DemoSpec:
    started = time.perf_counter()
    texts = documents()
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    tokenizer.save(str(work / TOKENIZER_FILE))
    data = to_tokenizer_data(tokenizer)
    report.line(
        "tokenizer",
        f"byte-level BPE on pydoc_data.topics ({len(texts)} documents, "
        f"{sum(map(len, texts)) / 1e3:.0f} k chars): {len(data.token_to_id)} tokens, "
        f"{len(data.merge_rules)} merges, in {time.perf_counter() - started:.2f} s",
    )
    model = dataclasses.replace(spec.model, vocab_size=tokenizer.get_vocab_size())
    return dataclasses.replace(spec, model=model)


def _describe_run(spec: DemoSpec, report: Report) -> None:
    from statecheckpoint.demo.model import num_params

    m, t = spec.model, spec.train
    report.line(
        "model",
        f"{m.num_layers} layer(s) x {m.num_heads} heads, width {m.hidden_size}, "
        f"context {m.context}: {num_params(m):,} float32 parameters",
    )
    report.line(
        "training",
        f"{t.epochs} epochs x {t.steps_per_epoch} steps x {t.batch_size} sequences, "
        f"Adam lr {t.learning_rate}, seed {t.seed}",
    )


def run_demo(
    root: str,
    *,
    epochs: int | None = None,
    small: bool = False,
    report: Report | None = None,
) -> bool:
    """Runs the whole demo and prints its report.

    Args:
        root: Root folder of the ``FileSystemStore``.
        epochs: Overrides the preset's number of epochs.
        small: Use the tiny preset the tests use.
        report: Where the report goes; a new one on standard output by default.

    Returns:
        True when the demo ran through and every identity check passed.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    report = report or Report()
    root = str(Path(root).resolve())
    spec = preset(small, run_id=uuid.uuid4().hex[:12], root=root, epochs=epochs)
    report.line("run", f"{spec.run_id}, file-system store at {root}")

    try:
        with (
            tempfile.TemporaryDirectory(prefix="statecheckpoint-demo-") as tmp,
            _prefect_api(report) as server,
        ):
            work = Path(tmp)
            spec = _train_tokenizer(spec, work, report)
            spec.write(work)
            _describe_run(spec, report)
            with _Jobs(work) as jobs:
                reference = jobs.start("reference")
                with _join_server(server), disable_run_logger():
                    _run_with_api(spec, jobs, report, reference)
    except DemoFailure as exc:
        report.line("error", str(exc))
        report.verdict("the demo ran to the end", False)

    report.summary()
    return report.passed


def _run_with_api(
    spec: DemoSpec, jobs: _Jobs, report: Report, reference_job: _Child
) -> None:
    """Kills, resumes and compares; then generates, pauses, restores and compares.

    Parent-side manager calls run with Prefect's run loggers off: their task-run
    chatter would drown the report.
    """
    work = jobs.work
    started = time.perf_counter()
    training = jobs.start("train")
    killed = _kill_mid_epoch(training, spec, work)
    pointer = killed["pointer"]
    report.line(
        "kill -9",
        f"training process killed in epoch {killed['epoch']} at step "
        f"{killed['step']}, {time.perf_counter() - started:.1f} s after its start; "
        f"pointer {spec.pointer_name} named epoch {pointer.epoch}",
    )
    for record in _read_json(work / "epochs-1.json") or []:
        report.line(
            "",
            f"epoch {record['epoch']} checkpoint {record['id']}: save() returned "
            f"in {record['save_call_s'] * 1e3:.1f} ms (background; it waits "
            "while the previous save is still in flight)",
        )

    jobs.start("resume").wait()
    reference_job.wait()
    resumed = _read_json(work / "resume.json")
    reference = _read_json(work / "reference.json")
    with CheckpointManager(FileSystemStore(root=spec.root)) as manager:
        infos = manager.list(tag=("run", spec.run_id))
        checks.describe_resume(report, manager, resumed, infos)
    report.verdict(
        "resumed after kill -9: losses and weights == uninterrupted run",
        checks.compare_losses(report, resumed, reference, infos),
    )
    report.verdict(
        "tokenizer rebuilt from the checkpoint encodes the corpus identically",
        bool(resumed["same_tokens"]),
    )

    jobs.start("generate", resumed["epochs"][-1]["id"]).wait()
    generated = _read_json(work / "generate.json")
    jobs.start("restore", generated["session_id"]).wait()
    restored = _read_json(work / "restore.json")
    report.verdict(
        "session restored in a new process continues == uninterrupted generation",
        checks.compare_generation(report, spec, generated, restored),
    )
