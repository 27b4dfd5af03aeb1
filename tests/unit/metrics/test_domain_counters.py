"""Domain counters: counted in memory, added to Redis in batches, exported by every worker."""

from __future__ import annotations

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry

from personal_assistant.workers.metrics.domain_counters import (
    DOMAIN_KEY,
    DomainCollector,
    DomainCounters,
    read_domain_counts,
)
from personal_assistant.workers.metrics.domain_series import (
    AI_TOKENS,
    CALENDAR_SYNC_ERRORS,
    DOMAIN_FAMILIES,
    EMAIL_SENT,
)


def unreachable() -> redis.Redis:
    """A client of a port where nothing listens, which fails at once (no retries)."""
    return redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def test_counts_reach_redis_on_flush_summed_per_family_and_labels(
    redis_client: redis.Redis,
) -> None:
    counters = DomainCounters(lambda: redis_client, flush_every=60)
    counters.count(EMAIL_SENT)
    counters.count(EMAIL_SENT, amount=2)
    counters.count(AI_TOKENS, "llama3", "prompt", amount=120)

    assert read_domain_counts(redis_client) == {}  # nothing before the flush
    counters.flush()

    assert read_domain_counts(redis_client) == {
        ("pa_email_sent",): 3,
        ("pa_ai_tokens", "llama3", "prompt"): 120,
    }


def test_a_count_with_the_wrong_labels_is_refused(redis_client: redis.Redis) -> None:
    counters = DomainCounters(lambda: redis_client, flush_every=60)

    with pytest.raises(
        ValueError, match=r"pa_calendar_sync_errors takes labels \('feed', 'reason'\)"
    ):
        counters.count(CALENDAR_SYNC_ERRORS, "work")


def test_the_collector_exports_every_family_and_skips_fields_not_its_own(
    redis_client: redis.Redis,
) -> None:
    counters = DomainCounters(lambda: redis_client, flush_every=60)
    counters.count(CALENDAR_SYNC_ERRORS, "work", "malformed")
    counters.flush()
    redis_client.hset(DOMAIN_KEY, mapping={"junk": 1, '["pa_unknown", "x"]': 2})
    registry = CollectorRegistry()
    registry.register(DomainCollector(redis_client))

    text = generate_latest(registry).decode()

    assert 'pa_calendar_sync_errors_total{feed="work",reason="malformed"} 1.0' in text
    for name in DOMAIN_FAMILIES:
        assert f"# TYPE {name}_total counter" in text
    assert "pa_unknown" not in text


def test_a_scrape_while_redis_is_down_still_answers_with_empty_families() -> None:
    down = unreachable()
    registry = CollectorRegistry()
    registry.register(DomainCollector(down))

    text = generate_latest(registry).decode()

    assert "# TYPE pa_email_sent_total counter" in text
    assert [line for line in text.splitlines() if not line.startswith("#")] == []


def test_counts_are_kept_while_redis_is_down_and_added_once_it_is_back(
    redis_client: redis.Redis,
) -> None:
    down = unreachable()
    current = [down]
    counters = DomainCounters(lambda: current[0], flush_every=60)
    counters.count(EMAIL_SENT, amount=5)

    counters.flush()
    current[0] = redis_client
    counters.flush()

    assert read_domain_counts(redis_client) == {("pa_email_sent",): 5}
