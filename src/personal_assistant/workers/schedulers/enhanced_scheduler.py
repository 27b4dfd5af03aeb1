"""Beat scheduler for ``celery beat --scheduler=...enhanced_scheduler:EnhancedScheduler``.

Celery's persistent scheduler plus a liveness record: every loop of beat writes its time to
Redis (``keys.BEAT_TICK_KEY``), which the beat container's health check reads
(``python -m personal_assistant.workers.monitoring.health_check beat --max-age 120``). A ping of
the workers, which is what ``celery inspect ping`` checks, says nothing about beat.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.beat import PersistentScheduler

from personal_assistant.workers import redis_clients
from personal_assistant.workers.config import is_redis_url
from personal_assistant.workers.monitoring.liveness import BeatLiveness

logger = logging.getLogger(__name__)


class EnhancedScheduler(PersistentScheduler):  # type: ignore[misc]
    """Persistent beat scheduler that records each tick for its health check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._liveness: BeatLiveness | None = None
        url = str(self.app.conf.broker_url)
        if is_redis_url(url):
            self._liveness = BeatLiveness(redis_clients.client_for(url))

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Record liveness, then do beat's work; a Redis error never stops the schedule."""
        if self._liveness is not None:
            try:
                self._liveness.tick()
            except redis.RedisError:
                logger.warning("could not record beat liveness", exc_info=True)
        return float(super().tick(*args, **kwargs))
