"""The Redis keyspace and message headers: exact values, builders, no two names alike.

The values are stored data and wire format. A change here breaks running deployments and
queued messages, so this table must be edited on purpose, never as a side effect.
"""

from __future__ import annotations

import ast
import inspect
import re

import pytest

from personal_assistant.workers import keys

EXPECTED = {
    # Queues (kombu's naming) and kombu's custody.
    "PRIORITY_SEPARATOR": "\x06\x16",
    "KOMBU_UNACKED_KEY": "unacked",
    "KOMBU_UNACKED_INDEX_KEY": "unacked_index",
    # Broker custody.
    "BROKER_OWNER_KEY": "pa:broker:owner",
    "BROKER_CONSUMERS_KEY": "pa:broker:consumers",
    "BROKER_WAKE_PREFIX": "pa:broker:wake:",
    # Liveness.
    "WORKERS_SEEN_KEY": "pa:workers:seen",
    "WORKER_INFO_PREFIX": "pa:workers:info:",
    "BEAT_TICK_KEY": "pa:beat:last_tick",
    "BEAT_LOCK_KEY": "pa:beat:lock",
    "BEAT_FENCE_KEY": "pa:beat:fence",
    "BEAT_ENTRY_PREFIX": "pa:beat:entry:",
    "BEAT_DUE_KEY": "pa:beat:due",
    "BEAT_PENDING_KEY": "pa:beat:pending",
    "BEAT_DEFS_KEY": "pa:beat:defs",
    "BEAT_DISABLED_KEY": "pa:beat:disabled",
    "BEAT_VERSION_KEY": "pa:beat:version",
    # Metrics.
    "METRICS_SNAPSHOT_PREFIX": "pa:metrics:snapshot:",
    "METRICS_SNAPSHOT_PREV_SUFFIX": ":prev",
    "METRICS_SNAPSHOTS_INDEX_KEY": "pa:metrics:snapshots",
    "METRICS_SENT_KEY": "pa:metrics:sent",
    "METRICS_DOMAIN_KEY": "pa:metrics:domain",
    # Domains.
    "AI_RATE_LIMIT_PREFIX": "pa:ai:rate:",
    # Workflows.
    "WORKFLOW_KEY_PREFIX": "pa:wf:",
    "WORKFLOWS_OPEN_KEY": "pa:wf:open",
    "WORKFLOWS_INDEX_KEY": "pa:wf:index",
    "WORKFLOWS_EXPIRING_KEY": "pa:wf:expiring",
    # Dead letters.
    "DLQ_KEY": "pa:dlq",
    "DLQ_INDEX_KEY": "pa:dlq:index",
    # Alerting.
    "ALERT_STATE_KEY": "pa:alerts:state",
    "ALERT_LOCK_KEY": "pa:alerts:lock",
    "ALERT_TOKEN_PREFIX": "pa:alerts:sent:",
    "ALERT_HISTORY_KEY": "pa:alerts:history",
    # Message headers.
    "WORKFLOW_HEADER": "pa_workflow",
    "WORKFLOW_TASK_HEADER": "pa_workflow_task",
    "WORKFLOW_NEXT_HEADER": "pa_workflow_next",
    "WORKFLOW_ROW_HEADER": "pa_workflow_row",
    "PUBLISHED_AT_HEADER": "pa_published_at",
    "DLQ_REPLAY_OF_HEADER": "dlq_replay_of",
    "REDELIVERED_HEADER": "redelivered",
    "POISON_HEADER": "pa_poison",
    "POISON_SIZE_HEADER": "pa_poison_size",
    "POISON_DETAIL_HEADER": "pa_poison_detail",
    "POISON_TAIL_HEADER": "pa_poison_tail",
    # Other names inside messages.
    "POISON_CONTENT_TYPE": "application/x-pa-poison",
    "WORKFLOW_ADVANCE_SIGNATURE_TYPE": "pa_workflow_advance",
}

# Prefixes of keys with one member per hostname, queue or alert: a fixed key must never start
# with one, or some hostname, queue or fingerprint would land on it.
PER_ITEM_PREFIXES = (
    "BROKER_WAKE_PREFIX",
    "WORKER_INFO_PREFIX",
    "METRICS_SNAPSHOT_PREFIX",
    "ALERT_TOKEN_PREFIX",
    "AI_RATE_LIMIT_PREFIX",
    "BEAT_ENTRY_PREFIX",
)
FIXED_KEYS = (
    "BROKER_OWNER_KEY",
    "BROKER_CONSUMERS_KEY",
    "WORKERS_SEEN_KEY",
    "BEAT_TICK_KEY",
    "BEAT_LOCK_KEY",
    "BEAT_FENCE_KEY",
    "BEAT_DUE_KEY",
    "BEAT_PENDING_KEY",
    "BEAT_DEFS_KEY",
    "BEAT_DISABLED_KEY",
    "BEAT_VERSION_KEY",
    "METRICS_SNAPSHOTS_INDEX_KEY",
    "METRICS_SENT_KEY",
    "METRICS_DOMAIN_KEY",
    "WORKFLOWS_OPEN_KEY",
    "WORKFLOWS_INDEX_KEY",
    "WORKFLOWS_EXPIRING_KEY",
    "DLQ_KEY",
    "DLQ_INDEX_KEY",
    "ALERT_STATE_KEY",
    "ALERT_LOCK_KEY",
    "ALERT_HISTORY_KEY",
)


def constants() -> dict[str, str]:
    """Every public string constant keys.py defines."""
    return {
        name: value
        for name, value in vars(keys).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


def test_every_key_and_header_has_its_exact_value() -> None:
    assert constants() == EXPECTED


def test_no_two_names_share_a_value() -> None:
    values = list(constants().values())

    assert len(values) == len(set(values))


def test_the_package_keys_are_all_under_pa() -> None:
    own = [*FIXED_KEYS, *PER_ITEM_PREFIXES, "WORKFLOW_KEY_PREFIX"]

    assert all(getattr(keys, name).startswith("pa:") for name in own)


@pytest.mark.parametrize("prefix", PER_ITEM_PREFIXES)
def test_no_fixed_key_falls_under_a_per_item_prefix(prefix: str) -> None:
    start = getattr(keys, prefix)

    assert [name for name in FIXED_KEYS if getattr(keys, name).startswith(start)] == []


def test_no_fixed_key_has_the_shape_of_a_workflow_key() -> None:
    shape = re.compile(r"^pa:wf:.+(:def|:meta|:t:.*)$")

    assert [name for name in FIXED_KEYS if shape.match(getattr(keys, name))] == []


def test_the_first_priority_step_is_the_queue_itself() -> None:
    assert keys.priority_list_key("ai_tasks", 0) == "ai_tasks"


def test_later_priority_steps_add_kombus_separator_and_the_step() -> None:
    assert keys.priority_list_key("ai_tasks", 3) == "ai_tasks\x06\x163"
    assert keys.priority_list_key("q", 9, sep=":") == "q:9"


def test_a_wake_list_is_named_for_its_queue() -> None:
    assert keys.broker_wake_key("file_tasks") == "pa:broker:wake:file_tasks"


def test_a_worker_info_hash_is_named_for_its_hostname() -> None:
    assert keys.worker_info_key("celery@web-1") == "pa:workers:info:celery@web-1"


def test_a_workers_two_snapshots_are_named_for_its_hostname() -> None:
    assert keys.metrics_snapshot_key("w1@host") == "pa:metrics:snapshot:w1@host"
    assert keys.metrics_snapshot_prev_key("w1@host") == "pa:metrics:snapshot:w1@host:prev"


def test_a_workflows_keys_are_named_for_it_and_its_tasks() -> None:
    assert keys.workflow_definition_key("wf-1") == "pa:wf:wf-1:def"
    assert keys.workflow_meta_key("wf-1") == "pa:wf:wf-1:meta"
    assert keys.workflow_task_key("wf-1", "fetch") == "pa:wf:wf-1:t:fetch"


def test_every_workflow_key_is_under_the_workflow_prefix() -> None:
    built = [
        keys.workflow_definition_key("x"),
        keys.workflow_meta_key("x"),
        keys.workflow_task_key("x", "y"),
        keys.WORKFLOWS_OPEN_KEY,
        keys.WORKFLOWS_INDEX_KEY,
        keys.WORKFLOWS_EXPIRING_KEY,
    ]

    assert all(key.startswith(keys.WORKFLOW_KEY_PREFIX) for key in built)


def test_an_alert_token_names_the_alert_and_its_state() -> None:
    assert keys.alert_token_key("ab12", "firing") == "pa:alerts:sent:ab12:firing"
    assert keys.alert_token_key("ab12", "resolved") == "pa:alerts:sent:ab12:resolved"


def test_a_reminder_token_adds_its_cooldown_period() -> None:
    assert keys.alert_token_key("ab12", "firing", reminder=42) == "pa:alerts:sent:ab12:firing:r42"


def test_the_module_imports_nothing_but_typing() -> None:
    tree = ast.parse(inspect.getsource(keys))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }

    assert imported <= {"__future__", "typing"}
