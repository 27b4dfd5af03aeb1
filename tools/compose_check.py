"""Hold docker/docker-compose.prod.yml and docker/Dockerfile to the deployment's rules.

``docker-compose config`` says whether the compose file is valid; this says whether it is right:

- every queue of ``personal_assistant.workers.constants.QUEUES`` has a worker service whose
  environment sets WORKER_QUEUE to it, and no worker narrows its queues with -Q/--queues (a
  plain worker consumes WORKER_QUEUE; a -Q beside it would win);
- every service has a healthcheck, a restart policy and resource limits and reservations,
  except a one-shot job (``restart: "no"``, which another service waits for with
  ``condition: service_completed_successfully``, such as db-migrate): it exits by design;
- no healthcheck is ``celery inspect ping`` (it pings workers: it says nothing of beat);
- no ``container_name`` (it stops ``docker compose up --scale``);
- no secret has a default: an interpolation of a secret-like variable (a name containing
  PASSWORD, SECRET, TOKEN, CREDENTIAL or WEBHOOK_URL, or ending in KEY or AUTH) with
  ``:-``/``-``, a secret-like environment variable with a literal value, or a URL with a
  literal password or a defaulted one (``redis://:${P:-x}@...``);
- no variable set by a service's env_file is also in its ``environment`` (listed there without
  a value, it would override the file's value with nothing), and no env_file holds a secret;
- every image is pinned (a tag other than ``latest``, or a digest); services built from the
  Dockerfile build its final stage;
- the Dockerfile's final stage runs as a non-root USER, has a HEALTHCHECK, installs no compiler
  and keeps no pip cache, and every base image is pinned.

Usage: ``python tools/compose_check.py [--compose FILE] [--dockerfile FILE]``; exit 0 with one
summary line when all holds, exit 1 with one line per problem otherwise. The checks are
functions of the parsed files (:func:`check_compose`, :func:`check_dockerfile`, ...), so tests
feed them mutated copies.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from personal_assistant.workers.constants import QUEUES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.prod.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

# A name that holds a secret: GF_SECURITY_ADMIN_PASSWORD, AI_API_KEY, FLOWER_BASIC_AUTH,
# ALERT_SLACK_WEBHOOK_URL (its path is the credential); not GF_AUTH_ANONYMOUS_ENABLED.
SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|WEBHOOK_URL|(^|_)KEY$|(^|_)AUTH$", re.I
)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}.
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
# scheme://user:password@ (the password group may be an interpolation).
URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:(\$\{[^}]*\}|[^@\s/]+)@")
DEFAULT_OPERATORS = {"-", ":-"}
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}
ROOT_USERS = {"root", "0"}
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cc|make)\b")


# --- compose ---------------------------------------------------------------------------------


def environment_of(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's ``environment`` as a mapping, whichever form it is written in (a mapping,
    or a list of ``NAME=value`` / ``NAME``); None for a name listed without a value."""
    raw = service.get("environment") or {}
    if isinstance(raw, Mapping):
        return {str(k): None if v is None else str(v) for k, v in raw.items()}
    env: dict[str, str | None] = {}
    for item in raw:
        name, sep, value = str(item).partition("=")
        env[name] = value if sep else None
    return env


def _strings(node: Any) -> Iterator[str]:
    """Every string of a parsed YAML tree, mapping keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _unescaped(text: str) -> str:
    # $$ is compose's literal dollar (a variable of the container's shell), never interpolated.
    return text.replace("$$", "")


def _one_shot_services(services: Mapping[str, Any]) -> set[str]:
    """Services another one waits to complete, that do not restart: jobs that exit by design."""
    awaited: set[str] = set()
    for service in services.values():
        depends = service.get("depends_on") or {}
        if isinstance(depends, Mapping):
            for name, spec in depends.items():
                completed = "service_completed_successfully"
                if isinstance(spec, Mapping) and spec.get("condition") == completed:
                    awaited.add(str(name))
    return {name for name in awaited if str(services.get(name, {}).get("restart")) == "no"}


def _check_queues(services: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    consumed: set[str] = set()
    for name, service in services.items():
        queue = environment_of(service).get("WORKER_QUEUE")
        if queue is None:
            continue
        queues = [q.strip() for q in queue.split(",") if q.strip()]
        unknown = [q for q in queues if q not in QUEUES]
        if unknown:
            problems.append(f"service {name}: WORKER_QUEUE names unknown queue(s) {unknown}")
        consumed.update(queues)
        command = service.get("command") or []
        words = command.split() if isinstance(command, str) else [str(w) for w in command]
        if any(w in {"-Q", "--queues"} or w.startswith(("-Q", "--queues=")) for w in words):
            problems.append(
                f"service {name}: its command sets -Q/--queues; a plain worker consumes "
                "WORKER_QUEUE, and a -Q beside it would win"
            )
    for queue in QUEUES:
        if queue not in consumed:
            problems.append(f"queue {queue} has no worker service (no WORKER_QUEUE={queue})")
    return problems


def _check_service(name: str, service: Mapping[str, Any], one_shot: bool) -> list[str]:
    problems: list[str] = []
    if "container_name" in service:
        problems.append(
            f"service {name}: container_name is set; it stops `docker compose up --scale`"
        )
    health = service.get("healthcheck")
    test = health.get("test") if isinstance(health, Mapping) else None
    words = test.split() if isinstance(test, str) else [str(w) for w in test or []]
    if "inspect" in words and "ping" in words:
        problems.append(
            f"service {name}: healthcheck is `celery inspect ping`, which pings workers and "
            "says nothing of this service"
        )
    if one_shot:
        return problems
    disabled = isinstance(health, Mapping) and (health.get("disable") or words[:1] == ["NONE"])
    if not words or disabled:
        problems.append(f"service {name}: no healthcheck")
    policy = (service.get("deploy") or {}).get("restart_policy") or {}
    restart = str(service.get("restart", "")).strip()
    if restart not in RESTART_POLICIES and policy.get("condition") not in {"any", "on-failure"}:
        problems.append(f"service {name}: no restart policy (restart: unless-stopped)")
    resources = (service.get("deploy") or {}).get("resources") or {}
    for part in ("limits", "reservations"):
        if not resources.get(part):
            problems.append(f"service {name}: no deploy.resources.{part}")
    return problems


def _check_secrets(data: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for raw in _strings(data):
        text = _unescaped(raw)
        for match in INTERPOLATION.finditer(text):
            variable, operator = match.group(1), match.group(2)
            if SECRET_NAME.search(variable) and operator in DEFAULT_OPERATORS:
                problems.append(f"secret {variable} has a default ({match.group(0)})")
        for match in URL_PASSWORD.finditer(text):
            password = match.group(1)
            found = INTERPOLATION.fullmatch(password)
            if found is None:
                problems.append(f"a URL holds a literal password ({match.group(0)}...)")
            elif found.group(2) in DEFAULT_OPERATORS and not SECRET_NAME.search(found.group(1)):
                problems.append(f"a URL's password has a default ({password})")
    for name, service in (data.get("services") or {}).items():
        for variable, value in environment_of(service).items():
            if value is None or not SECRET_NAME.search(variable):
                continue
            if not INTERPOLATION.search(_unescaped(value)):
                problems.append(
                    f"service {name}: secret {variable} has a literal value; take it from "
                    f"the environment (${{{variable}:?...}}) or a Docker secret"
                )
    return problems


def _check_image(owner: str, image: str) -> list[str]:
    """``owner`` (``service x``, ``stage y``) uses ``image``: is it pinned?"""
    if "$" in image:
        return [f"{owner}: image {image} comes from a variable; pin it in the file"]
    if "@sha256:" in image:
        return []
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return [f"{owner}: image {image} is not pinned (no tag)"]
    if tag == "latest":
        return [f"{owner}: image {image} is not pinned (:latest)"]
    return []


def check_compose(data: Mapping[str, Any]) -> list[str]:
    """Problems of a parsed compose file (see the module doc), one line each."""
    services = data.get("services")
    if not isinstance(services, Mapping) or not services:
        return ["the compose file has no services"]
    problems = _check_queues(services)
    one_shot = _one_shot_services(services)
    for name, service in services.items():
        problems += _check_service(str(name), service, str(name) in one_shot)
        image = service.get("image")
        if image is not None:
            problems += _check_image(f"service {name}", str(image))
        elif "build" not in service:
            problems.append(f"service {name}: neither image nor build")
    # A value shared through a YAML anchor is met once per service: say each problem once.
    return list(dict.fromkeys(problems + _check_secrets(data)))


def read_env_file(text: str) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def check_env_files(data: Mapping[str, Any], base: Path) -> list[str]:
    """Problems of the services' env files (paths relative to ``base``, the compose file's
    directory): missing, holding a secret, or overridden by the service's environment."""
    problems: list[str] = []
    for name, service in (data.get("services") or {}).items():
        files = service.get("env_file") or []
        environment = environment_of(service)
        for file in [files] if isinstance(files, str) else files:
            path = base / str(file)
            if not path.is_file():
                problems.append(f"service {name}: env_file {file} does not exist")
                continue
            for variable, value in read_env_file(path.read_text(encoding="utf-8")).items():
                if value and SECRET_NAME.search(variable):
                    problems.append(f"{file}: secret {variable} in a committed env file")
                if variable in environment:
                    problems.append(
                        f"service {name}: {variable} is in both {file} and environment "
                        "(the environment's entry overrides the file's value)"
                    )
    return problems


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    if pending:
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _substitute(text: str, args: Mapping[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text
    )


def dockerfile_stages(text: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(base image, stage name, instructions) per stage; ARGs declared before the first FROM
    are substituted into the FROM lines with their defaults."""
    args: dict[str, str] = {}
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = _substitute(words[0], args) if words else ""
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append((image, alias.lower(), []))
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                args[name.strip()] = default.strip().strip("\"'")
        else:
            stages[-1][2].append((keyword, rest))
    return stages


def check_dockerfile(text: str) -> list[str]:
    """Problems of a Dockerfile (see the module doc), one line each."""
    stages = dockerfile_stages(text)
    if not stages:
        return ["the Dockerfile has no FROM"]
    problems: list[str] = []
    names: set[str] = set()
    for image, alias, _ in stages:
        if image.lower() not in names and image != "scratch":
            problems += _check_image(f"stage {alias or len(names)}", image)
        if alias:
            names.add(alias)
    final = stages[-1][2]
    users = [rest.split(":")[0].strip() for keyword, rest in final if keyword == "USER"]
    if not users:
        problems.append("the final stage sets no USER: it runs as root")
    elif users[-1].lower() in ROOT_USERS:
        problems.append(f"the final stage runs as root (USER {users[-1]})")
    health = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    if not health or health[-1].upper().startswith("NONE"):
        problems.append("the final stage has no HEALTHCHECK")
    no_cache = any(k == "ENV" and "PIP_NO_CACHE_DIR" in rest for k, rest in final)
    for keyword, rest in final:
        if keyword != "RUN":
            continue
        if re.search(r"apt-get install|apk add|yum install|dnf install", rest):
            found = COMPILERS.search(rest)
            if found:
                problems.append(f"the final stage installs a compiler ({found.group(0)})")
        if "pip install" in rest and "--no-cache-dir" not in rest and not no_cache:
            problems.append("the final stage's pip install keeps pip's cache (--no-cache-dir)")
    return problems


def check_build_targets(data: Mapping[str, Any], dockerfile_text: str) -> list[str]:
    """Services built from the Dockerfile build its final stage (the one checked above)."""
    stages = dockerfile_stages(dockerfile_text)
    final = stages[-1][1] if stages else ""
    problems: list[str] = []
    for name, service in (data.get("services") or {}).items():
        build = service.get("build")
        target = build.get("target") if isinstance(build, Mapping) else None
        if build is not None and target not in {None, final}:
            problems.append(f"service {name}: builds stage {target}, not the final {final}")
    return problems


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Check the files; print one line per problem (exit 1), or a summary (exit 0)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compose", type=Path, default=COMPOSE_FILE)
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    args = parser.parse_args(argv)
    data = yaml.safe_load(args.compose.read_text(encoding="utf-8")) or {}
    dockerfile = args.dockerfile.read_text(encoding="utf-8")
    problems = (
        check_compose(data)
        + check_env_files(data, args.compose.parent)
        + check_dockerfile(dockerfile)
        + check_build_targets(data, dockerfile)
    )
    for problem in problems:
        print(problem)
    if problems:
        return 1
    services = data["services"]
    print(
        f"compose-check: {args.compose.name} ({len(services)} services, "
        f"{len(QUEUES)} queues) and {args.dockerfile.name}: ok"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
