"""Seed path for task monitoring: liveness and queue depth, see the ``monitoring`` package."""

from __future__ import annotations

from personal_assistant.workers.monitoring.liveness import (
    BeatLiveness,
    Heartbeat,
    WorkerLiveness,
    WorkerRegistry,
)
from personal_assistant.workers.monitoring.queue_depth import queue_depths

__all__ = ["BeatLiveness", "Heartbeat", "WorkerLiveness", "WorkerRegistry", "queue_depths"]
