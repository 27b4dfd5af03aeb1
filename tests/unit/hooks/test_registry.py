"""Hooks: one Celery signal per overridden method, failures logged and isolated."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery import signals

from personal_assistant.workers.hooks.registry import (
    HookOrderError,
    HookRegistry,
    WorkerHook,
    publishing,
)


class SuccessRecorder(WorkerHook):
    """Overrides one method only: records the results of successful tasks."""

    name = "success-recorder"

    def __init__(self) -> None:
        self.results: list[Any] = []

    def on_task_success(self, *, task: Any, result: Any) -> None:
        self.results.append(result)


class BrokenHook(WorkerHook):
    """A component with a bug: its success hook always raises."""

    name = "broken"

    def on_task_success(self, *, task: Any, result: Any) -> None:
        raise RuntimeError("component bug")


class PublishRecorder(WorkerHook):
    """Overrides two methods: before and after publishing."""

    name = "publish-recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def before_task_publish(
        self,
        *,
        task_name: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
    ) -> None:
        self.events.append(("before", task_name, routing_key))

    def after_task_publish(
        self, *, task_name: str, headers: dict[str, Any], routing_key: str
    ) -> None:
        self.events.append(("after", task_name, routing_key))


@pytest.fixture
def registry() -> Iterator[HookRegistry]:
    """A registry whose hooks are all removed afterwards, so no receiver leaks to other tests."""
    hooks = HookRegistry()
    yield hooks
    for hook in hooks.hooks:
        hooks.remove(hook)
    assert hooks.connected_signals() == []


def fire_success(result: Any) -> None:
    signals.task_success.send(sender="tests.some_task", result=result)


def test_a_hook_overriding_one_method_connects_only_that_signal(registry: HookRegistry) -> None:
    registry.add(SuccessRecorder())

    assert registry.connected_signals() == ["on_task_success"]


def test_a_hook_overriding_nothing_connects_no_signal(registry: HookRegistry) -> None:
    registry.add(WorkerHook())

    assert registry.connected_signals() == []
    assert len(registry.hooks) == 1


def test_a_hook_receives_the_signal_it_overrides_with_translated_arguments(
    registry: HookRegistry,
) -> None:
    recorder = registry.add(PublishRecorder())
    assert isinstance(recorder, PublishRecorder)

    signals.before_task_publish.send(
        sender="tests.some_task", headers={}, properties={}, routing_key="ai_tasks"
    )
    signals.after_task_publish.send(sender="tests.some_task", headers={}, routing_key="ai_tasks")

    assert registry.connected_signals() == ["after_task_publish", "before_task_publish"]
    assert recorder.events == [
        ("before", "tests.some_task", "ai_tasks"),
        ("after", "tests.some_task", "ai_tasks"),
    ]


def test_a_hook_that_raises_is_logged_and_the_next_hook_still_runs(
    registry: HookRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.add(BrokenHook())
    recorder = SuccessRecorder()
    registry.add(recorder)

    with caplog.at_level(logging.ERROR, logger="personal_assistant.workers.hooks.registry"):
        fire_success(42)  # must not raise

    assert recorder.results == [42]
    failures = [r for r in caplog.records if r.name == "personal_assistant.workers.hooks.registry"]
    assert len(failures) == 1
    assert "broken.on_task_success failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


def test_removing_a_hook_disconnects_its_signal(registry: HookRegistry) -> None:
    recorder = SuccessRecorder()
    registry.add(recorder)

    registry.remove(recorder)
    fire_success("after removal")

    assert registry.connected_signals() == []
    assert registry.hooks == ()
    assert recorder.results == []


def test_closing_a_registry_disconnects_every_hook_it_held(registry: HookRegistry) -> None:
    first, second = SuccessRecorder(), PublishRecorder()
    registry.add(first)
    registry.add(second)

    registry.close()
    fire_success("after close")

    assert registry.connected_signals() == []
    assert registry.hooks == ()
    assert first.results == []


def test_removing_one_of_two_hooks_keeps_the_signal_for_the_other(
    registry: HookRegistry,
) -> None:
    first, second = SuccessRecorder(), SuccessRecorder()
    registry.add(first)
    registry.add(second)

    registry.remove(first)
    fire_success("still heard")

    assert registry.connected_signals() == ["on_task_success"]
    assert first.results == []
    assert second.results == ["still heard"]


def test_removing_a_hook_that_was_never_added_is_a_no_op(registry: HookRegistry) -> None:
    recorder = SuccessRecorder()
    registry.add(recorder)

    registry.remove(SuccessRecorder())
    fire_success(1)

    assert recorder.results == [1]


def test_adding_the_same_hook_twice_is_a_no_op(registry: HookRegistry) -> None:
    recorder = SuccessRecorder()
    registry.add(recorder)
    registry.add(recorder)

    fire_success("once")

    assert registry.hooks == (recorder,)
    assert recorder.results == ["once"]


def test_removing_a_hook_from_another_registry_leaves_this_one_connected(
    registry: HookRegistry,
) -> None:
    other = HookRegistry()
    mine, theirs = SuccessRecorder(), SuccessRecorder()
    registry.add(mine)
    other.add(theirs)
    fire_success("both")

    other.remove(theirs)
    fire_success("mine only")

    assert mine.results == ["both", "mine only"]
    assert theirs.results == ["both"]
    assert other.connected_signals() == []


def test_a_registry_made_for_an_app_sees_the_publishes_of_that_app_only() -> None:
    mine, theirs = object(), object()
    owned = HookRegistry(mine)
    recorder = PublishRecorder()
    owned.add(recorder)
    try:
        for publisher, name in ((mine, "mine"), (theirs, "theirs"), (None, "unmarked")):
            if publisher is None:
                signals.after_task_publish.send(sender=name, headers={}, routing_key="q")
                continue
            with publishing(publisher):
                signals.after_task_publish.send(sender=name, headers={}, routing_key="q")
    finally:
        owned.remove(recorder)
    assert recorder.events == [("after", "mine", "q")]


class RejectionRecorder(WorkerHook):
    """Overrides the project event ``on_message_rejected`` (no Celery signal carries it)."""

    name = "rejection-recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_message_rejected(
        self, *, reason: str, task_name: str, queue: str, task_id: str | None
    ) -> None:
        self.seen.append((reason, task_name))


class BrokenRejectionHook(WorkerHook):
    """A component whose rejection hook always raises."""

    name = "broken-rejections"

    def on_message_rejected(
        self, *, reason: str, task_name: str, queue: str, task_id: str | None
    ) -> None:
        raise RuntimeError("component bug")


def test_a_project_event_reaches_the_hooks_that_override_it_without_a_celery_signal(
    registry: HookRegistry,
) -> None:
    recorder = registry.add(RejectionRecorder())
    assert isinstance(recorder, RejectionRecorder)

    registry.emit("on_message_rejected", reason="bad_eta", task_name="t", queue="q", task_id=None)

    assert recorder.seen == [("bad_eta", "t")]
    assert registry.connected_signals() == []


def test_a_project_event_hook_that_raises_is_logged_and_the_next_hook_still_runs(
    registry: HookRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.add(BrokenRejectionHook())
    recorder = registry.add(RejectionRecorder())
    assert isinstance(recorder, RejectionRecorder)

    with caplog.at_level(logging.ERROR):
        registry.emit(
            "on_message_rejected", reason="not_json", task_name="t", queue="q", task_id=None
        )

    assert recorder.seen == [("not_json", "t")]
    assert "broken-rejections.on_message_rejected failed" in caplog.text


def test_a_removed_hook_no_longer_receives_project_events(registry: HookRegistry) -> None:
    recorder = registry.add(RejectionRecorder())
    registry.remove(recorder)

    registry.emit("on_message_rejected", reason="x", task_name="t", queue="q", task_id=None)

    assert isinstance(recorder, RejectionRecorder)
    assert recorder.seen == []


class Provider(WorkerHook):
    """Sets something up at task success that the dependent hook uses at the same signal."""

    name = "provider"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def on_task_success(self, *, task: Any, result: Any) -> None:
        self.log.append(self.name)


class Dependent(Provider):
    """Uses what the provider sets up: declares it must be registered after it."""

    name = "dependent"
    requires = (Provider.name,)


def test_a_hook_whose_required_hook_is_missing_is_refused_naming_both(
    registry: HookRegistry,
) -> None:
    with pytest.raises(HookOrderError, match="'dependent' requires 'provider'"):
        registry.add(Dependent([]))

    assert registry.hooks == ()
    assert registry.connected_signals() == []


def test_a_hook_added_after_the_hook_it_requires_receives_each_signal_after_it(
    registry: HookRegistry,
) -> None:
    log: list[str] = []
    registry.add(Provider(log))
    registry.add(Dependent(log))

    fire_success(1)

    assert log == ["provider", "dependent"]
