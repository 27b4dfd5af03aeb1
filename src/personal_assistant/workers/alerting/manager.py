"""Task alerting: rules over sliding windows, pending/firing/resolved states, no alert storms.

:meth:`AlertManager.check_alerts` records a metrics snapshot (counts since the previous call,
see :func:`~.rules_file.observations`) or one hook event in per-rule windows on the
manager's clock, then evaluates every rule: a periodic ``check_alerts({})`` moves alerts from
pending to firing to resolved. A rule keeps one *group* per label set (its ``labels`` plus the
``group_by`` values), so five failures in the window make one alert with ``count`` 5 and the
task ids. A firing group is sent once, again as a reminder after ``cooldown``, and once resolved.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

from personal_assistant.workers.alerting.rules_file import (
    CONDITIONS,
    EVENT_ATTRS,
    KNOWN_CHANNELS,
    AlertRule,
    RuleError,
    count_value,
    format_duration,
    observations,
    validate_rule,
)
from personal_assistant.workers.alerting.templates import Alert, fingerprint, render

__all__ = ["CONDITIONS", "KNOWN_CHANNELS", "Alert", "AlertManager", "AlertRule", "RuleError"]

logger = logging.getLogger(__name__)

STATES: Final = ("inactive", "pending", "firing")
# Runs a failure rate needs in its window: one failure of one run is not a 100 % rate to page.
FAILURE_RATE_MIN_SAMPLES: Final = 5
# baseline_multiple compares the window's p95 with the median p95 of the last 24 closed windows
# (two hours for a 5-minute window): a slow spell does not become its own baseline at once.
BASELINE_WINDOWS: Final = 24
BASELINE_MIN_WINDOWS: Final = 3  # fewer closed windows than this: no baseline, no alert.
# Counts are kept in buckets of 1/100 of the window: bounded memory, events expire <= 1 % late.
BUCKETS_PER_WINDOW: Final = 100
MAX_RUN_SAMPLES: Final = 1000  # run times kept per group and window for the p95.
MAX_EXAMPLES: Final = 20  # latest failures (task, id, error) an alert lists.
# Groups per rule (task names from events are unbounded); the rest share the group "other".
MAX_GROUPS: Final = 200
STATE_VERSION: Final = 1  # of export_state(); import_state() refuses others.
_COUNTED: Final = {"task_failure": "failed", "task_timeout": "timeout"}


@dataclass
class _Group:
    """The windows and the state of one rule's label set; plain lists so it exports as JSON."""

    labels: dict[str, str]
    counts: dict[str, deque[list[float]]] = field(default_factory=dict)  # kind: [start, last, n]
    examples: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=MAX_EXAMPLES))
    runs: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=MAX_RUN_SAMPLES))
    slot: int = -1  # the window-aligned slot that slot_runs belong to
    slot_runs: list[float] = field(default_factory=list)
    baseline: deque[list[float]] = field(default_factory=lambda: deque(maxlen=BASELINE_WINDOWS))
    gauges: dict[str, float] = field(default_factory=dict)  # queue depth, or 1.0 = worker down
    status: str = "inactive"
    since: float | None = None  # entered the current status
    started: float | None = None  # the condition began to hold
    last_sent: float | None = None
    value: float | None = None
    fired: dict[str, Any] = field(default_factory=dict)  # the fields of the last firing alert
    # p95 of `runs`, kept until they change: performance rules measure every group on every
    # event, and sorting up to MAX_RUN_SAMPLES run times each time dominated that. Not exported.
    runs_p95: float | None = None

    def empty(self) -> bool:
        data = self.counts or self.runs or self.baseline or self.slot_runs
        return not (data or any(self.gauges.values()))

    def export(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runs_p95"}
        out["counts"] = {kind: list(buckets) for kind, buckets in self.counts.items()}
        return {k: list(v) if isinstance(v, deque) else v for k, v in out.items()}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> _Group:
        group = cls(**data)
        group.counts = {kind: deque(buckets) for kind, buckets in data["counts"].items()}
        for name, size in (("examples", MAX_EXAMPLES), ("runs", MAX_RUN_SAMPLES)):
            setattr(group, name, deque(data[name], maxlen=size))
        group.baseline = deque(data["baseline"], maxlen=BASELINE_WINDOWS)
        if group.status not in STATES:
            raise ValueError(f"unknown status {group.status!r}")
        return group


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _log_alert(alert: Alert) -> None:
    level = {"critical": logging.ERROR, "warning": logging.WARNING}.get(alert.severity)
    logger.log(level or logging.INFO, "alert %s [%s]: %s", alert.rule, alert.state, alert.message)


class AlertManager:
    """Evaluates rules over what :meth:`check_alerts` receives and sends grouped alerts."""

    def __init__(
        self,
        *,
        channels: Collection[str] = KNOWN_CHANNELS,
        clock: Callable[[], float] = time.time,
        history_size: int = 500,
    ) -> None:
        self.channels = tuple(channels)
        self.rules: list[AlertRule] = []
        self.alert_history: deque[dict[str, Any]] = deque(maxlen=max(1, history_size))
        #: Receives every alert sent (firing, reminder or resolved); routes it to its channels.
        self.notifier: Callable[[Alert], None] = _log_alert
        self.logger = logger
        self._clock = clock
        self._lock = threading.RLock()
        self._groups: dict[str, dict[str, _Group]] = {}
        self._keys: dict[tuple[str, ...], str] = {}
        self._local = threading.local()

    def add_rule(self, rule: AlertRule) -> None:
        """Add a rule after checking every field; a bad one raises :class:`RuleError`."""
        validate_rule(rule, self.channels)
        with self._lock:
            if rule.name in self._groups:
                raise RuleError(rule.name, "name", "a rule of that name exists already")
            self.rules.append(rule)
            self._groups[rule.name] = {}

    def check_alerts(self, metrics: Mapping[str, Any]) -> list[Alert]:
        """Record ``metrics``, evaluate every rule, send what changed; return the alerts sent."""
        batches: list[tuple[AlertRule, str, list[Alert]]] = []
        with self._lock:
            now = self._clock()
            self._ingest(metrics, now)
            for rule in self.rules:
                sent: dict[str, list[Alert]] = {"firing": [], "resolved": []}
                for key, group in list(self._groups[rule.name].items()):
                    group.value, extra = self._measure(rule, group, now)
                    holds = rule.holds(group.value, extra.get("baseline"))
                    state = self._step(rule, group, holds, now)
                    if state is not None:
                        sent[state].append(self._alert(rule, group, state, extra, now))
                    if group.status == "inactive" and group.empty():
                        del self._groups[rule.name][key]  # made again when data comes
                batches += [(rule, state, alerts) for state, alerts in sent.items() if alerts]
        for rule, state, alerts in batches:  # outside the lock: channels may be slow
            self._local.batch = alerts
            try:
                (self._send_alert if state == "firing" else self._send_resolved)(rule, metrics)
            finally:
                self._local.batch = []
        return [alert for _, _, alerts in batches for alert in alerts]

    def _evaluate_rule(self, rule: AlertRule, metrics: Mapping[str, Any]) -> bool:
        """Whether ``rule``'s condition holds for any group now (``metrics`` already recorded)."""
        with self._lock:
            groups, now = self._groups.get(rule.name, {}).values(), self._clock()
            measured = [self._measure(rule, group, now) for group in groups]
        return any(rule.holds(value, extra.get("baseline")) for value, extra in measured)

    def _send_alert(self, rule: AlertRule, metrics: Mapping[str, Any]) -> None:
        """Called once per check for a rule that fired (or reminds): sends its groups' alerts."""
        self._deliver()

    def _send_resolved(self, rule: AlertRule, metrics: Mapping[str, Any]) -> None:
        """Called once per check for a rule whose firing groups cleared: sends the resolves."""
        self._deliver()

    def _deliver(self) -> None:  # the alerts of the hook being run are kept per thread
        for alert in list(getattr(self._local, "batch", [])):
            try:
                self.notifier(alert)
            except Exception:  # a broken channel must not break the task that failed
                self.logger.exception("alert %s could not be delivered", alert.rule)

    def _group(self, rule: AlertRule, attrs: Mapping[str, Any]) -> _Group:
        groups = self._groups[rule.name]
        extra = {key: str(attrs.get(key) or "unknown") for key in rule.group_by}
        # The fingerprint (JSON + SHA-256) is the same for the same rule and values: hashed once.
        memo = (rule.name, *extra.values())
        key = self._keys.get(memo)
        if key is None:
            key = fingerprint(rule.name, {**rule.labels, **extra})
            if len(self._keys) < MAX_GROUPS * 8:  # bounded, whatever the labels seen
                self._keys[memo] = key
        if key not in groups and len(groups) >= MAX_GROUPS:
            extra = dict.fromkeys(rule.group_by, "other")
            key = fingerprint(rule.name, {**rule.labels, **extra})
        if key not in groups:
            groups[key] = _Group(labels={**rule.labels, **extra})
        return groups[key]

    def _ingest(self, metrics: Mapping[str, Any], now: float) -> None:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping, not {type(metrics).__name__}")
        observed = observations(metrics)
        for rule in self.rules:
            for kind, amount, attrs in observed:
                if rule.wants(kind, attrs):
                    self._record(rule, self._group(rule, attrs), (kind, amount, attrs), now)
            key = {"queue_backlog": "queues", "worker_offline": "workers"}.get(rule.condition)
            if key is None or key not in metrics:
                continue
            for group in self._groups[rule.name].values():
                group.gauges = {}  # a snapshot replaces the previous one whole
            attr = "queue" if key == "queues" else "hostname"
            for name, v in dict(metrics[key]).items():  # a depth, or 1.0 for a worker that is down
                if rule.wants(key, {attr: name}):
                    level = count_value(v, f"{key}[{name!r}]") if attr == "queue" else float(not v)
                    self._group(rule, {attr: name}).gauges[name] = level

    def _record(
        self, rule: AlertRule, group: _Group, seen: tuple[str, float, dict[str, Any]], now: float
    ) -> None:
        kind, amount, attrs = seen
        w = rule.window.total_seconds()
        if kind == "run":
            self._roll(group, now, w)
            group.runs.append([now, amount, attrs.get("task_name")])
            group.runs_p95 = None
            if len(group.slot_runs) < MAX_RUN_SAMPLES:
                group.slot_runs.append(amount)
            return
        buckets = group.counts.setdefault(kind, deque())
        if buckets and 0 <= now - buckets[-1][0] < w / BUCKETS_PER_WINDOW:
            buckets[-1][1:] = [now, buckets[-1][2] + amount]
        else:
            buckets.append([now, now, amount])
        if kind != "succeeded":
            group.examples.append([now, *(attrs.get(k) for k in EVENT_ATTRS[:3])])

    @staticmethod
    def _roll(group: _Group, now: float, window: float) -> None:
        """Close the window-aligned slot when a new one begins: its p95 joins the baseline."""
        slot = int(now // window)
        if slot != group.slot:
            if group.slot_runs:
                group.baseline.append([group.slot, _p95(group.slot_runs)])
            group.slot, group.slot_runs = slot, []

    @staticmethod
    def _trim(group: _Group, now: float, window: float) -> None:
        """Drop what has left the window (``window`` seconds up to ``now``)."""
        for kind, buckets in list(group.counts.items()):
            while buckets and now - buckets[0][1] >= window:
                buckets.popleft()
            if not buckets:
                del group.counts[kind]
        while group.examples and now - group.examples[0][0] >= window:
            group.examples.popleft()
        while group.runs and now - group.runs[0][0] >= window:
            group.runs.popleft()
            group.runs_p95 = None

    def _measure(
        self, rule: AlertRule, group: _Group, now: float
    ) -> tuple[float | None, dict[str, Any]]:
        """Trim ``group``'s windows to ``now``; return the rule's value and the alert's fields."""
        w = rule.window.total_seconds()
        self._trim(group, now, w)
        totals = {kind: sum(b[2] for b in buckets) for kind, buckets in group.counts.items()}
        failed, succeeded = totals.get("failed", 0.0), totals.get("succeeded", 0.0)
        extra: dict[str, Any] = {}
        if failed + succeeded:
            extra.update(failed=failed, succeeded=succeeded)
            extra["rate"] = round(100 * failed / (failed + succeeded), 1)  # a percentage
        value: float | None = None
        if rule.condition in _COUNTED:
            value = extra["count"] = totals.get(_COUNTED[rule.condition], 0.0)
        elif rule.condition == "failure_rate":
            enough = failed + succeeded >= FAILURE_RATE_MIN_SAMPLES
            value = failed / (failed + succeeded) if enough else None
            extra["count"] = failed
        elif rule.condition == "performance_degradation":
            self._roll(group, now, w)
            if group.runs and group.runs_p95 is None:
                group.runs_p95 = _p95([run[1] for run in group.runs])
            value = extra["p95"] = group.runs_p95 if group.runs else None
            recent = [p for slot, p in group.baseline if slot >= group.slot - BASELINE_WINDOWS]
            if len(recent) >= BASELINE_MIN_WINDOWS:
                extra["baseline"] = statistics.median(recent)
        elif rule.condition == "queue_backlog" and group.gauges:
            name = max(group.gauges, key=group.gauges.__getitem__)
            value = group.gauges[name]
            extra.update(queue=name, depth=value)
        elif rule.condition == "worker_offline" and group.gauges:
            extra["workers"] = sorted(k for k, down in group.gauges.items() if down)
            value = float(len(extra["workers"]))
        return value, extra

    @staticmethod
    def _step(rule: AlertRule, group: _Group, holds: bool, now: float) -> str | None:
        """Move ``group`` through inactive/pending/firing; return what to send, if anything."""
        if not holds:
            was, group.status = group.status, "inactive"
            group.since = group.since if was == "inactive" else now
            return "resolved" if was == "firing" else None
        if group.status == "inactive":
            group.status, group.since, group.started = "pending", now, now
        waited = now - (group.since or now)
        if group.status == "pending" and waited >= rule.for_duration.total_seconds():
            group.status, group.since, group.last_sent = "firing", now, now
            return "firing"
        quiet = now - (group.last_sent or now)
        if group.status == "firing" and quiet >= rule.cooldown.total_seconds():
            group.last_sent = now
            return "firing"
        return None

    def _alert(
        self, rule: AlertRule, group: _Group, state: str, extra: dict[str, Any], now: float
    ) -> Alert:
        if state == "resolved":  # what fired, and the value it has come down to
            values = {**group.fired, "state": state, "reminder": False, "value": group.value}
            values["resolved_at"] = datetime.fromtimestamp(now, UTC).isoformat()
        else:
            examples = list(group.examples)  # [ts, task_name, task_id, error], oldest first
            slow = [run[2] for run in group.runs if run[2] and run[1] >= (group.value or 0)]
            names = list(dict.fromkeys([e[1] for e in examples if e[1]] + slow))
            started = group.started and datetime.fromtimestamp(group.started, UTC).isoformat()
            task = names[-1] if names else rule.task_name or group.labels.get("task_name")
            core = {
                "rule": rule.name,
                **{key: getattr(rule, key) for key in ("condition", "severity", "threshold")},
                "state": state,
                "value": group.value,
                "window": format_duration(rule.window.total_seconds()),
                "started_at": started,
                "reminder": group.since != now,
                "task_name": task,
                "task_names": names or None,
                "task_ids": [e[2] for e in examples if e[2]] or None,
                "error": next((e[3] for e in reversed(examples) if e[3]), None),
            }
            values = group.fired = {**group.labels, **extra, **core}
        values = {key: value for key, value in values.items() if value is not None}
        message = render(rule.message_template, values)
        alert = Alert(
            rule=rule.name,
            state=state,
            severity=rule.severity,
            labels=dict(group.labels),
            fields=values,
            message=message if state == "firing" else f"RESOLVED: {message}",
            fingerprint=fingerprint(rule.name, group.labels),
            timestamp=now,
            channels=list(rule.channels),
        )
        self.alert_history.append(alert.to_dict())
        return alert

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The alerts sent (firing and resolved), newest first, as plain dicts."""
        with self._lock:
            return copy.deepcopy(list(reversed(self.alert_history))[:limit])

    def state(self) -> dict[str, dict[str, Any]]:
        """Each rule's state (that of its worst group) and its groups, for the CLI."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for rule in self.rules:
                groups: list[dict[str, Any]] = [
                    {"labels": dict(g.labels), "state": g.status, "since": g.since,
                     "last_sent": g.last_sent, "value": g.value}
                    for g in self._groups[rule.name].values()
                ]  # fmt: skip
                groups.sort(key=lambda g: -STATES.index(g["state"]))  # worst first
                top = groups[0] if groups else {"state": "inactive", "since": None}
                sent = [g["last_sent"] for g in groups if g["last_sent"] is not None]
                out[rule.name] = {"state": top["state"], "since": top["since"], "groups": groups}
                out[rule.name]["last_sent"] = max(sent, default=None)
            return out

    def export_state(self) -> dict[str, Any]:
        """Windows, group states and history as JSON-ready data (to keep in Redis, say)."""
        with self._lock:
            groups = {
                name: {key: group.export() for key, group in by_key.items()}
                for name, by_key in self._groups.items()
            }
            state = {"version": STATE_VERSION, "groups": groups, "history": self.history()}
            return dict(json.loads(json.dumps(state)))

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Replace the windows, states and history with exported ones; the rules stay.

        A firing group stays firing, so a restarted process neither sends it again nor forgets
        to resolve it. Groups of rules this manager does not have are dropped.
        """
        try:
            data = json.loads(json.dumps(state))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            groups = {
                rule.name: {k: _Group.load(g) for k, g in data["groups"].get(rule.name, {}).items()}
                for rule in self.rules
            }
            history = [dict(entry) for entry in reversed(data["history"])]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an exported alert state: {exc!r}") from exc
        with self._lock:
            self._groups = groups
            self.alert_history.clear()
            self.alert_history.extend(history)
