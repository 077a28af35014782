"""Prefect flows built on the stores and tasks."""

from statecheckpoint.flows.resume import resume_training

__all__ = ["resume_training"]
