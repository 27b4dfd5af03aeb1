"""Beat entries (schedulers/beat_entry.py): valid data reads back unchanged, every mistake is one
EntryError naming the entry and the problem, the app checks name unknown tasks and queues, and
the fingerprint follows the timing only."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from personal_assistant.workers import constants as c
from personal_assistant.workers.schedulers.beat_entry import (
    MAX_ENTRY_BYTES,
    EntryError,
    check_against,
    entry_from_data,
)

CLEANUP = "personal_assistant.workers.tasks.file_tasks.cleanup_temp_files"
SYNC = "personal_assistant.workers.tasks.sync_tasks.sync_calendar_events"
KNOWN_TASKS = frozenset({CLEANUP, SYNC})
KNOWN_QUEUES = frozenset(c.QUEUES)
WORKFLOW = {"name": "nightly-digest", "tasks": {"sync": {"task": SYNC}}}


def full_data() -> dict[str, Any]:
    """An entry using every task field, each away from its default."""
    return {
        "task": CLEANUP,
        "cron": "30 2 * * mon-fri",
        "timezone": "Europe/Berlin",
        "args": [1, "two", [3]],
        "kwargs": {"dry_run": True, "limits": {"age_days": 7}},
        "queue": c.FILE_QUEUE,
        "priority": 3,
        "expires": 600.0,
        "jitter": 120.0,
        "window": "mon-fri 01:00-05:00 Europe/Berlin",
        "no_overlap": True,
        "max_queue_depth": 50,
        "misfire": "skip",
        "misfire_grace": 30.0,
        "enabled": False,
    }


def error_of(data: dict[str, Any], name: object = "nightly") -> EntryError:
    """The EntryError ``entry_from_data`` raises for ``data`` (it must refuse it)."""
    with pytest.raises(EntryError) as caught:
        entry_from_data(name, data)
    return caught.value


def test_an_entry_with_every_field_reads_back_unchanged_from_its_data() -> None:
    entry = entry_from_data("nightly", full_data())

    assert entry_from_data("nightly", entry.to_data()) == entry
    assert entry.window is not None and entry.cron is not None
    assert (entry.cron.text, entry.window.text, entry.misfire) == (
        "30 2 * * mon-fri",
        "mon-fri 01:00-05:00 Europe/Berlin",
        "skip",
    )


def test_an_entry_survives_a_trip_through_json_as_stored_in_redis() -> None:
    entry = entry_from_data("nightly", full_data())

    stored = json.dumps(entry.to_data())

    assert entry_from_data("nightly", json.loads(stored)) == entry


@pytest.mark.parametrize(
    "data",
    [
        {"task": CLEANUP, "interval": 90},
        {"task": CLEANUP, "cron": "@hourly"},
        {"workflow": WORKFLOW, "cron": "0 6 * * *", "timezone": "America/New_York"},
    ],
    ids=["interval", "macro", "workflow"],
)
def test_minimal_entries_read_back_unchanged_with_their_defaults(data: dict[str, Any]) -> None:
    entry = entry_from_data("plain", data)

    assert entry_from_data("plain", entry.to_data()) == entry
    assert (entry.misfire, entry.misfire_grace, entry.enabled, entry.jitter) == (
        "run_once",
        60.0,
        True,
        0.0,
    )


def test_a_workflow_entry_has_no_task_and_keeps_its_definition() -> None:
    entry = entry_from_data("digest", {"workflow": WORKFLOW, "interval": 3600})

    assert entry.task == ""
    assert entry.workflow == WORKFLOW
    assert "task" not in entry.to_data()


def test_an_interval_is_kept_as_seconds_and_described_as_such() -> None:
    entry = entry_from_data("often", {"task": CLEANUP, "interval": 90})

    assert entry.interval == 90.0
    assert entry.cron is None
    assert entry.describe_schedule() == "every 90 s"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"cron": "61 * * * *"}, "minute 61 is outside 0-59"),
        ({"cron": "0 9 * *"}, "needs 5"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'"),
        ({"interval": 60}, "exactly one of cron and interval"),
        ({"cron": None}, "exactly one of cron and interval"),
        ({"cron": None, "interval": 0.5}, "interval must be between 1 and"),
        ({"cron": None, "interval": True}, "interval must be a number of seconds"),
        ({"cron": None, "interval": 60, "jitter": 60}, "jitter (60 s) must be shorter"),
        ({"jitter": -1}, "jitter must be between 0 and 86400"),
        ({"window": "mon-fri 09:00-09:00"}, "never opens"),
        ({"window": "someday 09:00-17:00"}, "unknown day 'someday'"),
        ({"priority": 11}, "priority must be a whole number 0..10"),
        ({"priority": -1}, "priority must be a whole number 0..10"),
        ({"priority": True}, "priority must be a whole number 0..10"),
        ({"priority": 5.0}, "priority must be a whole number 0..10"),
        ({"max_queue_depth": -1}, "max_queue_depth must be a whole number >= 0"),
        ({"misfire": "catch_up"}, "misfire must be one of run_once, skip, got 'catch_up'"),
        ({"misfire_grace": -5}, "misfire_grace must be between 0 and"),
        ({"expires": math.inf}, "expires must be between 1 and"),
        ({"colour": "blue", "size": 3}, "unknown field(s) colour, size"),
        ({"workflow": WORKFLOW}, "a task or a workflow, not both"),
        ({"task": None}, "task must name a task"),
        ({"task": ""}, "task must name a task"),
        ({"args": [{1, 2}]}, "args must be JSON data"),
        ({"args": [math.nan]}, "args must be JSON data"),
        ({"kwargs": {"when": object()}}, "kwargs must be JSON data"),
        ({"args": "abc"}, "args must be a list and kwargs a mapping"),
        ({"queue": ""}, "queue must be a queue name"),
        ({"no_overlap": "yes"}, "no_overlap must be true or false"),
        ({"enabled": 1}, "enabled must be true or false"),
        ({"args": ["x" * MAX_ENTRY_BYTES]}, f"larger than {MAX_ENTRY_BYTES} bytes"),
    ],
)
def test_each_mistake_is_an_entry_error_naming_the_entry_and_the_problem(
    change: dict[str, Any], problem: str
) -> None:
    data = {"task": CLEANUP, "cron": "0 2 * * *", **change}
    data = {key: value for key, value in data.items() if value is not None}

    error = error_of(data)

    assert error.entry == "nightly"
    assert problem in error.problem
    assert str(error).startswith("beat entry 'nightly': ")


def test_a_workflow_that_is_not_a_mapping_is_refused() -> None:
    error = error_of({"workflow": ["sync"], "interval": 60})

    assert "workflow must be a workflow definition" in error.problem


def test_data_that_is_not_a_mapping_is_refused() -> None:
    error = error_of(["task", CLEANUP])  # type: ignore[arg-type]

    assert "an entry is a mapping, got list" in error.problem


@pytest.mark.parametrize(
    "name",
    ["", "two words", "x" * 129, "-leading-dash", "slash/name", None],
    ids=["empty", "spaces", "too-long", "leading-dash", "slash", "not-text"],
)
def test_a_bad_name_is_refused_saying_what_a_name_may_hold(name: object) -> None:
    error = error_of({"task": CLEANUP, "interval": 60}, name=name)

    assert error.entry == str(name)
    assert "a name is 1 to 128 letters, digits and . _ : @ -" in error.problem


def test_a_name_of_128_plain_characters_is_accepted() -> None:
    name = "a" + "b.c_d:e@f-" * 12 + "x" * 7

    assert len(name) == 128
    assert entry_from_data(name, {"task": CLEANUP, "interval": 60}).name == name


def test_a_known_task_on_a_known_queue_passes_the_app_checks() -> None:
    entry = entry_from_data(
        "nightly", {"task": CLEANUP, "cron": "0 2 * * *", "queue": c.FILE_QUEUE}
    )

    check_against(entry, known_tasks=KNOWN_TASKS, known_queues=KNOWN_QUEUES)


def test_an_unknown_task_is_refused_with_the_closest_known_name() -> None:
    typo = CLEANUP.replace("temp_files", "tmp_files")
    entry = entry_from_data("nightly", {"task": typo, "cron": "0 2 * * *"})

    with pytest.raises(EntryError, match=re.escape(f"unknown task '{typo}'")) as caught:
        check_against(entry, known_tasks=KNOWN_TASKS, known_queues=KNOWN_QUEUES)

    assert f"did you mean '{CLEANUP}'?" in caught.value.problem


def test_an_unknown_task_like_no_known_one_gets_no_suggestion() -> None:
    entry = entry_from_data("nightly", {"task": "billing.charge", "cron": "0 2 * * *"})

    with pytest.raises(EntryError, match=r"unknown task 'billing\.charge'") as caught:
        check_against(entry, known_tasks=KNOWN_TASKS, known_queues=KNOWN_QUEUES)

    assert "did you mean" not in caught.value.problem


def test_an_unknown_queue_is_refused_listing_the_known_ones() -> None:
    entry = entry_from_data("nightly", {"task": CLEANUP, "cron": "0 2 * * *", "queue": "files"})

    with pytest.raises(EntryError, match="unknown queue 'files'") as caught:
        check_against(entry, known_tasks=KNOWN_TASKS, known_queues=KNOWN_QUEUES)

    assert ", ".join(sorted(KNOWN_QUEUES)) in caught.value.problem


def test_a_workflow_entry_skips_the_task_check_but_not_the_queue_check() -> None:
    entry = entry_from_data("digest", {"workflow": WORKFLOW, "interval": 3600})
    on_bad_queue = entry_from_data(
        "digest", {"workflow": WORKFLOW, "interval": 3600, "queue": "nowhere"}
    )

    check_against(entry, known_tasks=frozenset(), known_queues=KNOWN_QUEUES)
    with pytest.raises(EntryError, match="unknown queue 'nowhere'"):
        check_against(on_bad_queue, known_tasks=frozenset(), known_queues=KNOWN_QUEUES)


def fingerprint_with(**change: Any) -> str:
    """The fingerprint of a base entry with ``change`` applied to its data."""
    data: dict[str, Any] = {"task": CLEANUP, "cron": "0 2 * * *", "jitter": 30, **change}
    return entry_from_data(
        "nightly", {k: v for k, v in data.items() if v is not None}
    ).fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"cron": "0 3 * * *"},
        {"cron": None, "interval": 86_400},
        {"timezone": "Europe/Berlin"},
        {"jitter": 31},
    ],
    ids=["cron", "interval", "timezone", "jitter"],
)
def test_the_fingerprint_changes_with_the_timing(change: dict[str, Any]) -> None:
    assert fingerprint_with(**change) != fingerprint_with()


@pytest.mark.parametrize(
    "change",
    [
        {"args": [1]},
        {"kwargs": {"dry_run": True}},
        {"priority": 9},
        {"queue": c.FILE_QUEUE},
        {"window": "* 01:00-04:00"},
        {"misfire": "skip"},
        {"enabled": False},
    ],
    ids=["args", "kwargs", "priority", "queue", "window", "misfire", "enabled"],
)
def test_the_fingerprint_does_not_change_with_what_is_sent_or_when_it_is_skipped(
    change: dict[str, Any],
) -> None:
    assert fingerprint_with(**change) == fingerprint_with()
