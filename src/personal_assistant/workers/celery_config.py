"""Celery settings built from WorkerSettings: the seed's choices, corrected where they were wrong.

Corrections of the seed, each for a reason (DESIGN.md section 4):
- JSON only, for tasks, results and events: pickle from a shared broker is remote code execution.
- ``task_acks_late`` *and* ``task_reject_on_worker_lost``: acks_late alone still acks when the
  child dies, losing the task. Delivery is therefore at-least-once; tasks declare idempotency.
- ``visibility_timeout`` above the hard time limit, the longest countdown and the longest retry
  delay, the same for broker and result backend; otherwise Redis delivers those messages twice.
- Priorities with ``queue_order_strategy=priority`` and ten steps, through a transport that makes
  a higher number run first (broker/priority.py), as the seed means.
- No task events: they cost about a quarter of throughput and only Flower reads them; our
  metrics come from in-process hooks. ``celery worker -E`` still turns them on for a session.
- No gzip: messages are a few hundred bytes, and compressing them costs CPU on every publish.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.intake import CONSUMER_PATH
from personal_assistant.workers.broker.priority import PRIORITY_STEPS, PRIORITY_TRANSPORT_PATH
from personal_assistant.workers.broker.transport import TRANSPORT_PATH
from personal_assistant.workers.config import WorkerSettings, is_redis_url
from personal_assistant.workers.routing import task_routes
from personal_assistant.workers.schedulers.ai_scheduler import AI_SCHEDULE
from personal_assistant.workers.schedulers.base_scheduler import (
    build_beat_entries,
    build_beat_schedule,
)
from personal_assistant.workers.schedulers.email_scheduler import EMAIL_SCHEDULE
from personal_assistant.workers.schedulers.file_scheduler import FILE_SCHEDULE
from personal_assistant.workers.schedulers.maintenance_scheduler import (
    MAINTENANCE_SCHEDULE,
    alerting_schedule,
)
from personal_assistant.workers.schedulers.sync_scheduler import SYNC_SCHEDULE

# A day: long enough for a user to poll a result after a night's batch, short enough that
# Redis (noeviction) does not fill with results nobody reads.
RESULT_EXPIRES_S = 86_400


def task_queues() -> list[Queue]:
    """One direct exchange and queue per domain (the names are the public contract)."""
    return [
        Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            queue_arguments={"x-max-priority": c.PRIORITY_MAX},
        )
        for name in c.QUEUES
    ]


def build_celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Every Celery setting this project sets, derived from ``settings``."""
    visibility = settings.effective_visibility_timeout
    beat_groups = (
        AI_SCHEDULE,
        EMAIL_SCHEDULE,
        FILE_SCHEDULE,
        SYNC_SCHEDULE,
        MAINTENANCE_SCHEDULE,
        alerting_schedule(settings) if settings.alerting_enabled else (),
    )
    config: dict[str, Any] = {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.result_backend_url,
        "broker_connection_retry_on_startup": True,
        # Reconnect for as long as it takes (Celery gives up after 100 tries, about an hour of
        # back-off, and the worker exits): a broker outage must not need a person to restart
        # every worker. Connection errors are logged on every try.
        "broker_connection_max_retries": None,
        # Serialisation: JSON only.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # Routing and priorities.
        "task_queues": task_queues(),
        "task_routes": task_routes(),
        "task_default_queue": c.DEFAULT_QUEUE,
        "task_default_exchange": c.DEFAULT_QUEUE,
        "task_default_routing_key": c.DEFAULT_QUEUE,
        # No task_default_priority: Celery 5.7 merges it into every registered task's options,
        # where it overrides the route's (queue's) priority, so an ai task sent by apply_async,
        # or by send_task in a finalized app (a worker, beat), went out at 5 instead of 9.
        # DefaultPriorityHook gives PRIORITY_DEFAULT to a message that has no priority at all.
        "task_queue_max_priority": c.PRIORITY_MAX,
        # Reliability.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        # A task running when the broker connection drops is stopped and put back on its
        # queue when the worker reconnects (broker/transport.py), not finished unacknowledged.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_track_started": settings.task_track_started,
        "result_expires": RESULT_EXPIRES_S,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        # Messages no worker can run are dead-lettered, not dropped (broker/intake.py).
        "worker_consumer": CONSUMER_PATH,
        # Worker: one message reserved per slot by default (WORKER_PREFETCH_MULTIPLIER), so a long
        # task never holds others hostage.
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_concurrency": settings.worker_concurrency,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        "worker_pool": settings.worker_pool,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child or None,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts_level": "INFO",
        # Beat: loop at least every 30 s so its liveness record stays fresh.
        "beat_schedule": build_beat_schedule(*beat_groups),
        # The same entries with their patterns, for the enhanced scheduler (beat_catalogue.py).
        "pa_beat_entries": build_beat_entries(*beat_groups, timezone="UTC"),
        "beat_scheduler": f"{c.PACKAGE}.schedulers.enhanced_scheduler:EnhancedScheduler",
        "beat_max_loop_interval": c.BEAT_MAX_LOOP_INTERVAL_S,
    }
    if is_redis_url(settings.celery_broker_url):
        config["broker_transport"] = (
            TRANSPORT_PATH if settings.broker_reliable_fetch else PRIORITY_TRANSPORT_PATH
        )
        config["broker_transport_options"] = {
            "visibility_timeout": visibility,
            "queue_order_strategy": "priority",
            "priority_steps": PRIORITY_STEPS,
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": settings.unacked_restore_throttle,
            # The reliable fetch (broker/transport.py): the same liveness rule as the workers'
            # own (a consumer silent for WORKER_DOWN_AFTER is dead; its messages go back).
            "max_message_bytes": settings.broker_max_message_bytes,
            "consumer_dead_after": settings.worker_down_after,
            "consumer_beat_interval": settings.worker_heartbeat_interval,
        }
    return config
