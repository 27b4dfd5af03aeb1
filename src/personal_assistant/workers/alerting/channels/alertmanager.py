"""Alerts pushed to Prometheus Alertmanager: :class:`AlertmanagerChannel`.

Each notification is POSTed to ``<ALERT_ALERTMANAGER_URL>/api/v2/alerts`` as a list of one
alert, labelled as the Prometheus rules in docker/monitoring/alert_rules.yml label theirs, so
operators route, group, inhibit and silence both kinds of alert in one place (a silence on
``alertname="CeleryWorkerDown"`` mutes the in-process alert and Prometheus's alike).

The ``alertname`` comes from the rule's condition (:data:`ALERTNAMES`):

=========================  ============================  =========================================
condition                  alertname                     Prometheus rule
=========================  ============================  =========================================
failure_rate               CeleryTaskFailureRateHigh     the same name
performance_degradation    CeleryTaskRuntimeP95High      the same name
queue_backlog              CeleryQueueBacklog            the same name
worker_offline             CeleryWorkerDown              the same name
task_failure               CeleryTaskFailures            none (a count, not a rate)
task_timeout               CeleryTaskTimeouts            none
=========================  ============================  =========================================

The other labels: ``severity`` (the rule's), ``source="personal_assistant"`` (Prometheus's own
alerts carry no such label, so the two never merge into one alert), ``rule`` (the in-process
rule's name: two rules of one condition stay two alerts), the rule's ``labels``, and the
group's keys under the names the metrics use: ``task_name`` -> ``name``, ``queue`` ->
``queue_name``, ``hostname`` -> ``hostname`` without a leading ``celery@`` (as the
celery-exporter, and so the ``celery_worker_up{hostname}`` series, show it). Only the labels a
group is keyed by are used, never the values of one check (the latest failing task, the deepest
queue): Alertmanager tells alerts apart by their labels, so the firing and its resolve must
carry the same ones. A rule grouped by ``hostname`` (``queue``, ``task_name``) gives one alert per
worker (queue, task), as the Prometheus rules do.

``annotations`` hold ``summary`` (the rendered message on one line) and ``description`` (the
message and the alert's details). A firing alert is pushed with ``startsAt`` (when its condition
began to hold) and ``endsAt`` = now + ``ALERT_ALERTMANAGER_RESOLVE_TIMEOUT`` (1 h): the rule's
reminders (every cooldown) push it again before then, and an alert whose process is gone clears
by itself. The resolve is the same labels with ``endsAt`` = the moment it resolved, which is
how Alertmanager resolves an alert a client pushed. A test notification (``alerts test RULE``)
carries ``test="true"`` and ends after :data:`TEST_ALERT_TTL_S`, so it never pages as the real
alert nor stays active.

Sending is the other HTTP channels' (``webhooks._post``): the channel timeout, no redirects
followed, 4xx other than 408/429 not retried; the dispatcher retries the rest. Credentials:
basic auth (``ALERT_ALERTMANAGER_USERNAME``/``_PASSWORD``) or a bearer token
(``ALERT_ALERTMANAGER_TOKEN``), never shown in ``repr``, logs or errors; with either, the URL
must be https unless it names a loopback host.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime
from typing import Any, Final

from personal_assistant.workers.alerting.channels.base import (
    DEFAULT_TIMEOUT_S,
    Notification,
    _jsonable,
    _one_line,
    _Scrubber,
)
from personal_assistant.workers.alerting.channels.webhooks import _post
from personal_assistant.workers.alerting.templates import clip_message
from personal_assistant.workers.config import MASK, check_http_url, mask_endpoint
from personal_assistant.workers.config.alert_channels import (
    ALERTMANAGER_ALERTS_PATH,
    ALERTMANAGER_RESOLVE_TIMEOUT_S,
    check_alertmanager_url,
)

__all__ = ["ALERTNAMES", "SOURCE", "AlertmanagerChannel", "alert_labels"]

#: The alertname of each rule condition: the Prometheus rule's name where one watches the same.
ALERTNAMES: Final = {
    "failure_rate": "CeleryTaskFailureRateHigh",
    "performance_degradation": "CeleryTaskRuntimeP95High",
    "queue_backlog": "CeleryQueueBacklog",
    "worker_offline": "CeleryWorkerDown",
    "task_failure": "CeleryTaskFailures",
    "task_timeout": "CeleryTaskTimeouts",
}
#: The ``source`` label of every alert this channel pushes.
SOURCE: Final = "personal_assistant"
#: A group's keys (rule.GROUP_BY_KEYS) under the label names of the metrics and Prometheus rules.
LABEL_NAMES: Final = {"task_name": "name", "queue": "queue_name", "hostname": "hostname"}
#: What a Celery node name starts with and the ``hostname`` label leaves out, as the metrics do.
CELERY_NODE_PREFIX: Final = "celery@"
#: Seconds a test notification stays active: long enough to reach the receivers.
TEST_ALERT_TTL_S: Final = 300.0
# Alertmanager shows the summary as a title: one line, a few hundred characters at most.
_SUMMARY_CHARS: Final = 300
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")


def _label_name(key: str) -> str:
    """``key`` as a Prometheus label name: other characters become ``_`` (as Prometheus's
    relabelling does), and a leading digit gets a ``_`` before it."""
    if _LABEL_NAME.fullmatch(key):
        return key
    name = _NOT_LABEL_CHARS.sub("_", key)
    return name if _LABEL_NAME.fullmatch(name) else f"_{name}"


def _hostname(value: str) -> str:
    """``celery@web-1`` -> ``web-1``: a worker's node name as ``celery_worker_up{hostname}``
    labels it (the same rule as ``metrics.cluster_series.exporter_hostname``)."""
    return value.removeprefix(CELERY_NODE_PREFIX)


def alert_labels(n: Notification) -> dict[str, str]:
    """The labels of ``n``'s alert: the same for its firing, its reminders and its resolve."""
    labels: dict[str, str] = {}
    for key, value in n.labels.items():
        name = LABEL_NAMES.get(key, key)
        text = str(value)
        labels[_label_name(name)] = _hostname(text) if name == "hostname" else text
    condition = n.fields.get("condition")
    labels.update(
        alertname=ALERTNAMES.get(condition, n.rule) if isinstance(condition, str) else n.rule,
        rule=n.rule,
        severity=n.severity,
        source=SOURCE,
    )
    if n.fields.get("test") is True:
        labels["test"] = "true"
    # Alertmanager reads an empty value as no label: leave those out, as it would.
    return {name: value for name, value in labels.items() if value}


def _rfc3339(timestamp: float) -> str:
    """A Unix time as Alertmanager's API reads it: RFC 3339 in UTC, milliseconds."""
    moment = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _started(n: Notification) -> float:
    """When the alert's condition began to hold (the manager's ``started_at``), else its time."""
    started = n.fields.get("started_at")
    if isinstance(started, str):
        try:
            return datetime.fromisoformat(started).timestamp()
        except ValueError:
            return n.timestamp  # an unreadable start: the notification's own time will do
    return n.timestamp


class AlertmanagerChannel:
    """Pushes each notification to Alertmanager's ``/api/v2/alerts`` (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        resolve_timeout: float = ALERTMANAGER_RESOLVE_TIMEOUT_S,
        name: str = "alertmanager",
    ) -> None:
        base = check_alertmanager_url(url)
        if bool(username) != bool(password):
            raise ValueError("Alertmanager username and password go together: give both or none")
        if token and username:
            raise ValueError("Alertmanager: basic auth or a bearer token, not both")
        if username or token:
            # Credentials in clear text are as good as published: https unless on loopback.
            check_http_url(base, "Alertmanager")
        if timeout <= 0 or resolve_timeout <= 0:
            raise ValueError(
                f"timeouts must be positive (got {timeout}, resolve_timeout {resolve_timeout})"
            )
        self.name = name
        self.timeout = float(timeout)
        self.resolve_timeout = float(resolve_timeout)
        self.username = username or None
        self._base = base
        self._url = base + ALERTMANAGER_ALERTS_PATH
        self._authorization: str | None = None
        if username and password:
            pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._authorization = f"Basic {pair}"
        elif token:
            self._authorization = f"Bearer {token}"
        self._scrub = _Scrubber(password, token, self._authorization)

    @property
    def endpoint(self) -> str:
        """The base URL as it may be shown (scheme and host)."""
        return mask_endpoint(self._base)

    def __repr__(self) -> str:
        auth = ""
        if self.username:
            auth = f", user={self.username!r}, password={MASK}"
        elif self._authorization:
            auth = f", token={MASK}"
        return f"AlertmanagerChannel({self.endpoint}{auth})"

    def alert(self, n: Notification, *, now: float | None = None) -> dict[str, Any]:
        """The alert pushed for ``n`` (one element of the POSTed list); ``now`` is the
        sending time (the clock by default)."""
        clock = time.time() if now is None else now
        if n.state == "resolved":
            # When it resolved, never later than now: an endsAt to come would keep it active.
            ends = min(n.timestamp, clock)
        elif n.fields.get("test") is True:
            ends = max(n.timestamp, clock) + TEST_ALERT_TTL_S
        else:
            ends = max(n.timestamp, clock) + self.resolve_timeout
        starts = min(_started(n), ends)  # Alertmanager refuses an end before the start
        return {
            "labels": alert_labels(n),
            "annotations": {
                "summary": clip_message(_one_line(n.message), _SUMMARY_CHARS),
                "description": self.description(n),
            },
            "startsAt": _rfc3339(starts),
            "endsAt": _rfc3339(ends),
        }

    @staticmethod
    def description(n: Notification) -> str:
        """The message, then the alert's details one per line (as the e-mail body has them)."""
        lines = [n.message]
        details = _jsonable(n.fields)
        if details:
            lines.append("")
            for key in sorted(details):
                value = details[key]
                shown = ", ".join(map(str, value)) if isinstance(value, list) else value
                lines.append(f"{key}: {shown}")
        if n.fingerprint:
            lines.append(f"fingerprint: {n.fingerprint}")
        return clip_message("\n".join(lines))

    def body(self, n: Notification, *, now: float | None = None) -> bytes:
        """The exact bytes POSTed: a JSON list holding :meth:`alert`."""
        return json.dumps([self.alert(n, now=now)], allow_nan=False).encode()

    def send(self, n: Notification) -> None:
        """POST the alert; non-2xx or a transport error raises (credentials never shown)."""
        headers = {"Content-Type": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        _post(
            self._url,
            self.body(n),
            headers,
            timeout=self.timeout,
            what="Alertmanager",
            scrub=self._scrub,
        )
