"""``celery -A personal_assistant.workers.celery_app dlq ...`` against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers import keys
from personal_assistant.workers.broker.priority import redis_bucket_for, redis_list_names
from personal_assistant.workers.dead_letters.queue import DeadLetter, DeadLetterQueue
from tests.support.worker import APP, worker_env

PROBE = f"{c.TASKS_PACKAGE}.file_tasks.probe"
TRACEBACK = 'Traceback (most recent call last):\n  File "job.py", line 3\nPermanentError: boom'


def letter(n: int) -> DeadLetter:
    return DeadLetter(
        task_name=PROBE,
        task_id=f"task-{n}",
        args=[n],
        kwargs={},
        exception_type="PermanentError",
        exception=f"boom {n}",
        traceback=TRACEBACK,
        queue=c.FILE_QUEUE,
        priority=4,
        failed_at=1_700_000_000.0 + n,
    )


@pytest.fixture
def dlq(redis_client: redis.Redis) -> DeadLetterQueue:
    return DeadLetterQueue(redis_client)


@pytest.fixture
def letters(dlq: DeadLetterQueue) -> list[DeadLetter]:
    """Two dead letters in the test Redis, oldest first."""
    added = [letter(1), letter(2)]
    for item in added:
        dlq.add(item)
    return added


def store_raw(client: redis.Redis, letter_id: str, raw: str, at: float) -> None:
    """Write an entry as someone with access to Redis could, bypassing DeadLetterQueue.add."""
    client.hset(keys.DLQ_KEY, letter_id, raw)
    client.zadd(keys.DLQ_INDEX_KEY, {letter_id: at})


def dlq_cli(
    redis_url: str, cwd: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``celery -A <app> dlq <args>`` as an operator would, against the test Redis."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "dlq", *args],
        env=worker_env(redis_url),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_shows_the_ids_newest_first(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "list")

    assert proc.returncode == 0, proc.stderr
    older, newer = letters
    assert newer.id in proc.stdout
    assert older.id in proc.stdout
    assert proc.stdout.index(newer.id) < proc.stdout.index(older.id)
    assert "2 in all" in proc.stdout


def test_list_as_json_prints_one_entry_per_line(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "list", "--json", "--limit", "1")

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    assert DeadLetter.from_json(lines[0]) == letters[1]


def test_show_prints_the_letter_a_field_a_line_and_its_traceback_as_printed(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "show", letters[0].id)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"id:        {letters[0].id}"
    assert f"task:      {PROBE} (task id task-1)" in lines
    assert "error:     PermanentError: boom 1" in lines
    assert "args:      [1]" in lines
    # The traceback's own lines, not one JSON string full of "\n".
    assert lines[-4:] == ["traceback:", *TRACEBACK.splitlines()]
    assert "\\n" not in proc.stdout


def test_show_as_json_prints_the_letter_as_stored(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "show", letters[0].id, "--json")

    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["traceback"] == TRACEBACK
    assert shown["task_name"] == PROBE
    assert shown["exception"] == "boom 1"
    assert DeadLetter.from_json(proc.stdout) == letters[0]


def test_show_of_an_unknown_id_fails_saying_there_is_no_such_letter(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "show", "unknown")

    assert proc.returncode != 0
    assert "no dead letter with id unknown" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_purge_without_ids_or_all_is_a_usage_error_and_deletes_nothing(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "purge")

    assert proc.returncode == 64
    assert proc.stderr == "Error: name the dead letters to purge, or pass --all\n"
    assert len(dlq) == 2


def test_an_unknown_option_is_one_line_and_clicks_exit_code_2(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "list", "--bogus")

    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: No such option '--bogus' (see '")
    assert line.endswith(" dlq list --help')")


def test_purge_all_with_yes_empties_the_queue(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "purge", "--all", "--yes")

    assert proc.returncode == 0, proc.stderr
    assert "purged 2 dead letter(s)" in proc.stdout
    assert len(dlq) == 0


def test_purge_all_asks_first_and_a_no_keeps_everything(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "purge", "--all", stdin="n\n")

    assert proc.returncode != 0
    assert "Delete all 2 dead letters?" in proc.stdout
    assert len(dlq) == 2


def test_purge_of_one_id_removes_only_that_letter(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "purge", letters[0].id)

    assert proc.returncode == 0, proc.stderr
    assert "purged 1 dead letter(s)" in proc.stdout
    assert [x.id for x in dlq.list()] == [letters[1].id]


def test_replay_sends_the_task_again_and_removes_the_letter(
    redis_url: str,
    tmp_path: Path,
    dlq: DeadLetterQueue,
    redis_client: redis.Redis,
    letters: list[DeadLetter],
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "replay", letters[0].id)

    assert proc.returncode == 0, proc.stderr
    assert f"replayed {letters[0].id} as task" in proc.stdout
    bucket_list = redis_list_names(c.FILE_QUEUE)[redis_bucket_for(4)]
    assert redis_client.llen(bucket_list) == 1
    assert [x.id for x in dlq.list()] == [letters[1].id]


def test_replay_and_purge_as_json_say_what_they_did(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    replay = dlq_cli(redis_url, tmp_path, "replay", letters[0].id, "nope", "--json")
    purge = dlq_cli(redis_url, tmp_path, "purge", letters[1].id, "--json")

    assert replay.returncode == 1
    data = json.loads(replay.stdout)
    assert [item["id"] for item in data["replayed"]] == [letters[0].id]
    assert data["refused"] == [{"id": "nope", "problem": "no dead letter with id nope"}]
    assert purge.returncode == 0, purge.stderr
    assert json.loads(purge.stdout) == {"purged": 1}
    assert len(dlq) == 0


def test_replay_of_an_unknown_id_fails_and_keeps_the_others(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "replay", "unknown")

    assert proc.returncode != 0
    assert "no dead letter with id unknown" in proc.stderr
    assert len(dlq) == 2


# --- entries that do not read, or that name what this deployment does not run ---------------


def test_list_skips_a_non_json_entry_and_names_it_on_stderr(
    redis_url: str, tmp_path: Path, redis_client: redis.Redis, letters: list[DeadLetter]
) -> None:
    store_raw(redis_client, "broken", "{not json", at=1_700_000_001.5)

    proc = dlq_cli(redis_url, tmp_path, "list")

    assert proc.returncode == 0, proc.stderr
    assert letters[0].id in proc.stdout
    assert letters[1].id in proc.stdout
    assert "1 unreadable entry skipped: broken; see `dlq show broken`" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert redis_client.hget(keys.DLQ_KEY, "broken") == b"{not json"


def test_list_as_json_prints_only_readable_entries_and_counts_the_skipped_on_stderr(
    redis_url: str, tmp_path: Path, redis_client: redis.Redis, letters: list[DeadLetter]
) -> None:
    store_raw(redis_client, "broken", "[1, 2]", at=1_700_000_003.0)
    store_raw(redis_client, "typo", '{"task_name": 1}', at=1_700_000_004.0)

    proc = dlq_cli(redis_url, tmp_path, "list", "--json")

    assert proc.returncode == 0, proc.stderr
    assert [DeadLetter.from_json(line) for line in proc.stdout.splitlines()] == letters[::-1]
    assert "2 unreadable entries skipped: typo, broken; see `dlq show ID`" in proc.stderr


def test_show_of_an_unreadable_entry_prints_its_raw_text_and_why(
    redis_url: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    raw = json.dumps({**json.loads(letter(1).to_json()), "args": "rm -rf /"})
    store_raw(redis_client, "tampered", raw, at=1.0)

    proc = dlq_cli(redis_url, tmp_path, "show", "tampered")

    assert proc.returncode == 1
    assert proc.stdout == raw + "\n"
    [line] = proc.stderr.splitlines()
    assert "dead letter tampered is unreadable: args must be a list, not a string" in line
    assert f"all of its {len(raw)} bytes" in line
    assert "`dlq purge tampered`" in line


def test_show_clips_a_long_unreadable_entry_and_escapes_control_characters(
    redis_url: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    raw = "\x1b[2J" + "x" * 100_000
    store_raw(redis_client, "noisy", raw, at=1.0)

    proc = dlq_cli(redis_url, tmp_path, "show", "noisy")

    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout
    assert proc.stdout.startswith("\\x1b[2J")
    assert len(proc.stdout) < 10_000
    assert f"the first {8 * 1024} of its {len(raw)} bytes" in proc.stderr


def test_purge_of_an_unreadable_entry_removes_it(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, redis_client: redis.Redis
) -> None:
    store_raw(redis_client, "broken", "{not json", at=1.0)

    proc = dlq_cli(redis_url, tmp_path, "purge", "broken")

    assert proc.returncode == 0, proc.stderr
    assert "purged 1 dead letter(s)" in proc.stdout
    assert redis_client.exists(keys.DLQ_KEY, keys.DLQ_INDEX_KEY) == 0


@pytest.mark.parametrize(
    "case",
    [
        ({"queue": "nowhere"}, "queue 'nowhere' is not one of"),
        ({"priority": 99}, "priority 99 is not from 0 to 9"),
        ({"task_name": "no.such.task"}, "task_name 'no.such.task' is not a registered task"),
        ({"args": "not a list"}, "is unreadable: args must be a list, not a string"),
    ],
    ids=["unconsumed-queue", "priority-99", "unknown-task", "args-not-a-list"],
)
def test_replay_of_a_tampered_entry_is_refused_in_one_line_and_the_entry_stays(
    case: tuple[dict[str, object], str],
    redis_url: str,
    tmp_path: Path,
    redis_client: redis.Redis,
    letters: list[DeadLetter],
) -> None:
    changes, says = case
    bad = letter(9)
    raw = json.dumps({**json.loads(bad.to_json()), **changes})
    store_raw(redis_client, bad.id, raw, at=bad.failed_at)

    proc = dlq_cli(redis_url, tmp_path, "replay", bad.id, letters[0].id)

    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert f"dead letter {bad.id}" in line
    assert says in line
    assert "it stays in the dead-letter queue" in line
    assert f"replayed {letters[0].id} as task" in proc.stdout
    assert redis_client.hget(keys.DLQ_KEY, bad.id) == raw.encode()
    assert redis_client.zscore(keys.DLQ_INDEX_KEY, bad.id) == bad.failed_at
    assert redis_client.exists("nowhere") == 0
