"""``celery -A personal_assistant.workers.celery_app dlq ...`` against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from personal_assistant.workers import constants as c
from personal_assistant.workers.broker.priority import redis_bucket_for, redis_list_names
from personal_assistant.workers.utils.error_handling import DeadLetter, DeadLetterQueue
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


def test_show_prints_the_whole_letter_with_its_traceback(
    redis_url: str, tmp_path: Path, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "show", letters[0].id)

    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["traceback"] == TRACEBACK
    assert shown["task_name"] == PROBE
    assert shown["exception"] == "boom 1"


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

    assert proc.returncode == 2
    assert "name the dead letters to purge, or pass --all" in proc.stderr
    assert len(dlq) == 2


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


def test_replay_of_an_unknown_id_fails_and_keeps_the_others(
    redis_url: str, tmp_path: Path, dlq: DeadLetterQueue, letters: list[DeadLetter]
) -> None:
    proc = dlq_cli(redis_url, tmp_path, "replay", "unknown")

    assert proc.returncode != 0
    assert "no dead letter with id unknown" in proc.stderr
    assert len(dlq) == 2
