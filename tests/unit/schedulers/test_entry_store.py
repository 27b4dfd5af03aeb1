"""Run-time changes to the beat schedule (schedulers/entry_store.py), in a real Redis: every
change bumps the version the beats watch, a name is not added twice by accident, and a stored
entry that no longer checks is reported, not raised."""

from __future__ import annotations

import json

import pytest
import redis

from personal_assistant.workers import keys
from personal_assistant.workers.schedulers.beat_entry import BeatEntry, EntryError, entry_from_data
from personal_assistant.workers.schedulers.entry_store import EntryStore

TASK = "personal_assistant.workers.tasks.file_tasks.cleanup_temp_files"


def make_entry(name: str = "extra-cleanup", **data: object) -> BeatEntry:
    """A checked entry of ``TASK``, hourly unless ``data`` says otherwise."""
    return entry_from_data(name, {"task": TASK, "cron": "0 * * * *", **data})


@pytest.fixture
def store(redis_client: redis.Redis) -> EntryStore:
    """An entry store on the test's emptied Redis."""
    return EntryStore(redis_client)


def test_the_version_is_zero_before_any_change(store: EntryStore) -> None:
    assert store.version() == "0"
    assert store.added() == ({}, {})
    assert store.disabled() == set()


def test_every_change_bumps_the_version(store: EntryStore) -> None:
    versions = [store.version()]

    store.add(make_entry())
    versions.append(store.version())
    store.add(make_entry(cron="30 * * * *"), replace=True)
    versions.append(store.version())
    store.set_enabled("extra-cleanup", False)
    versions.append(store.version())
    store.set_enabled("extra-cleanup", True)
    versions.append(store.version())
    store.remove("extra-cleanup")
    versions.append(store.version())

    assert versions == ["0", "1", "2", "3", "4", "5"]


def test_an_added_entry_reads_back_equal(store: EntryStore) -> None:
    entry = make_entry(jitter=30, window="mon-fri 09:00-17:00 Europe/Berlin", kwargs={"a": 1})

    replaced = store.add(entry)
    entries, problems = store.added()

    assert replaced is False
    assert entries == {"extra-cleanup": entry}
    assert problems == {}


def test_a_second_add_of_a_name_is_refused_without_replace(store: EntryStore) -> None:
    store.add(make_entry())
    version = store.version()

    with pytest.raises(EntryError, match="an added entry has this name"):
        store.add(make_entry(cron="30 * * * *"))

    entries, _ = store.added()
    assert store.version() == version
    assert entries["extra-cleanup"].cron is not None
    assert entries["extra-cleanup"].cron.text == "0 * * * *"


def test_a_replace_changes_the_entry_and_says_it_replaced_one(store: EntryStore) -> None:
    store.add(make_entry())

    replaced = store.add(make_entry(cron="30 * * * *"), replace=True)
    entries, _ = store.added()

    assert replaced is True
    assert entries["extra-cleanup"].cron is not None
    assert entries["extra-cleanup"].cron.text == "30 * * * *"


def test_an_entry_added_disabled_is_disabled_until_replaced_enabled(store: EntryStore) -> None:
    store.add(make_entry(enabled=False))
    assert store.disabled() == {"extra-cleanup"}

    store.add(make_entry(), replace=True)

    assert store.disabled() == set()


def test_any_entry_declared_or_added_can_be_disabled_and_enabled(store: EntryStore) -> None:
    # "cleanup-temp-files" is declared in code: only its name is kept.
    assert store.set_enabled("cleanup-temp-files", False) is True
    assert store.set_enabled("cleanup-temp-files", False) is False
    assert store.disabled() == {"cleanup-temp-files"}

    assert store.set_enabled("cleanup-temp-files", True) is True
    assert store.set_enabled("cleanup-temp-files", True) is False
    assert store.disabled() == set()


def test_removing_an_entry_forgets_it_and_its_disabled_mark(store: EntryStore) -> None:
    store.add(make_entry(enabled=False))

    assert store.remove("extra-cleanup") is True
    assert store.remove("extra-cleanup") is False
    assert store.added() == ({}, {})
    assert store.disabled() == set()


def test_a_stored_entry_that_no_longer_checks_is_reported_not_raised(
    store: EntryStore, redis_client: redis.Redis
) -> None:
    store.add(make_entry("good"))
    stale = {**make_entry("stale").to_data(), "cron": "0 25 * * *"}
    redis_client.hset(keys.BEAT_DEFS_KEY, "stale", json.dumps(stale))
    redis_client.hset(keys.BEAT_DEFS_KEY, "garbled", "{not json")
    redis_client.hset(keys.BEAT_DEFS_KEY, "not-a-mapping", json.dumps([1, 2]))

    entries, problems = store.added()

    assert set(entries) == {"good"}
    assert set(problems) == {"stale", "garbled", "not-a-mapping"}
    assert "beat entry 'stale': cron '0 25 * * *': hour 25 is outside 0-23" in problems["stale"]
    assert "an entry is a mapping, got list" in problems["not-a-mapping"]
    assert problems["garbled"]  # json's own message: position of the mistake


def test_two_stores_on_one_redis_see_each_others_changes(store: EntryStore, redis_url: str) -> None:
    other_client = redis.Redis.from_url(redis_url)  # another beat's own connection
    other = EntryStore(other_client)

    store.add(make_entry())
    other.set_enabled("extra-cleanup", False)

    assert store.version() == other.version() == "2"
    assert set(other.added()[0]) == {"extra-cleanup"}
    assert store.disabled() == {"extra-cleanup"}
    other_client.close()
