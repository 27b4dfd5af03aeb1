"""A worker checks its Redis at start: one that would lose or evict tasks is reported (or refused).

What loses tasks without any worker doing wrong:
- no AOF: a restart forgets every queued and running task since the last RDB snapshot (minutes);
- an evicting ``maxmemory-policy``: under memory pressure Redis deletes keys, queue lists and the
  ``unacked`` hash among them;
- Redis older than 7.0: the fetch scripts need its script flags (``allow-oom``), so the worker
  could not consume at all.

Outside production each is a warning in the worker's log; with ``ENVIRONMENT=production`` the
first two stop the worker with one line naming the setting (exit code 78, "configuration
error", which ``make run`` and restart policies do not retry blindly). An old Redis always stops
it. Only ``INFO`` is used, which managed Redis services allow (``CONFIG GET`` often is not).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import redis_clients
from personal_assistant.workers.config import is_redis_url, mask_url
from personal_assistant.workers.hooks.registry import WorkerHook

logger = logging.getLogger(__name__)

# sysexits.h EX_CONFIG: the configuration is wrong; restarting the same way cannot help.
EXIT_CONFIG = 78
# The check runs once per worker start and tries once (a probe client). A broker that does not
# answer in time is logged as unchecked and the worker starts anyway, unchecked even in
# production; so it gets longer than a readiness probe's second: a slow first connection (a TLS
# handshake with a managed Redis across a network, a busy server) still gets its verdict.
CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RedisFacts:
    """What a Redis server says of itself in ``INFO``."""

    version: tuple[int, ...]
    aof_enabled: bool
    maxmemory_policy: str

    @classmethod
    def read(cls, client: redis.Redis) -> RedisFacts:
        """Ask the server (one INFO round trip per section)."""
        server: dict[str, Any] = client.info("server")
        persistence: dict[str, Any] = client.info("persistence")
        memory: dict[str, Any] = client.info("memory")
        version = tuple(int(part) for part in str(server.get("redis_version", "0")).split(".")[:2])
        return cls(
            version=version,
            aof_enabled=str(persistence.get("aof_enabled", "0")) == "1",
            maxmemory_policy=str(memory.get("maxmemory_policy", "unknown")),
        )


@dataclass(frozen=True)
class Findings:
    """Problems found: ``fatal`` stop any worker, ``risky`` stop a production worker."""

    fatal: list[str]
    risky: list[str]


def assess(facts: RedisFacts, *, reliable_fetch: bool = True) -> Findings:
    """What is wrong with a broker Redis described by ``facts``."""
    fatal: list[str] = []
    risky: list[str] = []
    if reliable_fetch and facts.version < c.REDIS_MIN_VERSION:
        fatal.append(
            f"Redis {'.'.join(map(str, facts.version))} is older than "
            f"{'.'.join(map(str, c.REDIS_MIN_VERSION))}, which the reliable fetch needs "
            "(script flags); upgrade Redis"
        )
    if not facts.aof_enabled:
        risky.append(
            "Redis runs without AOF persistence (appendonly no): a restart loses every task "
            "queued or running since its last snapshot; set appendonly yes"
        )
    if facts.maxmemory_policy != "noeviction":
        risky.append(
            f"Redis evicts keys when full (maxmemory-policy {facts.maxmemory_policy}): it "
            "would delete queued tasks; set maxmemory-policy noeviction"
        )
    return Findings(fatal, risky)


class BrokerSafetyHook(WorkerHook):
    """Checks the broker's Redis when a worker starts (see the module doc)."""

    name = "broker-safety"

    def __init__(self, app: Any) -> None:
        self.app = app

    def on_worker_init(self, *, sender: Any) -> None:
        """Warn, or stop the worker, before it consumes anything."""
        url = str(self.app.conf.broker_url)
        if not is_redis_url(url):
            return
        settings = self.app.settings
        client = redis_clients.probe_client(url, CHECK_TIMEOUT_S)
        try:
            facts = RedisFacts.read(client)
        except redis.RedisError as exc:
            # Not reachable yet: the consumer retries the connection and logs it; no verdict.
            logger.warning(
                "could not check the broker at %s: %s", mask_url(url), mask_url(str(exc))
            )
            return
        finally:
            client.close()
        found = assess(facts, reliable_fetch=settings.broker_reliable_fetch)
        production = settings.environment == "production"
        stop = found.fatal + (found.risky if production else [])
        for problem in found.risky if not production else []:
            logger.warning("broker %s: %s", mask_url(url), problem)
        if stop:
            sys.stderr.write(f"personal_assistant.workers: {'; '.join(stop)}\n")
            raise SystemExit(EXIT_CONFIG)
