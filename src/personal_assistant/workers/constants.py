"""Constants and defaults of the worker system, each with the reason for its value.

Everything tunable at deploy time is read through :mod:`personal_assistant.workers.config`;
the values here are its defaults and the fixed facts other modules agree on.
"""

from __future__ import annotations

from typing import Final

PACKAGE: Final = "personal_assistant.workers"
TASKS_PACKAGE: Final = f"{PACKAGE}.tasks"

# --- Queues -----------------------------------------------------------------------------------
# One queue per domain so each worker type scales on its own (the seed's layout). The names are
# the public contract: compose files, dashboards and WORKER_QUEUE values use them.
AI_QUEUE: Final = "ai_tasks"
EMAIL_QUEUE: Final = "email_tasks"
FILE_QUEUE: Final = "file_tasks"
SYNC_QUEUE: Final = "sync_tasks"
MAINTENANCE_QUEUE: Final = "maintenance_tasks"
QUEUES: Final[tuple[str, ...]] = (AI_QUEUE, EMAIL_QUEUE, FILE_QUEUE, SYNC_QUEUE, MAINTENANCE_QUEUE)
# Tasks outside the domain modules (Celery's own chord_unlock, workflow glue) need a home that
# some worker always consumes; housekeeping is the closest fit and is never scaled to zero.
DEFAULT_QUEUE: Final = MAINTENANCE_QUEUE

# --- Priorities -------------------------------------------------------------------------------
# Everywhere in this project a higher number runs first, as the seed means it and as RabbitMQ
# does. Kombu's Redis transport does the opposite (0 is its highest bucket); our broker transport
# (broker/priority.py) flips the bucket choice so the same numbers mean the same on both.
PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 9  # Redis keeps ten lists per queue; RabbitMQ gets x-max-priority=9.
# Messages published without a priority get this one, so they neither jump nor starve the queue.
PRIORITY_DEFAULT: Final = 5
# The seed's per-domain intent (10 = high). 10 is clamped to PRIORITY_MAX by the broker.
DOMAIN_PRIORITIES: Final[dict[str, int]] = {
    AI_QUEUE: 9,
    SYNC_QUEUE: 7,
    EMAIL_QUEUE: 5,
    FILE_QUEUE: 3,
    MAINTENANCE_QUEUE: 1,
}

# --- Time limits and redelivery ---------------------------------------------------------------
# Hard limit the worker enforces by killing the child; the seed's value (an hour covers the
# longest AI batch job we run).
TASK_TIME_LIMIT_S: Final = 3600
# Soft limit raises SoftTimeLimitExceeded ten minutes earlier so a task can clean up.
TASK_SOFT_TIME_LIMIT_S: Final = 3000
# The longest countdown/ETA a producer may ask for. Redis redelivers any unacked message older
# than the visibility timeout, so an ETA past it would run twice; we refuse such an ETA instead.
MAX_COUNTDOWN_S: Final = 3600
# Redis visibility timeout: above the hard time limit and the longest countdown (acks_late
# messages stay unacked while they wait or run), with a 20 % margin for clock skew and queueing.
VISIBILITY_TIMEOUT_S: Final = int(max(TASK_TIME_LIMIT_S, MAX_COUNTDOWN_S) * 1.2)

# --- Broker ---------------------------------------------------------------------------------
# The largest message a worker accepts. Task messages are a few hundred bytes; the largest
# legitimate ones carry an AI prompt with its context (128k tokens is about 0.5 MB of text,
# two thirds more once kombu base64-encodes the body). Anything larger belongs in storage,
# passed by reference. Past it, the fetch dead-letters the message instead of handing megabytes
# to the worker's main process.
BROKER_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
# Reconnecting to a lost broker: first try after half a second, then every half second more, up
# to five seconds apart (Celery waits 2, 4, 6 ... up to 30 s): a Redis restart takes about a
# second, so workers are back within a second or two of it, and a long outage costs one TCP
# connect every five seconds per worker.
BROKER_RECONNECT_FIRST_S: Final = 0.5
BROKER_RECONNECT_STEP_S: Final = 0.5
BROKER_RECONNECT_MAX_S: Final = 5.0
# An ack waits at most this long for the consumer's next fetch to carry it (one write and one
# round trip for both: a no-op task's ack cost the main process a blocking round trip of its
# own). Under load the next fetch follows in the same turn of the event loop, well within it;
# idle, the timer sends the ack alone. Short, because an ack not yet sent is a message that
# would run again if the worker died meanwhile.
BROKER_ACK_DELAY_S: Final = 0.005
# Redis 7: the fetch scripts declare ``allow-oom`` so a full server can still be drained.
REDIS_MIN_VERSION: Final = (7, 0)

# --- Retries ----------------------------------------------------------------------------------
# Five retries with doubling delays span about a minute of base delay before jitter
# (2+4+8+16+32 s): long enough to ride out a broker or API blip, short enough to surface a bug.
TASK_MAX_RETRIES: Final = 5
RETRY_BACKOFF_BASE_S: Final = 2.0
# Cap on one delay: far below MAX_COUNTDOWN_S so a retry never outlives the visibility timeout.
RETRY_BACKOFF_MAX_S: Final = 600.0

# --- Dead letters -----------------------------------------------------------------------------
# Bounded so a failure storm cannot fill Redis (which runs with noeviction); oldest go first.
DLQ_MAX_ENTRIES: Final = 10_000
# Long reprs of args would bloat every entry; the traceback is what an operator reads.
DLQ_MAX_FIELD_CHARS: Final = 20_000

# --- Progress ---------------------------------------------------------------------------------
# Publishing progress is a Redis write; throttle it so a tight loop does not flood the backend.
PROGRESS_MIN_INTERVAL_S: Final = 0.5

# --- Cleanup ----------------------------------------------------------------------------------
TEMP_FILE_MAX_AGE_HOURS: Final = 24  # a day: longer than any upload or export we keep in temp.
LOG_MAX_AGE_DAYS: Final = 14  # two weeks of logs on disk; older ones live in central logging.

# --- Liveness ---------------------------------------------------------------------------------
# A heartbeat every 5 s; down after 30 s of silence: six missed beats, so one slow Redis call or
# GC pause never flaps a worker, and a SIGKILLed one shows down within half a minute.
HEARTBEAT_INTERVAL_S: Final = 5.0
WORKER_DOWN_AFTER_S: Final = 30.0

# Beat sleeps up to this long between loops when nothing is due, so it records a tick at least
# this often; beat's health check max age (120 s in the compose file) must exceed it.
BEAT_MAX_LOOP_INTERVAL_S: Final = 30
# The beat lock's time to live: a standby beat takes over within this (plus one tick) after the
# active one dies. Thirty seconds rides out a slow Redis or a long garbage-collection pause
# (the holder renews every 10 s, so two renewals may fail), and a half-minute gap is within the
# misfire grace (beat_entry.DEFAULT_MISFIRE_GRACE_S), so a handover only delays runs.
BEAT_LOCK_TIMEOUT_S: Final = 30.0
# Beat's own /metrics port: the worker's (METRICS_PORT) plus one, so an embedded beat and its
# worker never contend for one port.
BEAT_METRICS_PORT: Final = 9809

# --- Alerting ---------------------------------------------------------------------------------
# Windows age and backlog/offline conditions change without task events: re-check every 15 s,
# a quarter of the shortest sensible window (1 min), so a resolve is late by at most that.
ALERT_EVAL_INTERVAL_S: Final = 15.0

# --- Input limits: what a user may hand us ----------------------------------------------------
# A workflow definition, file or dict: thousands of tasks fit in a megabyte; it is stored as one
# Redis value, and Redis runs with noeviction, so a few huge ones would stop the broker.
WORKFLOW_MAX_DEFINITION_BYTES: Final = 1024 * 1024
# Arguments of one workflow task (JSON): references to data belong there, not the data.
WORKFLOW_MAX_ARGS_BYTES: Final = 64 * 1024
# An alert rules file: a few hundred rules at most.
ALERT_RULES_MAX_BYTES: Final = 256 * 1024
# A rendered alert message: Slack cuts a message at 40,000 characters; an email or webhook body
# past 16 KiB means a template (say "{count:999.99f}" repeated) is blowing up, not informing.
ALERT_MESSAGE_MAX_CHARS: Final = 16 * 1024
# Webhook signatures: a request older (or newer, clocks differ) than this is refused as a
# replay; five minutes is what Slack and Stripe allow.
WEBHOOK_MAX_AGE_S: Final = 300
# HMAC-SHA256 keys shorter than its 32-byte output weaken it; a 1-character secret is guessable.
WEBHOOK_MIN_SECRET_BYTES: Final = 32
# The health and metrics server: Prometheus and a health check or two connect at a time; a
# connection that sends nothing for this long is closed, and past the cap new ones are refused.
HEALTH_MAX_CONNECTIONS: Final = 32
HEALTH_CONNECTION_TIMEOUT_S: Final = 5.0

# --- Ports ------------------------------------------------------------------------------------
METRICS_PORT: Final = 9808  # the popular Celery exporter's port, so scrape configs carry over.

# --- Redis clients (redis_clients.py) --------------------------------------------------------
# Every Redis call the package makes outside kombu's own connections (state, workflows, dead
# letters, liveness, metrics) is a single command, pipeline or short Lua script that Redis
# answers in well under a millisecond. 5 s is long enough to ride out an AOF rewrite's fsync
# stall or a busy script, short enough that a hung server is noticed in a health interval.
REDIS_SOCKET_TIMEOUT_S: Final = 5.0
REDIS_CONNECT_TIMEOUT_S: Final = 5.0
# Retries after a dropped connection or a timeout, with exponential backoff capped below:
# enough to cross a Redis restart's first second (a restart takes about 0.2 s here) without
# turning one dead server into a task stuck for tens of seconds. Every write retried this way
# is idempotent or versioned (workflow commits compare versions; counters are per-message).
REDIS_RETRIES: Final = 3
REDIS_RETRY_BASE_S: Final = 0.1
REDIS_RETRY_CAP_S: Final = 1.0
# Readiness probes and start-up checks try once with a short timeout: they answer "is it up
# now", and a probe that retries for seconds outlives the orchestrator's own deadline.
REDIS_PROBE_TIMEOUT_S: Final = 1.0

# --- Domains: the store, the e-mail outbox, calendar sync, AI jobs ----------------------------
# SQLite waits this long for another process's write lock before "database is locked": a
# claim or an upsert holds it for milliseconds, a calendar feed's sync for well under a second.
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
# SMTP: connect, each command and the DATA transfer. Providers answer in under a second; 30 s
# rides out a greylisting delay without letting a dead server hold a worker for minutes.
SMTP_TIMEOUT_S: Final = 30.0
# Messages claimed by one process_email_queue run and sent over one SMTP connection: large
# enough to amortise the TLS handshake, small enough that a batch sends well inside the lease.
EMAIL_BATCH_SIZE: Final = 50
# A claimed message goes back to the queue this long after its claim if the claimer died. Above
# a full batch at the SMTP timeout per message would be 25 minutes; a batch sends in seconds,
# and each message renews nothing, so 5 minutes bounds the delay a dead worker causes.
EMAIL_LEASE_S: Final = 300.0
# Deferrals (4xx replies, connection errors) before a message fails for good: with the backoff
# below (1, 2, 4 ... minutes, capped at an hour) about 4 hours, an MTA's usual first bounce.
EMAIL_MAX_ATTEMPTS: Final = 8
EMAIL_RETRY_BASE_S: Final = 60.0
EMAIL_RETRY_MAX_S: Final = 3600.0
# Calendar feeds: a busy personal calendar exports well under 1 MB; 10 MB refuses a runaway
# or hostile feed before it is parsed (icalendar holds the whole tree in memory).
CALENDAR_MAX_BYTES: Final = 10 * 1024 * 1024
CALENDAR_TIMEOUT_S: Final = 20.0
# AI: a chat completion of a few thousand tokens takes tens of seconds on hosted models.
AI_TIMEOUT_S: Final = 120.0
# The cluster-wide request rate: a hosted API's lowest paid tier allows about this much.
AI_REQUESTS_PER_MINUTE: Final = 60
AI_MAX_TOKENS: Final = 1024
AI_BATCH_SIZE: Final = 20
# A claimed AI job is claimable again this long after its claim if its run never finished:
# above AI_TIMEOUT_S times a few retries, below the seed's ten-minute beat interval x 2.
AI_LEASE_S: Final = 900.0
