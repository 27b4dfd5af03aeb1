"""Reading a worker's /metrics the way Prometheus does (prometheus_client's own text parser)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def samples(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` on the worker's /metrics: {sorted labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def by_label(found: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    """The samples of :func:`samples` summed by one label's value."""
    out: dict[str, float] = {}
    for labels, value in found.items():
        key = dict(labels).get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out
