"""The whole Redis keyspace of the package, and every message header it sets or reads.

Every key lives in the broker's Redis database (the result backend's when the broker is not
Redis: ``config.state_redis_url``). Each entry says what lives there, its Redis type, who writes
and who reads it, and what bounds it (Redis runs with ``noeviction``, so nothing may grow
without one). The values are stored data and wire format: running deployments and queued
messages use them, so changing one is a migration, and tests/unit/test_keys.py pins each value
so that such a change is deliberate and visible.

Our own keys start with ``pa:``; kombu's names that this package reads or writes itself follow.
Keys kombu and Celery keep to themselves are not spelled anywhere in the package and are not
named here: ``_kombu.binding.<exchange>`` (sets of queue bindings), ``unacked_mutex`` (kombu's
lock around its visibility-timeout scan) and ``celery-task-meta-<task id>`` (results, expiring
after ``result_expires``).

Pure module: no Redis, Celery or kombu import, so every layer may use it.
"""

from __future__ import annotations

from typing import Final

# --- Queues (kombu's naming) ---------------------------------------------------------------------
# A queue is one Redis list per priority step: ``<queue>`` for step 0 (served first) and
# ``<queue>\x06\x16<step>`` for steps 1..9 (broker/priority.py decides which step a priority
# lands in). Lists; producers LPUSH (kombu, the workflow outbox inside its commit), consumers
# pop from the right (broker/scripts.py FETCH; kombu's BRPOP for no-ack queues); queue depth
# and the dead-letter replay read them. Bounded by what producers send and workers drain. The
# separator is kombu's default ``sep`` of its Redis channel, spelled here because queue depth
# counts every step's list.
PRIORITY_SEPARATOR: Final = "\x06\x16"


def priority_list_key(queue: str, step: int, sep: str = PRIORITY_SEPARATOR) -> str:
    """The list holding ``queue``'s messages of priority step ``step`` (kombu's name)."""
    return queue if step == 0 else f"{queue}{sep}{step}"


# kombu's custody of delivered, unacknowledged messages, as its Redis channel names them by
# default (transport options ``unacked_key`` and ``unacked_index_key``; the reliable transport
# takes the channel's values, which are these unless a deployment overrides them).
# Hash: delivery tag -> JSON ``[message, exchange, routing key]``. Written by the reliable
# fetch (broker/scripts.py FETCH) and by kombu's own consumers; removed by the ack, or by the
# restore that puts a message back on its queue. Bounded by the messages in flight.
KOMBU_UNACKED_KEY: Final = "unacked"
# Sorted set: delivery tag -> delivery time (the client's clock), written and removed together
# with the hash above; kombu's visibility-timeout scan reads it to redeliver stale messages.
KOMBU_UNACKED_INDEX_KEY: Final = "unacked_index"

# --- Broker custody (broker/custody.py, broker/scripts.py) --------------------------------------
# Hash: delivery tag -> "<consumer id> <nonce>", the consumer that fetched each message in
# ``unacked``. Written by FETCH in the same step as the unacked entry, removed by ACK and MOVE
# (the reliable transport, every worker); read by ORPHANS to find a dead consumer's messages.
# Bounded by the messages in flight.
BROKER_OWNER_KEY: Final = "pa:broker:owner"
# Sorted set: consumer id (one per broker channel) -> its last heartbeat, by Redis's clock.
# Written by FETCH and BEAT (every worker's consumers); read by ORPHANS; a consumer silent past
# ``consumer_dead_after`` is removed once its messages are put back, and a channel that closes
# cleanly removes its own id.
BROKER_CONSUMERS_KEY: Final = "pa:broker:consumers"
# List per queue, ``pa:broker:wake:<queue>``: one empty token per task message published, so
# consumers blocked on it (BLPOP) wake at once. Written by producers with each task message
# (broker/transport.py) and by restores (which also PEXPIRE it, custody.WAKE_TTL_MS); read by
# consumers; FETCH deletes it when it finds the queue empty, so tokens never outnumber the
# messages queued since.
BROKER_WAKE_PREFIX: Final = "pa:broker:wake:"


def broker_wake_key(queue: str) -> str:
    """The wake list of ``queue``: consumers block on it while the queue is empty."""
    return f"{BROKER_WAKE_PREFIX}{queue}"


# --- Worker and beat liveness (monitoring/liveness.py) -------------------------------------------
# Sorted set: worker hostname -> its last heartbeat (Unix time). Written by each worker's
# heartbeat thread every HEARTBEAT_INTERVAL_S, and on clean shutdown; read by pa-status, the
# ``celery_worker_up`` exporter and the worker-offline alert. Hostnames silent for longer than
# the retention (metrics/snapshots.DEFAULT_RETENTION_S, a day) are pruned by every beat and read.
WORKERS_SEEN_KEY: Final = "pa:workers:seen"
# Hash per worker, ``pa:workers:info:<hostname>``: queues, pid, started_at, extra, stopped,
# stopped_at. Written with each heartbeat and on clean shutdown; read with the set above. Its
# TTL (the retention) is refreshed by every heartbeat.
WORKER_INFO_PREFIX: Final = "pa:workers:info:"


def worker_info_key(hostname: str) -> str:
    """The hash of one worker's details."""
    return f"{WORKER_INFO_PREFIX}{hostname}"


# String: Unix time of the beat scheduler's last loop. Written by beat every loop
# (schedulers/enhanced_scheduler.py); read by beat's container health check and the beat-tick
# metric. One key, overwritten, no TTL.
BEAT_TICK_KEY: Final = "pa:beat:last_tick"
# String: "<fencing token>:<owner>", with a PX time to live of the lock timeout: the beat that
# may send. Written by the beat holding it (acquire, renew, release; schedulers/beat_lock.py);
# read by every beat and by the run claims. One key, expiring.
BEAT_LOCK_KEY: Final = "pa:beat:lock"
# String: the last fencing token handed out, incremented by every successful acquire. Never
# expires: a token must not be handed out twice while an old holder may still present it.
BEAT_FENCE_KEY: Final = "pa:beat:fence"
# Hash per beat entry, ``pa:beat:entry:<name>``: last_due and next_due (the last time decided
# and the next), last_run, run_count, claimed_at (Redis's clock), token and last_task_id of the
# last run; skips:<reason> counts, last_skip, last_skip_due; fingerprint (of its timing). Written
# by the run claims and the beat's sync (schedulers/run_claims.py, beat_state.py); read by
# restarts, exports and `schedule list`. No expiry (forgetting it is the failure it prevents);
# bounded by the entries.
BEAT_ENTRY_PREFIX: Final = "pa:beat:entry:"
# Sorted set: entry name -> the Unix time its next run is sent (next due + jitter). Written by
# the lock holder (claims and sync); read by every tick (ZRANGEBYSCORE up to now). Bounded by the
# enabled entries; a disabled or removed entry is taken out.
BEAT_DUE_KEY: Final = "pa:beat:due"
# Hash: task id -> JSON {entry, due} of a run claimed and not yet known published. Written by the
# claim, cleared after publishing; read by the next lock holder, which publishes what is left.
# Bounded by one tick's runs (a dead beat's last batch).
BEAT_PENDING_KEY: Final = "pa:beat:pending"
# Hash: entry name -> JSON of an entry added at run time (`celery ... schedule add`). Written by
# the schedule command; read by every beat when the version below changes. Bounded by what
# operators add (removed with `schedule remove`).
BEAT_DEFS_KEY: Final = "pa:beat:defs"
# Set: names of disabled entries (declared or added). Written by `schedule disable|enable`.
BEAT_DISABLED_KEY: Final = "pa:beat:disabled"
# String: a counter bumped by every change to the two keys above; a beat reloads its entries
# when the value it read last changes. Read by every tick (in the tick script).
BEAT_VERSION_KEY: Final = "pa:beat:version"

# --- Metrics (metrics/snapshots.py, metrics/sent_counter.py) -------------------------------------
# Strings per worker, ``pa:metrics:snapshot:<hostname>`` and the same plus ``:prev``: its two
# latest task-count snapshots (JSON ``{"ts", "hostname", "tasks"}``). Written by each worker
# every 10 s (the current one becomes ``:prev`` atomically); read by pa-status for task rates.
# Both expire after the retention (a day).
METRICS_SNAPSHOT_PREFIX: Final = "pa:metrics:snapshot:"
METRICS_SNAPSHOT_PREV_SUFFIX: Final = ":prev"


def metrics_snapshot_key(hostname: str) -> str:
    """The current task-count snapshot of ``hostname``."""
    return f"{METRICS_SNAPSHOT_PREFIX}{hostname}"


def metrics_snapshot_prev_key(hostname: str) -> str:
    """The snapshot of ``hostname`` before the current one."""
    return f"{metrics_snapshot_key(hostname)}{METRICS_SNAPSHOT_PREV_SUFFIX}"


# Sorted set: hostname -> time of its latest snapshot, so readers never SCAN. Written with each
# snapshot; hosts older than the retention are pruned by every read.
METRICS_SNAPSHOTS_INDEX_KEY: Final = "pa:metrics:snapshots"
# Hash: JSON ``[task name, producer hostname, queue]`` -> tasks published. Incremented by every
# producer (web app, beat, workers) at most once a second; read by every worker's /metrics
# (``celery_task_sent_total``). No TTL: one field per (task, producer host, queue), so it grows
# only with new producer hostnames.
METRICS_SENT_KEY: Final = "pa:metrics:sent"
# Hash: JSON ``[family, label values...]`` -> count, for the domain counters
# (metrics/domain_series.py: e-mails sent, feed events upserted, AI tokens, ...). Incremented by
# the pool children that do the work, at most once a second each; read by every worker's
# /metrics. No TTL: one field per (family, labels), bounded by the configured feeds and models.
METRICS_DOMAIN_KEY: Final = "pa:metrics:domain"

# --- Domains (ai/rate_limit.py) ------------------------------------------------------------------
# String per model: the cluster-wide AI request limiter's state (GCRA's theoretical arrival
# time, in ms), written and read by one Lua script; expires when the model is idle.
AI_RATE_LIMIT_PREFIX: Final = "pa:ai:rate:"


def ai_rate_limit_key(model: str) -> str:
    """The rate limiter's key of ``model``."""
    return f"{AI_RATE_LIMIT_PREFIX}{model}"


# --- Workflows (workflows/store.py, workflows/commit.py, workflows/runtime.py) -------------------
# Every workflow key starts with this prefix (``redis-cli --scan --pattern 'pa:wf:*'``).
WORKFLOW_KEY_PREFIX: Final = "pa:wf:"
# Set of the ids of workflows still running. Added at submit and removed at the end by the
# runtime; read by the periodic timeout sweep. Bounded by the workflows running.
WORKFLOWS_OPEN_KEY: Final = "pa:wf:open"
# Sorted set: workflow id -> its creation time (Unix), so `workflow list` finds workflows newest
# first without a SCAN. Added in the submit's transaction (workflows/index.py); read by
# `workflow list`. Bounded by the workflows whose keys exist: each id leaves it, with the set
# below, once its keys have expired (every submit and list removes those, a batch at a time).
WORKFLOWS_INDEX_KEY: Final = "pa:wf:index"
# Sorted set: workflow id -> when its keys expire (its end + runtime.FINISHED_TTL_S). Added in
# the transaction that ends the workflow, with the same expiry its keys get; read by the trim
# above. Bounded by the workflows ended within that retention.
WORKFLOWS_EXPIRING_KEY: Final = "pa:wf:expiring"


def workflow_definition_key(workflow_id: str) -> str:
    """String: the validated definition (JSON), written once at submit, read on every
    transition. Expires a week after the workflow ends (runtime.FINISHED_TTL_S)."""
    return f"{WORKFLOW_KEY_PREFIX}{workflow_id}:def"


def workflow_meta_key(workflow_id: str) -> str:
    """Hash: the workflow's name, state, times, task count (``tasks``) and its ``remaining``
    and ``failed_leaves`` counters, written at submit and by the commit that ends a task.
    Expires with the definition."""
    return f"{WORKFLOW_KEY_PREFIX}{workflow_id}:meta"


def workflow_task_key(workflow_id: str, task_id: str) -> str:
    """Hash: one task's state (each field a JSON value) and its version ``v``, written at
    submit and by each committed transition (workflows/commit.py). Expires with the
    definition."""
    return f"{WORKFLOW_KEY_PREFIX}{workflow_id}:t:{task_id}"


# --- Dead letters (dead_letters/queue.py) --------------------------------------------------------
# Hash: dead-letter id -> entry (JSON). Written by a task's final failure and by the worker's
# rejection of a poison message; read, replayed and purged by ``celery ... dlq``; counted by
# pa-status. Bounded by DLQ_MAX_ENTRIES: the add script drops the oldest beyond it.
DLQ_KEY: Final = "pa:dlq"
# Sorted set: dead-letter id -> failure time, the order of the hash above; written and trimmed
# with it in one script.
DLQ_INDEX_KEY: Final = "pa:dlq:index"

# --- Alerting (alerting/hook.py) -----------------------------------------------------------------
# String (JSON): the state rules' windows and firing states, read and written by the periodic
# evaluator (whichever worker holds the lock below). One key, overwritten, no TTL.
ALERT_STATE_KEY: Final = "pa:alerts:state"
# String: redis-py's lock, so one evaluator runs at a time; it expires after 60 s.
ALERT_LOCK_KEY: Final = "pa:alerts:lock"
# Strings, ``pa:alerts:sent:<fingerprint>:<state>`` (``:r<period>`` added for a reminder): a
# token claimed with SET NX by the worker that sends that notification, so every worker
# evaluating the same alert sends it once. Expire after the rule's cooldown (at least 60 s).
ALERT_TOKEN_PREFIX: Final = "pa:alerts:sent:"  # noqa: S105 - a key prefix, not a password


def alert_token_key(fingerprint: str, state: str, reminder: int | None = None) -> str:
    """The token of one notification: an alert's ``firing`` or ``resolved`` state, or the
    reminder of a still-firing alert in cooldown period ``reminder``."""
    key = f"{ALERT_TOKEN_PREFIX}{fingerprint}:{state}"
    return key if reminder is None else f"{key}:r{reminder}"


# List: the latest notifications sent (JSON), newest first. Pushed by the sender, trimmed to
# its last 500 in the same round trip; read by ``celery ... alerts list``.
ALERT_HISTORY_KEY: Final = "pa:alerts:history"

# --- Message headers -----------------------------------------------------------------------------
# Celery hands a task's custom headers to it as request attributes of the same name, so these
# are also attribute names on ``task.request``.
# The workflow and workflow-task ids of a message the workflow runtime published; the worker's
# workflow hook reads them to record the task's end.
WORKFLOW_HEADER: Final = "pa_workflow"
WORKFLOW_TASK_HEADER: Final = "pa_workflow_task"
# The task's dependents (list of task ids, absent past a fan-out of 32), so the process that
# records its end reads their states with the definition in one round trip.
WORKFLOW_NEXT_HEADER: Final = "pa_workflow_next"
# The task's own state row as the commit that dispatched it wrote it: [version, {field: JSON}].
# The process that records the task's end starts from it instead of reading the row (the commit
# still checks the version, so a row changed since is read again).
WORKFLOW_ROW_HEADER: Final = "pa_workflow_row"
# Unix time of the publish, stamped by the producer's publish hook; the worker's metrics read
# it for ``celery_task_queue_wait_time``; the poison screen checks its type.
PUBLISHED_AT_HEADER: Final = "pa_published_at"
# The id of the dead letter a replayed message was sent from (``dlq replay``), for tracing.
DLQ_REPLAY_OF_HEADER: Final = "dlq_replay_of"
# kombu's flag on a message put back on its queue, set by the reliable transport's restore as
# kombu's own restore does (in the headers and in ``delivery_info``).
REDELIVERED_HEADER: Final = "redelivered"
# A poison envelope (broker/scripts.py FETCH and broker/poison.py): the reason a message was
# refused, the original message's size in bytes, a sentence for the operator, and the last
# 4 KiB of a message too large to decode (kombu writes the headers last: the tail names the task).
POISON_HEADER: Final = "pa_poison"
POISON_SIZE_HEADER: Final = "pa_poison_size"
POISON_DETAIL_HEADER: Final = "pa_poison_detail"
POISON_TAIL_HEADER: Final = "pa_poison_tail"

# --- Other names inside messages -----------------------------------------------------------------
# The content type of a poison envelope: the consumer recognises an envelope by it (its body is
# raw bytes, not a task), and no serializer is registered for it.
POISON_CONTENT_TYPE: Final = "application/x-pa-poison"
# The ``subtask_type`` of the link callback every workflow message carries (workflows/link.py):
# Celery rebuilds the link by this name, so workers must know it before consuming such messages.
WORKFLOW_ADVANCE_SIGNATURE_TYPE: Final = "pa_workflow_advance"
