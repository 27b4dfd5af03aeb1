"""The settings the containers get: each worker-configs file loads through the package's own
settings with values that fit its queue's work (prefork, the seed's concurrency, time limits
within the leases, memory within the container), every variable the package reads reaches the
worker and beat containers, and docker/.env.example lists every variable, its placeholder
passwords refused by production and real ones accepted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_check import environment_of, read_env_file

from personal_assistant.workers import constants as c
from personal_assistant.workers.config import (
    AlertChannelSettings,
    ConfigError,
    WorkerSettings,
    get_settings,
)
from personal_assistant.workers.config.production import PLACEHOLDER_SECRETS

ROOT = Path(__file__).resolve().parents[3]

DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "docker-compose.prod.yml").read_text(encoding="utf-8")
SHIPPED: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
ENV_EXAMPLE = DOCKER / ".env.example"
WORKER_CONFIGS = DOCKER / "worker-configs"
WORKER_SERVICES = {
    "ai_worker": c.AI_QUEUE,
    "email_worker": c.EMAIL_QUEUE,
    "file_worker": c.FILE_QUEUE,
    "sync_worker": c.SYNC_QUEUE,
    "maintenance_worker": c.MAINTENANCE_QUEUE,
}
# ${NAME...} in the compose file (not $$NAME, the container shell's own).
INTERPOLATED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
EXAMPLE_LINE = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")


def example_values() -> dict[str, str]:
    """The variables docker/.env.example sets (uncommented lines)."""
    return read_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))


# --- worker-configs ------------------------------------------------------------------------


def load_worker_config(env: pytest.MonkeyPatch, queue_file: Path) -> WorkerSettings:
    """The settings a worker of that file gets: its variables in the environment."""
    for name, value in read_env_file(queue_file.read_text(encoding="utf-8")).items():
        env.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize("queue", sorted(WORKER_SERVICES.values()))
def test_each_worker_config_loads_as_prefork_through_the_package_settings(
    clean_env: pytest.MonkeyPatch, queue: str
) -> None:
    path = WORKER_CONFIGS / f"{queue.removesuffix('_tasks')}.env"
    values = read_env_file(path.read_text(encoding="utf-8"))

    settings = load_worker_config(clean_env, path)

    assert settings.worker_pool == "prefork"
    assert settings.worker_concurrency == int(values["WORKER_CONCURRENCY"])
    assert settings.worker_prefetch_multiplier == int(values["WORKER_PREFETCH_MULTIPLIER"])
    assert settings.worker_max_memory_per_child == int(values["WORKER_MAX_MEMORY_PER_CHILD"])
    assert (
        settings.task_soft_time_limit < settings.task_time_limit == int(values["TASK_TIME_LIMIT"])
    )
    # Every value is explained: a comment line stands right above each variable.
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[index - 1].startswith("# "), line


def test_the_seed_concurrency_and_max_tasks_per_child_are_kept() -> None:
    ai = read_env_file((WORKER_CONFIGS / "ai.env").read_text(encoding="utf-8"))
    email = read_env_file((WORKER_CONFIGS / "email.env").read_text(encoding="utf-8"))

    assert (ai["WORKER_CONCURRENCY"], ai["WORKER_MAX_TASKS_PER_CHILD"]) == ("1", "1000")
    assert (email["WORKER_CONCURRENCY"], email["WORKER_MAX_TASKS_PER_CHILD"]) == ("4", "1000")


def test_a_killed_run_never_overlaps_a_second_claim_of_its_email_or_ai_job(
    clean_env: pytest.MonkeyPatch,
) -> None:
    email = load_worker_config(clean_env, WORKER_CONFIGS / "email.env")
    assert email.task_time_limit <= email.email_lease_seconds

    ai = load_worker_config(clean_env, WORKER_CONFIGS / "ai.env")
    assert ai.task_time_limit <= ai.ai_lease_seconds


def test_every_worker_gets_the_same_visibility_timeout(clean_env: pytest.MonkeyPatch) -> None:
    # The unacked restore of any worker redelivers any worker's messages, so a per-queue time
    # limit must not change the broker's visibility timeout.
    timeouts = set()
    for path in sorted(WORKER_CONFIGS.glob("*.env")):
        settings = load_worker_config(clean_env, path)
        assert settings.task_time_limit < settings.effective_visibility_timeout
        timeouts.add(settings.effective_visibility_timeout)

    assert len(timeouts) == 1


def test_each_worker_memory_per_child_fits_its_container_limit() -> None:
    units = {"M": 1024, "G": 1024 * 1024}  # KiB
    for name, queue in WORKER_SERVICES.items():
        limit = SHIPPED["services"][name]["deploy"]["resources"]["limits"]["memory"]
        limit_kib = int(limit[:-1]) * units[limit[-1]]
        path = WORKER_CONFIGS / f"{queue.removesuffix('_tasks')}.env"
        values = read_env_file(path.read_text(encoding="utf-8"))
        children = int(values["WORKER_CONCURRENCY"]) * int(values["WORKER_MAX_MEMORY_PER_CHILD"])

        assert children < limit_kib, name


# --- every variable reaches the containers, and .env.example lists them --------------------


def package_variables() -> set[str]:
    """Every environment variable the package reads."""
    names = {name.upper() for name in WorkerSettings.model_fields if name != "alert_channels"}
    return names | {AlertChannelSettings.variable(f) for f in AlertChannelSettings.model_fields}


def test_every_variable_the_package_reads_reaches_the_worker_and_beat_containers() -> None:
    services = SHIPPED["services"]
    configured = set(read_env_file((WORKER_CONFIGS / "email.env").read_text(encoding="utf-8")))
    worker = set(environment_of(services["email_worker"])) | configured
    beat = set(environment_of(services["scheduler"]))
    beat_only = {"SCHEDULER_ENABLED", "BEAT_METRICS_PORT"}
    # The pool, the per-task limits and the queue are the workers' (worker-configs, compose).
    worker_only = configured | {"WORKER_QUEUE"}

    assert package_variables() - worker - beat_only == set()
    assert package_variables() - beat - worker_only == set()


def test_env_example_lists_every_variable_the_compose_file_reads_each_under_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    listed = {m.group(1) for m in map(EXAMPLE_LINE.match, lines) if m}
    settings = "\n".join(
        line for line in COMPOSE_TEXT.splitlines() if not line.strip().startswith("#")
    )
    interpolated = set(INTERPOLATED.findall(settings))
    passed_through = {
        k for k, v in environment_of(SHIPPED["services"]["ai_worker"]).items() if v is None
    }

    assert interpolated - listed == set()
    assert passed_through - listed == set()
    for index, line in enumerate(lines):
        if EXAMPLE_LINE.match(line):
            # A group of variables shares the comment above its first line.
            above = index - 1
            while EXAMPLE_LINE.match(lines[above]):
                above -= 1
            assert lines[above].startswith("# "), f"{line}: no comment above it"


def test_the_example_passwords_are_placeholders_production_refuses(
    clean_env: pytest.MonkeyPatch,
) -> None:
    values = example_values()
    for name in ("PROD_REDIS_PASSWORD", "PROD_POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert values[name].lower() in PLACEHOLDER_SECRETS

    app_environment(clean_env, values)
    with pytest.raises(ConfigError, match="ENVIRONMENT=production needs a real password in "):
        get_settings()


def test_the_compose_environment_with_real_passwords_loads_as_production(
    clean_env: pytest.MonkeyPatch,
) -> None:
    values = {
        **example_values(),
        "PROD_REDIS_PASSWORD": "9f" * 16,
        "PROD_POSTGRES_PASSWORD": "a1" * 16,
    }

    app_environment(clean_env, values)
    settings = get_settings()

    assert settings.environment == "production"
    assert not settings.debug
    assert settings.metrics_host == "0.0.0.0"  # noqa: S104 - a comparison, not a bind
    assert settings.store_url == f"postgresql://assistant:{'a1' * 16}@postgres:5432/assistant"


def app_environment(env: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    """Set what compose gives the beat container, interpolated with ``values``."""

    def interpolate(text: str) -> str:
        return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: values.get(m.group(1), ""), text)

    for name, value in environment_of(SHIPPED["services"]["scheduler"]).items():
        if value is not None:
            env.setenv(name, interpolate(value))
        elif name in values:
            env.setenv(name, values[name])
    get_settings.cache_clear()
