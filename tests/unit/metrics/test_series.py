"""The task series as plain numbers, turned into the usual samples when scraped: failures per
exception class, rejections per reason, and histograms that match prometheus_client's own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from personal_assistant.workers.metrics.recorder import TaskMetricsRecorder
from personal_assistant.workers.metrics.series import RUNTIME_BUCKETS, BucketCounts
from tests.support.recorder_samples import LABELS, sample


def test_failures_are_counted_per_exception_class() -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    series.failed["ValueError"] = 2
    series.failed["KeyError"] = 1
    value = sample(recorder, "celery_task_failed_total", exception="ValueError", **LABELS)
    assert value == 2
    assert sample(recorder, "celery_task_failed_total", exception="KeyError", **LABELS) == 1


def test_rejections_are_counted_per_reason() -> None:
    recorder = TaskMetricsRecorder("w1@host")
    series = recorder.series("tests.noop", "file_tasks")
    series.rejected["requeued"] = 3
    series.rejected["bad_eta"] = 1

    assert sample(recorder, "celery_task_rejected_total", reason="requeued", **LABELS) == 3
    assert sample(recorder, "celery_task_rejected_total", reason="bad_eta", **LABELS) == 1


def test_histogram_samples_match_prometheus_clients_own_histogram() -> None:
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 1.0, 7.0, 3599.0, 3600.0, 5000.0]
    ours = BucketCounts(RUNTIME_BUCKETS)
    registry = CollectorRegistry()
    theirs = Histogram("h", "h", buckets=RUNTIME_BUCKETS, registry=registry)
    for value in values:
        ours.observe(value)
        theirs.observe(value)
    expected = [
        (s.labels["le"], s.value)
        for m in registry.collect()
        for s in m.samples
        if s.name == "h_bucket"
    ]
    assert ours.cumulative() == expected
    assert ours.total == pytest.approx(sum(values))
