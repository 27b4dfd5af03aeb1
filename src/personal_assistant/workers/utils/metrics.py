"""Seed path for the in-process metrics collector: see ``metrics.collector``."""

from __future__ import annotations

from personal_assistant.workers.metrics.collector import MetricsCollector, TaskMetrics

__all__ = ["MetricsCollector", "TaskMetrics"]
