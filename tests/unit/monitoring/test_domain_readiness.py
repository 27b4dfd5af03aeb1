"""/readyz on domain workers: the store must answer, migrated; missing settings are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from personal_assistant.workers.config import load_settings
from personal_assistant.workers.monitoring.domain_readiness import domains_ready, store_ready
from personal_assistant.workers.store.migrate import upgrade


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'assistant.db'}"


def test_a_migrated_store_is_ready(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade(url)

    assert store_ready(url) == (True, "store: ok")


def test_a_store_never_migrated_is_not_ready_and_the_probe_creates_nothing(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)

    assert store_ready(url) == (False, "store: not migrated (run `celery ... db upgrade`)")
    assert not (tmp_path / "store").exists()


def test_an_unreachable_store_is_not_ready_and_its_address_is_not_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok, message = store_ready("postgresql://app:hunter2@127.0.0.1:1/assistant")

    assert not ok
    assert message == "store: not ok (OperationalError)"
    assert "hunter2" not in caplog.text


def test_a_worker_of_no_domain_queue_reports_nothing_of_the_domains(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    assert domains_ready(settings, ["file_tasks", "maintenance_tasks"]) == (True, "")


def test_missing_settings_of_the_served_domains_are_reported_but_keep_the_worker_ready(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path, smtp_host="smtp.example.com")
    upgrade(settings.store_url)

    ok, message = domains_ready(settings, ["email_tasks", "ai_tasks", "file_tasks"])

    assert ok
    assert message == (
        "store: ok; ai: not configured (AI_BASE_URL, AI_MODEL); email: not configured (EMAIL_FROM)"
    )


def test_a_domain_worker_without_its_store_is_not_ready(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    ok, message = domains_ready(settings, ["sync_tasks"])

    assert not ok
    assert message.startswith("store: not migrated")
    assert "sync: not configured (CALENDAR_FEEDS)" in message
