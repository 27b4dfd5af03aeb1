"""docker/docker-compose.prod.yml holds to the deployment's rules (tools/compose_check.py), and a
copy that breaks one is caught with a line naming it: a queue without a worker, a service
without a healthcheck or a restart policy, a container_name, a secret with a default, an
unpinned image, an env_file value overridden by the environment. (What the settings of the
containers are worth is tested in test_container_settings.py.)

``docker-compose config`` (Debian's docker-compose, installed by ``make system-deps``) is run on
the shipped file when it is installed; without it that test is skipped, saying so.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_check import (
    check_build_targets,
    check_compose,
    check_env_files,
    environment_of,
    main,
)

from personal_assistant.workers import constants as c

ROOT = Path(__file__).resolve().parents[3]

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.prod.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
WORKER_CONFIGS = DOCKER / "worker-configs"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE_TEXT = COMPOSE.read_text(encoding="utf-8")
SHIPPED: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
WORKER_SERVICES = {
    "ai_worker": c.AI_QUEUE,
    "email_worker": c.EMAIL_QUEUE,
    "file_worker": c.FILE_QUEUE,
    "sync_worker": c.SYNC_QUEUE,
    "maintenance_worker": c.MAINTENANCE_QUEUE,
}


def shipped() -> dict[str, Any]:
    """A private copy of the shipped compose file, to break."""
    return copy.deepcopy(SHIPPED)


def from_text(old: str, new: str) -> dict[str, Any]:
    """The compose file with ``old`` replaced by ``new`` (every occurrence) in its text."""
    assert old in COMPOSE_TEXT
    data: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT.replace(old, new))
    return data


# --- the shipped files ---------------------------------------------------------------------


def test_the_shipped_compose_file_worker_configs_and_build_target_pass_every_check() -> None:
    assert check_compose(SHIPPED) == []
    assert check_env_files(SHIPPED, DOCKER) == []
    assert check_build_targets(SHIPPED, DOCKERFILE.read_text(encoding="utf-8")) == []


def test_each_queue_has_its_seed_named_worker_service_running_the_plain_worker_command() -> None:
    services = SHIPPED["services"]

    for name, queue in WORKER_SERVICES.items():
        assert environment_of(services[name])["WORKER_QUEUE"] == queue
        assert services[name]["command"] == [
            "celery", "-A", "personal_assistant.workers.celery_app", "worker", "-l", "INFO",
        ]  # fmt: skip
        assert services[name]["env_file"] == f"worker-configs/{queue.removesuffix('_tasks')}.env"


def test_the_command_line_passes_the_shipped_files_and_names_each_problem_of_a_broken_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 0
    assert "ok" in capsys.readouterr().out

    broken = shipped()
    broken["services"]["email_worker"]["container_name"] = "pa_email"
    del broken["services"]["redis"]["healthcheck"]
    path = tmp_path / "docker-compose.prod.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")

    assert main(["--compose", str(path), "--dockerfile", str(DOCKERFILE)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "service email_worker: container_name is set; it stops `docker compose up --scale`" in (
        lines
    )
    assert "service redis: no healthcheck" in lines


# --- what each broken copy is told ----------------------------------------------------------


@pytest.mark.parametrize(("service", "queue"), sorted(WORKER_SERVICES.items()))
def test_a_queue_without_a_worker_service_is_named(service: str, queue: str) -> None:
    data = shipped()
    del data["services"][service]

    assert check_compose(data) == [f"queue {queue} has no worker service (no WORKER_QUEUE={queue})"]


def test_a_worker_narrowing_its_queues_with_q_is_named() -> None:
    data = shipped()
    # A new list: the workers share one command list through the file's YAML anchor.
    data["services"]["sync_worker"]["command"] = [
        *data["services"]["sync_worker"]["command"], "-Q", "sync_tasks",
    ]  # fmt: skip

    assert check_compose(data) == [
        "service sync_worker: its command sets -Q/--queues; a plain worker consumes "
        "WORKER_QUEUE, and a -Q beside it would win"
    ]


def test_a_worker_queue_that_is_not_a_queue_is_named() -> None:
    data = shipped()
    data["services"]["file_worker"]["environment"]["WORKER_QUEUE"] = "files"

    problems = check_compose(data)

    assert "service file_worker: WORKER_QUEUE names unknown queue(s) ['files']" in problems
    assert "queue file_tasks has no worker service (no WORKER_QUEUE=file_tasks)" in problems


@pytest.mark.parametrize("service", ["ai_worker", "scheduler", "redis", "postgres", "grafana"])
def test_a_service_without_a_healthcheck_is_named(service: str) -> None:
    data = shipped()
    del data["services"][service]["healthcheck"]

    assert check_compose(data) == [f"service {service}: no healthcheck"]


def test_a_disabled_healthcheck_counts_as_none() -> None:
    data = shipped()
    data["services"]["prometheus"]["healthcheck"] = {"disable": True}
    data["services"]["alertmanager"]["healthcheck"] = {"test": ["NONE"]}

    assert check_compose(data) == [
        "service prometheus: no healthcheck",
        "service alertmanager: no healthcheck",
    ]


def test_beat_checked_with_inspect_ping_is_named_as_checking_workers() -> None:
    data = shipped()
    data["services"]["scheduler"]["healthcheck"]["test"] = [
        "CMD", "celery", "-A", "personal_assistant.workers.celery_app", "inspect", "ping",
    ]  # fmt: skip

    assert check_compose(data) == [
        "service scheduler: healthcheck is `celery inspect ping`, which pings workers and says "
        "nothing of this service"
    ]


@pytest.mark.parametrize("service", ["email_worker", "scheduler", "redis", "flower"])
def test_a_service_without_a_restart_policy_is_named(service: str) -> None:
    data = shipped()
    del data["services"][service]["restart"]

    assert check_compose(data) == [
        f"service {service}: no restart policy (restart: unless-stopped)"
    ]


def test_a_swarm_restart_policy_counts_as_one() -> None:
    data = shipped()
    worker = data["services"]["email_worker"]
    del worker["restart"]
    worker["deploy"]["restart_policy"] = {"condition": "on-failure", "max_attempts": 3}

    assert check_compose(data) == []


def test_a_worker_without_resource_limits_or_reservations_is_named() -> None:
    data = shipped()
    del data["services"]["email_worker"]["deploy"]["resources"]["limits"]
    del data["services"]["ai_worker"]["deploy"]

    assert check_compose(data) == [
        "service ai_worker: no deploy.resources.limits",
        "service ai_worker: no deploy.resources.reservations",
        "service email_worker: no deploy.resources.limits",
    ]


def test_the_migration_job_is_exempt_only_while_workers_wait_for_it_to_complete() -> None:
    data = shipped()
    assert "healthcheck" not in data["services"]["db-migrate"]
    for name in WORKER_SERVICES:
        data["services"][name]["depends_on"]["db-migrate"] = {"condition": "service_started"}

    problems = check_compose(data)

    assert "service db-migrate: no healthcheck" in problems
    assert "service db-migrate: no restart policy (restart: unless-stopped)" in problems


def test_a_container_name_is_named_because_it_stops_scaling() -> None:
    data = shipped()
    data["services"]["ai_worker"]["container_name"] = "personal_assistant_ai_worker_prod"

    assert check_compose(data) == [
        "service ai_worker: container_name is set; it stops `docker compose up --scale`"
    ]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "${PROD_REDIS_PASSWORD:?set PROD_REDIS_PASSWORD in docker/.env}",
            "${PROD_REDIS_PASSWORD:-redis}",
            "secret PROD_REDIS_PASSWORD has a default (${PROD_REDIS_PASSWORD:-redis})",
        ),
        (
            "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in docker/.env}",
            "${GRAFANA_ADMIN_PASSWORD-admin}",
            "secret GRAFANA_ADMIN_PASSWORD has a default (${GRAFANA_ADMIN_PASSWORD-admin})",
        ),
        (
            "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD "
            "in docker/.env}",
            "GF_SECURITY_ADMIN_PASSWORD: admin",
            "service grafana: secret GF_SECURITY_ADMIN_PASSWORD has a literal value; take it "
            "from the environment (${GF_SECURITY_ADMIN_PASSWORD:?...}) or a Docker secret",
        ),
        ("  SMTP_PASSWORD:\n", "  SMTP_PASSWORD: hunter2\n", "secret SMTP_PASSWORD"),
        ("  AI_API_KEY:\n", "  AI_API_KEY: ${AI_API_KEY:-sk-test}\n", "secret AI_API_KEY"),
        (
            "postgresql://assistant:${PROD_POSTGRES_PASSWORD:?set PROD_POSTGRES_PASSWORD in "
            "docker/.env}@",
            "postgresql://assistant:hunter2@",
            "a URL holds a literal password (postgresql://assistant:hunter2@...)",
        ),
        (
            "redis://:${PROD_REDIS_PASSWORD:?set PROD_REDIS_PASSWORD in docker/.env}@redis",
            "redis://:${REDIS_PW:-x}@redis",
            "a URL's password has a default (${REDIS_PW:-x})",
        ),
    ],
    ids=[
        "interpolation-default",
        "interpolation-default-if-unset",
        "literal-secret",
        "literal-pass-through",
        "defaulted-api-key",
        "literal-url-password",
        "defaulted-url-password",
    ],
)
def test_a_secret_with_a_default_or_a_literal_value_is_named(
    old: str, new: str, problem: str
) -> None:
    problems = check_compose(from_text(old, new))

    assert problems
    assert all(problem in line for line in problems), problems


def test_non_secret_defaults_and_flags_are_not_taken_for_secrets() -> None:
    data = shipped()
    grafana = data["services"]["grafana"]["environment"]

    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "${LOG_LEVEL:-INFO}" in COMPOSE_TEXT
    assert check_compose(data) == []


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("redis:latest", "service redis: image redis:latest is not pinned (:latest)"),
        ("redis", "service redis: image redis is not pinned (no tag)"),
        (
            "localhost:5000/redis",
            "service redis: image localhost:5000/redis is not pinned (no tag)",
        ),
        (
            "redis:${REDIS_TAG:-7}",
            "service redis: image redis:${REDIS_TAG:-7} comes from a variable; pin it in the file",
        ),
    ],
)
def test_an_unpinned_image_is_named(image: str, problem: str) -> None:
    data = shipped()
    data["services"]["redis"]["image"] = image

    assert check_compose(data) == [problem]


def test_an_image_pinned_by_digest_passes() -> None:
    data = shipped()
    data["services"]["redis"]["image"] = "redis@sha256:" + "0" * 64

    assert check_compose(data) == []


def test_a_service_building_another_stage_than_the_checked_final_one_is_named() -> None:
    data = shipped()
    data["services"]["scheduler"]["build"] = {**data["services"]["scheduler"]["build"]}
    data["services"]["scheduler"]["build"]["target"] = "builder"

    assert check_build_targets(data, DOCKERFILE.read_text(encoding="utf-8")) == [
        "service scheduler: builds stage builder, not the final production"
    ]


# --- worker-configs ------------------------------------------------------------------------


def test_a_variable_in_both_a_worker_config_and_the_environment_is_named() -> None:
    data = shipped()
    data["services"]["ai_worker"]["environment"]["WORKER_CONCURRENCY"] = None

    assert check_env_files(data, DOCKER) == [
        "service ai_worker: WORKER_CONCURRENCY is in both worker-configs/ai.env and environment "
        "(the environment's entry overrides the file's value)"
    ]


def test_a_secret_in_a_worker_config_and_a_missing_one_are_named(tmp_path: Path) -> None:
    configs = tmp_path / "worker-configs"
    configs.mkdir()
    for path in WORKER_CONFIGS.glob("*.env"):
        (configs / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    with (configs / "email.env").open("a", encoding="utf-8") as file:
        file.write("DEPLOY_TOKEN=hunter2\n")
    (configs / "sync.env").unlink()

    assert check_env_files(SHIPPED, tmp_path) == [
        "worker-configs/email.env: secret DEPLOY_TOKEN in a committed env file",
        "service sync_worker: env_file worker-configs/sync.env does not exist",
    ]


# --- docker-compose's own validation -------------------------------------------------------


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "docker-compose is not installed (Debian's docker-compose package; "
            "`make system-deps` installs it, so CI runs this)"
        )
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_docker_compose_accepts_the_file_with_the_example_env_and_keeps_worker_configs() -> None:
    result = docker_compose("--env-file", str(ENV_EXAMPLE), "config")

    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    ai = resolved["ai_worker"]["environment"]
    assert ai["WORKER_QUEUE"] == "ai_tasks"
    assert ai["WORKER_CONCURRENCY"] == "1"  # from worker-configs/ai.env, not overridden
    assert "container_name" not in resolved["email_worker"]


def test_docker_compose_refuses_to_start_without_the_redis_password(tmp_path: Path) -> None:
    env = tmp_path / "no-redis-password.env"
    kept = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    env.write_text(
        "\n".join(line for line in kept if not line.startswith("PROD_REDIS_PASSWORD=")) + "\n",
        encoding="utf-8",
    )

    result = docker_compose("--env-file", str(env), "config", "-q")

    assert result.returncode != 0
    assert "set PROD_REDIS_PASSWORD in docker/.env" in result.stderr
