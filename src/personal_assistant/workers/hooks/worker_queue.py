"""A plain ``celery worker`` consumes the queues of ``WORKER_QUEUE``, as ``make run`` does.

Celery's worker consumes every declared queue unless ``-Q`` names some. The containers run the
plain command with ``WORKER_QUEUE=email_tasks`` (one worker type per queue, scaled on its own),
so without this hook every replica of every type would consume all five queues. ``-Q`` still
wins: the hook acts only when the worker was left to consume everything.
"""

from __future__ import annotations

import logging
from typing import Any

from personal_assistant.workers.config import WorkerSettings
from personal_assistant.workers.hooks.registry import WorkerHook

logger = logging.getLogger(__name__)


class WorkerQueueHook(WorkerHook):
    """Selects the settings' ``worker_queue`` when the command line named no queue."""

    name = "worker-queue"

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def on_worker_setup(self, *, instance: Any) -> None:
        """After ``-Q`` was applied (celeryd_after_setup), before the consumer starts."""
        queues = instance.app.amqp.queues
        consuming = set(queues.consume_from)
        wanted = list(self.settings.worker_queue)
        if consuming != set(queues) or consuming == set(wanted):
            return  # -Q named the queues, or WORKER_QUEUE is every queue
        queues.select(wanted)
        logger.info("consuming %s (WORKER_QUEUE)", ", ".join(wanted))
