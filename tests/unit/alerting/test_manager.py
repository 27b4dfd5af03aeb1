"""Alert rules over sliding windows: the seed's tests, each condition, fatigue control, groups."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any
from unittest.mock import patch

import pytest

from personal_assistant.workers.alerting import manager as alerting
from personal_assistant.workers.alerting.manager import (
    Alert,
    AlertManager,
    AlertRule,
    RuleError,
)
from tests.support.alert_rules import WINDOW, make_rule

T0 = 60.0 * 28_333_333  # a round minute near 2023-11-14, so window-aligned slots start at T0


class FakeClock:
    """Wall-clock time the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def failed(
    task_name: str = "send_email", task_id: str = "id-1", error: str = "boom"
) -> dict[str, Any]:
    return {"event": "task_failed", "task_name": task_name, "task_id": task_id, "error": error,
            "timestamp": T0}  # fmt: skip


class Recorder:
    """A manager on a fake clock whose notifier keeps what it is handed."""

    def __init__(self, *rules: AlertRule, history_size: int = 500) -> None:
        self.clock = FakeClock()
        self.manager = AlertManager(clock=self.clock, history_size=history_size)
        self.sent: list[Alert] = []
        self.manager.notifier = self.sent.append
        for rule in rules:
            self.manager.add_rule(rule)

    def check(self, metrics: dict[str, Any], after: float = 0.0) -> list[Alert]:
        self.clock.advance(after)
        return self.manager.check_alerts(metrics)


# --- The seed's tests -------------------------------------------------------------------------


class TestAlertManager:
    """Test task alerting functionality."""

    def test_add_alert_rule(self) -> None:
        """Test adding alert rules."""
        alert_manager = AlertManager()
        rule = AlertRule(
            name="high_failure_rate",
            condition="task_failure",
            threshold=0.1,
            window=timedelta(minutes=5),
            channels=["email"],
            message_template="Task failure rate is {rate}%",
        )

        alert_manager.add_rule(rule)
        assert len(alert_manager.rules) == 1
        assert alert_manager.rules[0].name == "high_failure_rate"

    def test_alert_evaluation(self) -> None:
        """Test alert rule evaluation."""
        alert_manager = AlertManager()
        rule = AlertRule(
            name="task_failure",
            condition="task_failure",
            threshold=1,
            window=timedelta(minutes=5),
            channels=["email"],
            message_template="Task failed: {task_name}",
        )
        alert_manager.add_rule(rule)

        # Mock metrics that should trigger alert
        metrics = {"failed_tasks": 2}

        with patch.object(alert_manager, "_send_alert") as mock_send:
            alert_manager.check_alerts(metrics)
            mock_send.assert_called_once_with(rule, metrics)
        assert alert_manager._evaluate_rule(rule, metrics)


def test_a_rule_below_its_threshold_sends_nothing() -> None:
    manager = AlertManager()
    manager.add_rule(make_rule(threshold=3))
    with patch.object(manager, "_send_alert") as mock_send:
        assert manager.check_alerts({"failed_tasks": 2}) == []
    mock_send.assert_not_called()


# --- Fatigue control ---------------------------------------------------------------------------


def test_a_second_identical_check_inside_the_cooldown_sends_nothing() -> None:
    r = Recorder(make_rule(cooldown=timedelta(minutes=10)))
    assert len(r.check({"failed_tasks": 2})) == 1
    assert r.check({"failed_tasks": 2}, after=60) == []
    assert len(r.sent) == 1
    assert r.manager.state()["failures"]["state"] == "firing"


def test_after_the_cooldown_a_reminder_is_sent_while_still_firing() -> None:
    r = Recorder(make_rule(cooldown=timedelta(minutes=10)))
    r.check(failed())
    assert r.check(failed(), after=9 * 60) == []  # still firing, cooldown not over
    [reminder] = r.check(failed(), after=61)
    assert reminder.state == "firing"
    assert reminder.fields["reminder"] is True
    assert r.sent[0].fields["reminder"] is False


def test_a_resolve_is_sent_once_when_the_condition_clears() -> None:
    r = Recorder(make_rule())
    r.check(failed())
    with patch.object(r.manager, "_send_resolved", wraps=r.manager._send_resolved) as resolved:
        [alert] = r.check({}, after=WINDOW.total_seconds())
        assert r.check({}, after=60) == []
        assert r.check({}, after=3600) == []
    resolved.assert_called_once_with(r.manager.rules[0], {})
    assert (alert.state, alert.message) == ("resolved", "RESOLVED: 1 failures of send_email")
    assert [a.state for a in r.sent] == ["firing", "resolved"]
    assert r.manager.state()["failures"]["state"] == "inactive"


def test_a_rule_that_fires_again_after_resolving_is_sent_again() -> None:
    r = Recorder(make_rule())
    r.check(failed())
    r.check({}, after=WINDOW.total_seconds())
    [again] = r.check(failed(), after=1)
    assert again.state == "firing"
    assert [a.state for a in r.sent] == ["firing", "resolved", "firing"]


# --- Validation --------------------------------------------------------------------------------


def test_a_manager_accepts_the_channels_it_is_given() -> None:
    manager = AlertManager(channels=("log", "pager"))
    manager.add_rule(make_rule(channels=["pager"]))
    with pytest.raises(ValueError, match="unknown channel 'email'; known: log, pager"):
        manager.add_rule(make_rule(name="other", channels=["email"]))


def test_a_second_rule_of_the_same_name_is_refused() -> None:
    manager = AlertManager()
    manager.add_rule(make_rule())
    with pytest.raises(RuleError, match="exists already"):
        manager.add_rule(make_rule(threshold=9))
    assert [rule.threshold for rule in manager.rules] == [1]


# --- Each condition at its threshold -----------------------------------------------------------


@pytest.mark.parametrize(("failures", "fires"), [(2, False), (3, True), (4, True)])
def test_task_failure_fires_at_its_threshold(failures: int, fires: bool) -> None:
    r = Recorder(make_rule(threshold=3))
    for n in range(failures):
        r.check(failed(task_id=f"id-{n}"), after=1)
    assert [a.fields["count"] for a in r.sent] == ([3] if fires else [])


def test_failures_leave_the_window_once_it_has_passed() -> None:
    r = Recorder(make_rule(threshold=2))
    r.check(failed())
    r.check(failed(), after=WINDOW.total_seconds())  # the first is out of the window now
    assert r.sent == []
    r.check(failed(), after=WINDOW.total_seconds() - 10)
    assert len(r.sent) == 1


def test_the_task_name_filter_ignores_other_tasks() -> None:
    r = Recorder(make_rule(task_name="send_email"))
    r.check(failed(task_name="sync_calendar"))
    r.check({"tasks": {"sync_calendar": {"failed": 5}}, "failed_tasks": 3})
    assert r.sent == []
    r.check({"tasks": {"send_email": {"failed": 1}}})
    assert r.sent[0].fields["task_name"] == "send_email"


@pytest.mark.parametrize(("failed_n", "succeeded_n", "fires"), [(2, 4, False), (3, 3, True)])
def test_failure_rate_fires_at_its_threshold(failed_n: int, succeeded_n: int, fires: bool) -> None:
    r = Recorder(make_rule(condition="failure_rate", threshold=0.5,
                           message_template="Task failure rate is {rate}%"))  # fmt: skip
    r.check({"tasks": {"t": {"failed": failed_n, "succeeded": succeeded_n}}})
    assert [a.message for a in r.sent] == (["Task failure rate is 50%"] if fires else [])


def test_failure_rate_waits_for_the_minimum_number_of_runs() -> None:
    r = Recorder(make_rule(condition="failure_rate", threshold=0.5))
    for _ in range(4):  # 4 of 4 failed is not yet a rate
        r.check(failed(), after=1)
    assert r.sent == []
    r.check({"event": "task_succeeded", "task_name": "send_email", "runtime": 0.1})
    assert r.sent[0].fields["value"] == 0.8
    assert r.sent[0].fields["rate"] == 80.0


@pytest.mark.parametrize(("seconds", "fires"), [(2.0, False), (2.5, True)])
def test_performance_degradation_fires_above_its_threshold_in_seconds(
    seconds: float, fires: bool
) -> None:
    r = Recorder(make_rule(condition="performance_degradation", threshold=2.0))
    for _ in range(20):
        r.check({"event": "task_succeeded", "task_name": "t", "runtime": 0.5}, after=1)
    r.check({"tasks": {"t": {"p95": seconds}}})  # a snapshot's p95 counts as one run
    assert r.sent == []  # one slow run in 21 is above the p95
    r.check({"event": "task_succeeded", "task_name": "t", "runtime": seconds})
    assert [(a.fields["p95"], a.fields["task_name"]) for a in r.sent] == (
        [(seconds, "t")] if fires else []
    )


def _runs_per_minute(r: Recorder, runtimes: list[float]) -> None:
    """One run per minute (the window), ten seconds into each."""
    for runtime in runtimes:
        r.clock.now = T0 + 60 * round((r.clock.now - T0) / 60 + 1) + 10
        r.check({"event": "task_succeeded", "task_name": "t", "runtime": runtime})


@pytest.mark.parametrize(("runtime", "fires"), [(2.9, False), (3.1, True)])
def test_performance_degradation_with_a_baseline_fires_above_the_multiple(
    runtime: float, fires: bool
) -> None:
    rule = make_rule(condition="performance_degradation", threshold=0.0,
                     window=timedelta(minutes=1), baseline_multiple=3.0)  # fmt: skip
    r = Recorder(rule)
    _runs_per_minute(r, [1.0] * 5 + [runtime])
    assert [(a.fields["p95"], a.fields["baseline"]) for a in r.sent] == (
        [(runtime, 1.0)] if fires else []
    )


def test_performance_degradation_without_enough_baseline_does_not_fire() -> None:
    rule = make_rule(condition="performance_degradation", threshold=0.0,
                     window=timedelta(minutes=1), baseline_multiple=3.0)  # fmt: skip
    r = Recorder(rule)
    _runs_per_minute(r, [1.0, 1.0, 100.0])  # two closed windows: no baseline yet
    assert r.sent == []


@pytest.mark.parametrize(("depth", "fires"), [(99, False), (100, True)])
def test_queue_backlog_fires_on_the_deepest_queue_at_its_threshold(depth: int, fires: bool) -> None:
    r = Recorder(make_rule(condition="queue_backlog", threshold=100,
                           message_template="{queue} holds {depth}"))  # fmt: skip
    r.check({"queues": {"ai_tasks": depth, "email_tasks": 5}})
    assert [a.message for a in r.sent] == ([f"ai_tasks holds {depth}"] if fires else [])


def test_queue_backlog_only_watches_the_queue_its_label_names() -> None:
    r = Recorder(
        make_rule(condition="queue_backlog", threshold=10, labels={"queue": "email_tasks"})
    )
    r.check({"queues": {"ai_tasks": 1000, "email_tasks": 9}})
    assert r.sent == []
    r.check({"queues": {"ai_tasks": 0, "email_tasks": 10}})
    assert r.sent[0].labels == {"queue": "email_tasks"}


def test_queue_backlog_resolves_when_the_snapshot_shows_the_queue_drained() -> None:
    r = Recorder(make_rule(condition="queue_backlog", threshold=10))
    r.check({"queues": {"ai_tasks": 50}})
    assert r.check(failed()) == []  # an event says nothing about queues: still firing
    [resolved] = r.check({"queues": {"ai_tasks": 0}})
    assert resolved.state == "resolved"


@pytest.mark.parametrize(("workers", "fires"), [({"a": True, "b": False}, False),
                                                ({"a": False, "b": False}, True)])  # fmt: skip
def test_worker_offline_fires_when_enough_workers_are_down(
    workers: dict[str, bool], fires: bool
) -> None:
    r = Recorder(make_rule(condition="worker_offline", threshold=2))
    r.check({"workers": workers})
    assert [a.fields["workers"] for a in r.sent] == ([["a", "b"]] if fires else [])


@pytest.mark.parametrize(("timeouts", "fires"), [(1, False), (2, True)])
def test_task_timeout_fires_at_its_threshold(timeouts: int, fires: bool) -> None:
    r = Recorder(make_rule(condition="task_timeout", threshold=2))
    r.check({"timeouts": timeouts - 1})
    r.check({"event": "task_timeout", "task_name": "t", "task_id": "x"})
    assert [a.fields["count"] for a in r.sent] == ([2] if fires else [])


# --- for_duration ------------------------------------------------------------------------------


def test_for_duration_keeps_the_rule_pending_then_fires() -> None:
    r = Recorder(
        make_rule(condition="queue_backlog", threshold=10, for_duration=timedelta(minutes=2))
    )
    r.check({"queues": {"q": 20}})
    assert r.manager.state()["failures"]["state"] == "pending"
    r.check({"queues": {"q": 20}}, after=119)
    assert r.sent == []
    [alert] = r.check({"queues": {"q": 20}}, after=1)
    assert r.manager.state()["failures"]["state"] == "firing"
    assert alert.fields["started_at"] == "2023-11-14T22:13:00+00:00"


def test_for_duration_starts_again_when_the_condition_breaks() -> None:
    r = Recorder(
        make_rule(condition="queue_backlog", threshold=10, for_duration=timedelta(minutes=2))
    )
    r.check({"queues": {"q": 20}})
    r.check({"queues": {"q": 5}}, after=60)  # back under: a pending rule sends no resolve
    r.check({"queues": {"q": 20}}, after=60)
    r.check({"queues": {"q": 20}}, after=60)
    assert r.sent == []
    r.check({"queues": {"q": 20}}, after=60)
    assert [a.state for a in r.sent] == ["firing"]


# --- Grouping ----------------------------------------------------------------------------------


def test_five_failures_of_one_task_in_a_window_make_one_alert_with_count_five() -> None:
    r = Recorder(make_rule(threshold=5))
    results = [r.check(failed(task_id=f"id-{n}", error=f"err {n}"), after=10) for n in range(6)]
    assert [len(result) for result in results] == [0, 0, 0, 0, 1, 0]
    [alert] = r.sent
    assert alert.fields["count"] == 5
    assert alert.fields["task_ids"] == ["id-0", "id-1", "id-2", "id-3", "id-4"]
    assert alert.fields["task_names"] == ["send_email"]
    assert alert.fields["error"] == "err 4"
    assert alert.message == "5 failures of send_email"


def test_without_group_by_failures_of_several_tasks_are_one_alert() -> None:
    r = Recorder(make_rule(threshold=3))
    r.check({"tasks": {"a": {"failed": 1}, "b": {"failed": 1}}})
    r.check(failed(task_name="c"))
    assert len(r.sent) == 1
    assert r.sent[0].fields["count"] == 3
    assert r.sent[0].fields["task_names"] == ["a", "b", "c"]
    assert r.sent[0].fields["task_ids"] == ["id-1"]  # a snapshot's failures come without ids


def test_different_labels_make_different_groups() -> None:
    r = Recorder(make_rule(group_by=["task_name"], labels={"team": "mail"}))
    with patch.object(r.manager, "_send_alert", wraps=r.manager._send_alert) as hook:
        alerts = r.check({"tasks": {"a": {"failed": 1}, "b": {"failed": 2}}})
    hook.assert_called_once()  # once per rule and check, with both groups' alerts
    assert sorted((a.labels["task_name"], a.fields["count"]) for a in alerts) == [
        ("a", 1),
        ("b", 2),
    ]
    assert all(a.labels["team"] == "mail" for a in alerts)
    assert len({a.fingerprint for a in alerts}) == 2
    assert r.check(failed(task_name="a"), after=1) == []  # a's group is in its cooldown
    assert [a.labels["task_name"] for a in r.check(failed(task_name="c"))] == ["c"]


def test_a_group_resolves_on_its_own() -> None:
    r = Recorder(make_rule(condition="worker_offline", group_by=["hostname"]))
    r.check({"workers": {"w1": False, "w2": False}})
    [resolved] = r.check({"workers": {"w1": True, "w2": False}}, after=30)
    assert (resolved.state, resolved.labels) == ("resolved", {"hostname": "w1"})


def test_a_failure_storm_keeps_exact_counts_in_bounded_memory() -> None:
    r = Recorder(make_rule(threshold=1_000_000))
    for _ in range(3000):
        r.check({"failed_tasks": 10}, after=0.5)
    state = r.manager.export_state()
    [group] = state["groups"]["failures"].values()
    buckets = group["counts"]["failed"]
    assert len(buckets) <= 101
    assert sum(b[2] for b in buckets) == 10 * 600  # the last 300 s at two checks a second


# --- History, state, persistence ---------------------------------------------------------------


def test_history_is_bounded_and_newest_first() -> None:
    r = Recorder(make_rule(), history_size=3)
    for n in range(3):
        r.check(failed(task_id=f"id-{n}"), after=1)
        r.check({}, after=WINDOW.total_seconds())
    history = r.manager.history()
    assert len(r.manager.alert_history) == 3
    assert [(h["state"], h["fields"]["task_ids"]) for h in history] == [
        ("resolved", ["id-2"]), ("firing", ["id-2"]), ("resolved", ["id-1"])
    ]  # fmt: skip


def test_export_and_import_keep_the_firing_state_so_a_restart_does_not_send_again() -> None:
    first = Recorder(make_rule())
    first.check(failed())
    saved = json.loads(json.dumps(first.manager.export_state()))

    restarted = Recorder(make_rule())
    restarted.clock.now = first.clock.now
    restarted.manager.import_state(saved)

    assert restarted.check(failed(), after=60) == []
    assert restarted.manager.state()["failures"]["state"] == "firing"
    assert restarted.manager.history()[0]["state"] == "firing"
    [resolved] = restarted.check({}, after=WINDOW.total_seconds())
    assert resolved.state == "resolved"


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 99},
        {"version": 1, "groups": [], "history": []},
        {"version": 1, "groups": {"failures": {"x": {"status": 1}}}, "history": []},
    ],
)
def test_import_refuses_what_is_not_an_exported_state(state: dict[str, Any]) -> None:
    manager = AlertManager()
    manager.add_rule(make_rule())
    with pytest.raises(ValueError, match="not an exported alert state"):
        manager.import_state(state)


def test_a_state_that_fails_to_import_changes_nothing() -> None:
    r = Recorder(make_rule())
    r.check(failed())
    exported = r.manager.export_state()
    [group] = exported["groups"]["failures"].values()
    group["status"] = "on"
    with pytest.raises(ValueError, match="unknown status 'on'"):
        r.manager.import_state(exported)
    assert r.manager.state()["failures"]["state"] == "firing"
    assert len(r.manager.history()) == 1


def test_the_number_of_groups_of_a_rule_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerting, "MAX_GROUPS", 2)
    r = Recorder(make_rule(group_by=["task_name"]))
    r.check({"tasks": {name: {"failed": 1} for name in ("a", "b", "c", "d")}})
    assert sorted(a.labels["task_name"] for a in r.sent) == ["a", "b", "other"]
    assert [a.fields["count"] for a in r.sent if a.labels["task_name"] == "other"] == [2]


def test_state_lists_each_rule_with_its_groups() -> None:
    r = Recorder(
        make_rule(),
        make_rule(name="waiting", for_duration=timedelta(minutes=1)),
        make_rule(name="quiet", threshold=99),
        make_rule(name="idle", condition="queue_backlog"),
    )
    r.check(failed())
    state = r.manager.state()
    assert state["failures"]["state"] == "firing"
    assert state["failures"]["last_sent"] == T0
    assert state["waiting"] == {
        "state": "pending", "since": T0, "last_sent": None,
        "groups": [{"labels": {}, "state": "pending", "since": T0, "last_sent": None,
                    "value": 1.0}],
    }  # fmt: skip
    assert state["quiet"]["state"] == "inactive"
    assert state["quiet"]["groups"][0]["value"] == 1.0  # the failure is in its window
    assert state["idle"] == {"state": "inactive", "since": None, "last_sent": None, "groups": []}


# --- Delivery and threads ----------------------------------------------------------------------


def test_a_failing_notifier_is_logged_and_the_check_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Recorder(make_rule(), make_rule(name="second"))
    delivered: list[str] = []

    def notifier(alert: Alert) -> None:
        delivered.append(alert.rule)
        raise ConnectionError("smtp down")

    r.manager.notifier = notifier
    with caplog.at_level(logging.ERROR):
        alerts = r.check(failed())
    assert [a.rule for a in alerts] == delivered == ["failures", "second"]
    assert "alert failures could not be delivered" in caplog.text


def test_the_default_notifier_logs_by_severity(caplog: pytest.LogCaptureFixture) -> None:
    manager = AlertManager()
    manager.add_rule(make_rule(severity="critical"))
    with caplog.at_level(logging.INFO):
        manager.check_alerts({"failed_tasks": 1})
    [record] = [r for r in caplog.records if r.name.endswith("alerting.manager")]
    assert record.levelno == logging.ERROR
    assert "alert failures [firing]: 1 failures of {task_name?}" in record.getMessage()


def test_concurrent_checks_count_every_failure_and_fire_once() -> None:
    r = Recorder(make_rule(threshold=2000))
    threads = [
        threading.Thread(target=lambda: [r.check(failed()) for _ in range(250)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(r.sent) == 1
    assert r.sent[0].fields["count"] == 2000
