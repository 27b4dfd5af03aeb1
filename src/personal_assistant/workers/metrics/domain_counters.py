"""The domain counters (domain_series.py), counted where the work happens, exported by workers.

The work happens in pool children, which serve no ``/metrics``: each counts in memory and adds
to one Redis hash (``METRICS_DOMAIN_KEY``) at most once a second (hash_counter.py); every
worker's ``/metrics`` exports the hash. Like ``celery_task_sent_total`` the series are
cluster-wide: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import cast

import redis
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from personal_assistant.workers import keys
from personal_assistant.workers.metrics.domain_series import (
    DOMAIN_FAMILIES,
    DomainFamily,
    domain_field,
)
from personal_assistant.workers.metrics.hash_counter import FLUSH_EVERY_S, RedisHashCounter
from personal_assistant.workers.redis_clients import client_for

logger = logging.getLogger(__name__)

DOMAIN_KEY = keys.METRICS_DOMAIN_KEY


class DomainCounters(RedisHashCounter):
    """This process's domain counts, added to Redis in batches."""

    def __init__(
        self, client: Callable[[], redis.Redis], flush_every: float = FLUSH_EVERY_S
    ) -> None:
        super().__init__(DOMAIN_KEY, client, flush_every)

    def count(self, family: DomainFamily, *labels: str, amount: int = 1) -> None:
        """Add ``amount`` to ``family`` with these label values (in the family's order)."""
        field = domain_field(family, *labels)
        if amount:
            self.add(field, amount)


def read_domain_counts(client: redis.Redis) -> dict[tuple[str, ...], int]:
    """Every (family, label values...) and its total, from Redis; unknown fields skipped."""
    raw = cast(dict[bytes, bytes], client.hgetall(DOMAIN_KEY))
    out: dict[tuple[str, ...], int] = {}
    for field, value in raw.items():
        try:
            name, *labels = json.loads(field)
        except (ValueError, TypeError):
            continue  # not ours: never break a scrape over one field
        family = DOMAIN_FAMILIES.get(str(name))
        if family is None or len(labels) != len(family.labels):
            continue
        out[(family.name, *map(str, labels))] = int(value)
    return out


class DomainCollector(Collector):
    """Exposes every domain family from Redis at scrape time (families without counts too)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def _families(self) -> dict[str, CounterMetricFamily]:
        return {
            f.name: CounterMetricFamily(f.name, f.help, labels=list(f.labels))
            for f in DOMAIN_FAMILIES.values()
        }

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (the registry checks names on register)."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        """The cluster's totals, read now."""
        families = self._families()
        try:
            counts = read_domain_counts(self._client)
        except redis.RedisError:
            logger.warning("domain counts unavailable", exc_info=True)
            counts = {}
        for (name, *labels), total in sorted(counts.items()):
            families[name].add_metric(labels, total)
        yield from families.values()


def counters_for_broker(broker_url: str) -> DomainCounters:
    """Counters adding to the Redis at ``broker_url``, through that URL's shared client."""
    return DomainCounters(lambda: client_for(broker_url))
