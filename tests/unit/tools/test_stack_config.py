"""tools/local_stack.py's adaptation of the shipped prometheus.yml and compose environment:
only the targets (and rule paths) change; the services' environment is compose's, localized."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_config import (
    DOCKER,
    adapt_prometheus_config,
    interpolate,
    load_compose,
    service_environment,
    worker_services,
)

SHIPPED = DOCKER / "monitoring" / "prometheus.yml"
TARGETS = {
    "email_worker": ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"],
    "ai_worker": ["127.0.0.1:1004"],
    "scheduler": ["127.0.0.1:1005"],
}


def adapted(interval: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    shipped = yaml.safe_load(SHIPPED.read_text())
    result = adapt_prometheus_config(
        shipped,
        TARGETS,
        prometheus_address="127.0.0.1:9999",
        rules_dir=SHIPPED.parent,
        interval=interval,
    )
    return shipped, result


def without_targets(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every target list, service discovery and rule path taken out."""
    stripped = copy.deepcopy(config)
    for job in stripped["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job.pop("static_configs", None)
    for manager in stripped["alerting"]["alertmanagers"]:
        manager.pop("static_configs", None)
    stripped.pop("rule_files")
    return stripped


def test_each_dns_discovery_becomes_the_local_replicas_of_its_service() -> None:
    _, config = adapted()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["email_worker"]["static_configs"] == [{"targets": TARGETS["email_worker"]}]
    assert jobs["scheduler"]["static_configs"] == [{"targets": ["127.0.0.1:1005"]}]
    assert jobs["file_worker"]["static_configs"] == [{"targets": []}]  # not started: none
    assert all("dns_sd_configs" not in job for job in jobs.values())
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    assert jobs["alertmanager"]["static_configs"] == [{"targets": []}]
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [{"targets": []}]


def test_everything_but_the_targets_and_rule_paths_is_the_shipped_config() -> None:
    shipped, config = adapted()
    assert without_targets(config) == without_targets(shipped)
    assert config["rule_files"] == [str((SHIPPED.parent / "alert_rules.yml").resolve())]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["email_worker"]["relabel_configs"] == [
        {"target_label": "queue", "replacement": "email_tasks"}
    ]


def test_an_interval_changes_only_the_global_intervals() -> None:
    shipped, config = adapted(interval="1s")
    assert config["global"] == {
        **shipped["global"],
        "scrape_interval": "1s",
        "evaluation_interval": "1s",
        "scrape_timeout": "1s",
    }


def test_compose_interpolation_takes_defaults_and_refuses_a_missing_required_variable() -> None:
    assert interpolate("${A:-x}/${B}/$$", {"B": "b"}) == "x/b/$"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    with pytest.raises(ValueError, match="set PW"):
        interpolate("${PW:?set PW}", {})


def test_a_worker_gets_its_worker_config_and_local_redis_sqlite_and_no_alertmanager(
    tmp_path: Path,
) -> None:
    compose = load_compose(DOCKER / "docker-compose.prod.yml")
    assert "email_worker" in worker_services(compose)
    env = service_environment(
        compose["services"]["email_worker"],
        {"PROD_REDIS_PASSWORD": "s3cr3t", "PROD_POSTGRES_PASSWORD": "p", "WORKER_DOWN_AFTER": "3"},
        compose_dir=DOCKER,
        redis_port=4242,
        database_url="sqlite:///x.db",
        data_dir=tmp_path,
    )
    assert env["WORKER_QUEUE"] == "email_tasks"
    assert env["WORKER_CONCURRENCY"] == "4"  # from worker-configs/email.env
    assert env["CELERY_BROKER_URL"] == "redis://:s3cr3t@127.0.0.1:4242/0"
    assert env["DATABASE_URL"] == "sqlite:///x.db"
    assert "ALERT_ALERTMANAGER_URL" not in env
    assert env["WORKER_DOWN_AFTER"] == "3"  # a pass-through variable, set
    assert "SMTP_HOST" not in env  # a pass-through variable, unset
    assert env["ENVIRONMENT"] == "production"
    assert env["DATA_DIR"] == str(tmp_path)
