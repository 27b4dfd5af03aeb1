"""The compose file read for ``make stack`` (tools/local_stack.py): services, their environment
with the compose file's own interpolation, and Prometheus's config adapted only in its targets.

No process is started here: local_stack.py runs what this module describes.
"""

from __future__ import annotations

import copy
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from compose_check import read_env_file as parse_env_text

from personal_assistant.workers.config.production import PLACEHOLDER_SECRETS

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BEAT_SERVICE = "scheduler"
MIGRATE_SERVICE = "db-migrate"
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """``value`` with compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?message}`` and ``$$`` replaced; a required variable unset raises ValueError."""

    def one(found: re.Match[str]) -> str:
        if found[0] == "$$":
            return "$"
        name = found[1] or found[4]
        operator, argument = found[2] or "", found[3] or ""
        present = name in variables and (variables[name] != "" or ":" not in operator)
        if present:
            return variables[name]
        if operator.endswith("?"):
            raise ValueError(f"{name}: {argument or 'required'}")
        return argument if operator.endswith("-") else ""

    return _VARIABLE.sub(one, value)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file, read as compose_check reads them."""
    return parse_env_text(path.read_text())


def load_compose(path: Path) -> dict[str, Any]:
    """The compose file, its anchors and merge keys resolved (PyYAML does both)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a compose file")
    return data


def worker_services(compose: Mapping[str, Any]) -> list[str]:
    """The worker services: those whose environment sets WORKER_QUEUE, in file order."""
    services: Mapping[str, Any] = compose["services"]
    return [
        name
        for name, service in services.items()
        if "WORKER_QUEUE" in (service.get("environment") or {})
    ]


def localize_url(name: str, url: str, redis_port: int, database_url: str) -> str | None:
    """A container URL as this machine reaches it (None: its server does not run here)."""
    parts = urlsplit(url)
    if parts.hostname == "redis":
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{redis_port}"))
    if parts.hostname == "postgres":
        return database_url
    if parts.hostname == "alertmanager":
        return None
    return url


def service_environment(
    service: Mapping[str, Any],
    variables: Mapping[str, str],
    *,
    compose_dir: Path,
    redis_port: int,
    database_url: str,
    data_dir: Path,
) -> dict[str, str]:
    """The environment compose gives ``service``, localized: env_file, then environment (an
    entry without a value passes the variable through when set), hostnames replaced."""
    env: dict[str, str] = {}
    env_files = service.get("env_file") or []
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        env.update(read_env_file(compose_dir / env_file))
    for name, value in (service.get("environment") or {}).items():
        if value is None:
            if name in variables:
                env[name] = variables[name]
        else:
            env[name] = interpolate(str(value), variables)
    for name, value in list(env.items()):
        if "://" in value:
            local = localize_url(name, value, redis_port, database_url)
            if local is None:
                del env[name]
            else:
                env[name] = local
    if "DATA_DIR" in env:
        env["DATA_DIR"] = str(data_dir)
    if "METRICS_HOST" in env:
        env["METRICS_HOST"] = "127.0.0.1"  # 0.0.0.0 in a container is its private network
    return env


def local_command(command: Sequence[str], app: str | None) -> list[str]:
    """The service's command with this interpreter's celery (and ``app`` after ``-A``)."""
    args = list(command)
    if args and args[0] == "celery":
        args[:1] = [sys.executable, "-m", "celery"]
    if app is not None and "-A" in args:
        args[args.index("-A") + 1] = app
    return args


def _replace_targets(
    static_configs: list[dict[str, Any]], job: str, targets: Mapping[str, Sequence[str]], own: str
) -> None:
    for static in static_configs:
        local: list[str] = []
        for target in static.get("targets") or []:
            host = str(target).rsplit(":", 1)[0]
            if job == "prometheus" and host == "localhost":
                local.append(own)  # Prometheus scraping itself: this one's address
            else:
                local.extend(targets.get(host, []))  # a service not run here: no target
        static["targets"] = local


def adapt_prometheus_config(
    config: Mapping[str, Any],
    targets: Mapping[str, Sequence[str]],
    *,
    prometheus_address: str,
    rules_dir: Path,
    rule_files: Sequence[Path] | None = None,
    interval: str | None = None,
) -> dict[str, Any]:
    """The shipped prometheus.yml with local targets: ``targets`` maps a compose service to its
    replicas' ``host:port``. Only targets change (and rule_files' paths, and with ``interval``
    the global scrape/evaluation intervals); job names, relabelling and labels stay."""
    adapted: dict[str, Any] = copy.deepcopy(dict(config))
    for job in adapted.get("scrape_configs") or []:
        _replace_targets(
            job.get("static_configs") or [], job["job_name"], targets, prometheus_address
        )
        for sd in job.pop("dns_sd_configs", None) or []:
            names = [t for name in sd.get("names") or [] for t in targets.get(name, [])]
            job.setdefault("static_configs", []).append({"targets": names})
    for manager in (adapted.get("alerting") or {}).get("alertmanagers") or []:
        _replace_targets(manager.get("static_configs") or [], "alerting", targets, "")
    if rule_files is not None:
        adapted["rule_files"] = [str(path.resolve()) for path in rule_files]
    else:
        adapted["rule_files"] = [
            str((rules_dir / path).resolve()) for path in adapted.get("rule_files") or []
        ]
    if interval is not None:
        settings = adapted.setdefault("global", {})
        settings["scrape_interval"] = interval
        settings["evaluation_interval"] = interval
        settings["scrape_timeout"] = interval  # must not exceed the interval
    return adapted


def stack_variables(env_file: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """Compose's variables: ``env_file`` (docker/.env, else docker/.env.example) under the real
    environment; a placeholder password (CHANGE_ME) becomes a random one for this stack."""
    if env_file is None:
        env_file = DOCKER / ".env" if (DOCKER / ".env").exists() else DOCKER / ".env.example"
    variables = read_env_file(env_file)
    variables.update(environ)
    for name, value in list(variables.items()):
        if name.endswith("PASSWORD") and value.strip().lower() in PLACEHOLDER_SECRETS:
            variables[name] = secrets.token_hex(16)  # production refuses placeholders
    return variables
