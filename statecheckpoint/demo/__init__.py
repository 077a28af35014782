"""An end-to-end demo: train, get killed, resume, generate, pause and restore.

``python -m statecheckpoint.demo`` trains a byte-level BPE tokenizer and a small
numpy transformer on the help text that ships with Python, saves a checkpoint after
each epoch in the background, kills the training process with SIGKILL, resumes it
through the ``resume-training`` flow and checks that the losses and weights equal an
uninterrupted run's bit for bit. It then generates text with a KV-cache, saves the
session, restores it in a new process and checks that generation continues token for
token as if never paused. Everything runs locally: a ``FileSystemStore`` and
Prefect's own local server; nothing is downloaded.
"""

from __future__ import annotations

from statecheckpoint.demo.run import DemoFailure, run_demo

__all__ = ["DemoFailure", "run_demo"]
