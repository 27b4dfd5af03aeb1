"""Reading a recorder's samples as a scrape would, for the series of one test task kind."""

from __future__ import annotations

from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder


def sample(recorder: TaskMetricsRecorder, metric: str, **labels: str) -> float | None:
    return recorder.registry.get_sample_value(metric, labels)


LABELS = {"name": "tests.noop", "hostname": "w1@host", "queue_name": "file_tasks"}
